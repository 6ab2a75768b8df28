"""DESIGN.md section 5 from the PyTorch side: the weights files that checkpoint_io exported (a tiny DiT
checkpoint folder plus one batch of forward inputs and our outputs) load into the PyTorch DiT of
torch_shortcut.py with load_state_dict(strict=True), and that DiT reproduces our forward pass.
Usage: checkpoint_torch_check.py EXPORT_DIR PATH/TO/torch_shortcut.py"""
import json, os, struct, sys

import torch
import torch.nn.functional as F


def load_safetensors(path):
    # a few lines instead of the safetensors package, which is not always installed beside torch
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = b[8 + n:]
    dtypes = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16}
    out = {}
    for name, t in header.items():
        s, e = t["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[s:e]), dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return out, meta


def main():
    export_dir, peer = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.dirname(os.path.abspath(peer)))
    if not hasattr(F, "scaled_dot_product_attention"):  # torch < 2.0 (Debian's python3-torch)
        F.scaled_dot_product_attention = lambda q, k, v, scale: torch.softmax(q @ k.transpose(-1, -2) * scale, -1) @ v
    import torch_shortcut as ts

    failures = 0
    ema, meta = load_safetensors(os.path.join(export_dir, "ck", "ema.safetensors"))
    cfg = json.loads(meta["config"])
    model = ts.DiT(cfg["image"], cfg["channels"], cfg["patch"], cfg["hidden"], cfg["depth"], cfg["heads"],
                   cfg["mlp_ratio"], cfg["classes"])
    for f in ("ema.safetensors", "model.safetensors"):
        sd, _ = load_safetensors(os.path.join(export_dir, "ck", f))
        try:
            model.load_state_dict(sd, strict=True)
            print(f"{f}: load_state_dict(strict=True) ok")
        except RuntimeError as e:
            print(f"{f}: load_state_dict(strict=True) FAILED: {e}")
            failures += 1
    model.load_state_dict(ema, strict=False)
    opt, _ = load_safetensors(os.path.join(export_dir, "ck", "optimizer.safetensors"))
    params = {k for k, p in model.named_parameters() if p.requires_grad}
    for prefix in ("exp_avg.", "exp_avg_sq."):
        names = {k[len(prefix):] for k in opt if k.startswith(prefix)}
        if names != params:
            print(f"optimizer {prefix}* names differ from the trainable parameters: {sorted(names ^ params)[:5]}")
            failures += 1

    pos = (model.pos_embed - ema["pos_embed"]).abs().max().item()
    print(f"pos_embed: max difference to PyTorch's sincos_2d {pos:.3g}")
    failures += pos > 1e-5

    io, _ = load_safetensors(os.path.join(export_dir, "forward.safetensors"))
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
