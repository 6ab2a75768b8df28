"""python -m shortcut_torch convert-dit DiT-XL-2-256x256.pt out_dir [--heads H] [--image N]"""
import argparse
import sys

from .convert import ConversionError, convert_dit


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m shortcut_torch")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert-dit", help="facebookresearch/DiT .pt -> shortcut weights (folder or .safetensors)")
    c.add_argument("pt_file")
    c.add_argument("out")
    c.add_argument("--heads", type=int, help="attention heads (inferred for DiT-S/B/L/XL)")
    c.add_argument("--image", type=int, help="image (latent) size (inferred from pos_embed)")
    c.add_argument("--weights", default="ema", choices=["ema", "model"], help="which set of a train.py checkpoint")
    c.add_argument("--trusted", action="store_true", help="unpickle any object (only for files you trust)")
    a = ap.parse_args(argv)
    try:
        _, cfg = convert_dit(a.pt_file, a.out, heads=a.heads, image=a.image, weights=a.weights, trusted=a.trusted)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {a.out}: {cfg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
