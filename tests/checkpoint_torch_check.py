"""DESIGN.md section 5 from the PyTorch side: the weights files that checkpoint_io exported (a tiny DiT
checkpoint folder plus one batch of forward inputs and our outputs) load into the PyTorch DiT of
python/shortcut_torch with load_state_dict(strict=True), and that DiT reproduces our forward pass.
Usage: PYTHONPATH=<repo>/python checkpoint_torch_check.py EXPORT_DIR"""
import json
import os
import sys

import torch

import shortcut_torch as st


def main():
    export_dir = sys.argv[1]
    failures = 0
    ema, meta = st.read_safetensors(os.path.join(export_dir, "ck", "ema.safetensors"))
    model = st.DiT(json.loads(meta["config"]))
    for f in ("ema.safetensors", "model.safetensors"):
        sd, _ = st.read_safetensors(os.path.join(export_dir, "ck", f))
        try:
            model.load_state_dict(sd, strict=True)
            print(f"{f}: load_state_dict(strict=True) ok")
        except RuntimeError as e:
            print(f"{f}: load_state_dict(strict=True) FAILED: {e}")
            failures += 1
    opt, _ = st.read_safetensors(os.path.join(export_dir, "ck", "optimizer.safetensors"))
    params = {k for k, p in model.named_parameters() if p.requires_grad}
    for prefix in ("exp_avg.", "exp_avg_sq."):
        names = {k[len(prefix):] for k in opt if k.startswith(prefix)}
        if names != params:
            print(f"optimizer {prefix}* names differ from the trainable parameters: {sorted(names ^ params)[:5]}")
            failures += 1

    pos = (st.sincos_pos_embed(model.config["image"] // model.config["patch"], model.config["hidden"])
           - ema["pos_embed"]).abs().max().item()
    print(f"pos_embed: max difference to PyTorch's sincos_2d {pos:.3g}")
    failures += pos > 1e-5

    model.load_state_dict(ema, strict=True)
    io, _ = st.read_safetensors(os.path.join(export_dir, "forward.safetensors"))
    with torch.no_grad():
        out = model(io["x"].permute(0, 3, 1, 2), io["t"], io["k"], io["y"].long()).permute(0, 2, 3, 1)
    err = (out - io["out"]).abs().max().item()
    scale = io["out"].abs().max().item()
    print(f"forward: max |torch - ours| = {err:.3g} (outputs up to {scale:.3g})")
    failures += not err <= 1e-4 * max(1.0, scale)
    print("all checks passed" if failures == 0 else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
