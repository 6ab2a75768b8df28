"""shortcut_torch.convert_dit on a random facebookresearch/DiT-layout state_dict (learned sigma, 1001-row
label table) written by this test: the converted model at d-embedding zero equals a reference DiT
forward (written here, after facebookresearch/DiT models.py) on the first C channels, in PyTorch and,
through torch_interop_tool, in C++; damaged and foreign .pt files give clear errors.
  convert_test.py TOOL WORK [TRAIN_IMAGES]   (with train_images: fine-tuning starts from the converted folder)"""
import math
import os
import sys

import torch
import torch.nn.functional as F

from common import check, close, finish, nhwc, raises, run, st

D, DEPTH, HEADS, C, P, G, CLASSES = 384, 2, 6, 4, 2, 4, 1000  # DiT-S width (heads inferred), 8x8x4 latents


def sincos(dim, grid):  # facebookresearch/DiT get_2d_sincos_pos_embed, in float64
    def one(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], 1)
    gh, gw = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    return torch.cat([one(dim // 2, gw), one(dim // 2, gh)], 1).float()[None]


def random_dit_state_dict(seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    sd = {"pos_embed": sincos(D, G), "x_embedder.proj.weight": r(D, C, P, P), "x_embedder.proj.bias": r(D),
          "t_embedder.mlp.0.weight": r(D, 256), "t_embedder.mlp.0.bias": r(D),
          "t_embedder.mlp.2.weight": r(D, D), "t_embedder.mlp.2.bias": r(D),
          "y_embedder.embedding_table.weight": r(CLASSES + 1, D)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd.update({b + "attn.qkv.weight": r(3 * D, D), b + "attn.qkv.bias": r(3 * D), b + "attn.proj.weight": r(D, D),
                   b + "attn.proj.bias": r(D), b + "mlp.fc1.weight": r(4 * D, D), b + "mlp.fc1.bias": r(4 * D),
                   b + "mlp.fc2.weight": r(D, 4 * D), b + "mlp.fc2.bias": r(D),
                   b + "adaLN_modulation.1.weight": r(6 * D, D), b + "adaLN_modulation.1.bias": r(6 * D)})
    sd.update({"final_layer.adaLN_modulation.1.weight": r(2 * D, D), "final_layer.adaLN_modulation.1.bias": r(2 * D),
               "final_layer.linear.weight": r(P * P * 2 * C, D), "final_layer.linear.bias": r(P * P * 2 * C)})
    return sd


def reference_dit(sd, x, t, y):
    """facebookresearch/DiT's forward (learn_sigma=True): x [N, C, H, W], t diffusion steps, y labels
    -> [N, 2C, H, W]."""
    lin = lambda h, n: F.linear(h, sd[n + ".weight"], sd[n + ".bias"])  # noqa: E731
    ln = lambda h: F.layer_norm(h, (D,), eps=1e-6)  # noqa: E731
    h = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=P)
    h = h.flatten(2).transpose(1, 2) + sd["pos_embed"]
    freqs = torch.exp(-math.log(10000) * torch.arange(0, 128, dtype=torch.float32) / 128)
    args = t[:, None].float() * freqs[None]
    temb = lin(F.silu(lin(torch.cat([torch.cos(args), torch.sin(args)], -1), "t_embedder.mlp.0")), "t_embedder.mlp.2")
    c = temb + sd["y_embedder.embedding_table.weight"][y]
    N, T = h.shape[:2]
    for i in range(DEPTH):
        b = f"blocks.{i}."
        s1, c1, g1, s2, c2, g2 = lin(F.silu(c), b + "adaLN_modulation.1").chunk(6, dim=1)
        a = ln(h) * (1 + c1.unsqueeze(1)) + s1.unsqueeze(1)
        qkv = lin(a, b + "attn.qkv").reshape(N, T, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = ((q * (D // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        h = h + g1.unsqueeze(1) * lin((att @ v).transpose(1, 2).reshape(N, T, D), b + "attn.proj")
        m = ln(h) * (1 + c2.unsqueeze(1)) + s2.unsqueeze(1)
        h = h + g2.unsqueeze(1) * lin(F.gelu(lin(m, b + "mlp.fc1"), approximate="tanh"), b + "mlp.fc2")
    sh, sc = lin(F.silu(c), "final_layer.adaLN_modulation.1").chunk(2, dim=1)
    h = lin(ln(h) * (1 + sc.unsqueeze(1)) + sh.unsqueeze(1), "final_layer.linear")
    h = h.reshape(N, G, G, P, P, 2 * C)
    return torch.einsum("nhwpqc->nchpwq", h).reshape(N, 2 * C, G * P, G * P)


def main(tool, work, train=None):
    os.makedirs(work, exist_ok=True)
    sd = random_dit_state_dict(0)
    pt = os.path.join(work, "dit.pt")
    torch.save(sd, pt)
    out = os.path.join(work, "converted")
    model, cfg = st.convert_dit(pt, out)
    check(cfg["heads"] == HEADS and cfg["classes"] == CLASSES and cfg["image"] == G * P and cfg["channels"] == C
          and cfg["attn_scale"] == "1/sqrt(head_dim)", f"config inferred: {cfg}")
    loaded = st.load(out)  # the written folder loads strictly
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, C, G * P, G * P, generator=g)
    t = torch.tensor([0.0, 17.0, 500.0, 999.0])  # the original's time scale
    y = torch.tensor([0, 7, 999, CLASSES])  # the last: the null label (row 1000)
    with torch.no_grad():
        ref = reference_dit(sd, x, t, y)
        for k in (0.0, 3.0, 7.0):  # any step index: the d-embedding is zero
            close(loaded(x, t, torch.full((4,), k), y), ref[:, :C], f"converted (PyTorch) at k={k:g} = reference DiT, "
                  f"first {C} of {2 * C} channels")
    st.write_safetensors(os.path.join(work, "in.safetensors"), {"x": nhwc(x), "t": t, "k": torch.full((4,), 5.0),
                                                                 "y": y.float()})
    run([tool, "forward", out, os.path.join(work, "in.safetensors"), os.path.join(work, "out.safetensors")],
        what="C++ loads the converted folder")
    if os.path.exists(os.path.join(work, "out.safetensors")):
        o, _ = st.read_safetensors(os.path.join(work, "out.safetensors"))
        close(o["out_ema"], nhwc(ref[:, :C]), "converted (C++) = reference DiT, first C channels")
    if train:  # fine-tuning from the converted weights on 8x8x4 "latents" with labels among 1000 classes
        import numpy as np
        np.save(os.path.join(work, "lat.npy"), torch.randn(32, 8, 8, 4, generator=g).numpy())
        np.save(os.path.join(work, "lab.npy"), (np.arange(32) * 31 % 1000).astype(np.int64))
        run([train, "--data-file", os.path.join(work, "lat.npy"), "--labels-file", os.path.join(work, "lab.npy"),
             "--init", out, "--steps", "1", "--batch", "28", "--sample-every", "0", "--checkpoint-every", "0", "-q",
             "-o", os.path.join(work, "tuned")], words=("initial weights", "its network", "1000 classes"),
            what="train_images --init on the converted folder (latents 8x8x4, 1000 classes)")
        tuned = st.load(os.path.join(work, "tuned", "checkpoints", "last"), "model")
        check(tuned.config == cfg, "the fine-tuned checkpoint keeps the converted DiT's config")
    # a train.py checkpoint {"model", "ema", "opt"} and a DataParallel prefix
    torch.save({"model": {"module." + k: v for k, v in random_dit_state_dict(5).items()}, "ema": sd, "opt": {}},
               os.path.join(work, "train_ckpt.pt"))
    m2, _ = st.convert_dit(os.path.join(work, "train_ckpt.pt"), os.path.join(work, "c2.safetensors"))
    close(m2.state_dict()["blocks.1.mlp.fc2.weight"], sd["blocks.1.mlp.fc2.weight"], "train.py checkpoint: 'ema' taken")

    # damaged and foreign files
    raw = open(pt, "rb").read()
    bad = {"truncated.pt": raw[: len(raw) // 2], "empty.pt": b"", "garbage.pt": bytes(range(256)) * 8}
    for name, data in bad.items():
        with open(os.path.join(work, name), "wb") as f:
            f.write(data)
        raises(lambda n=name: st.convert_dit(os.path.join(work, n), os.path.join(work, "x")), st.ConversionError,
               ["not a readable PyTorch checkpoint", name], f"damaged .pt ({name})")
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, os.path.join(work, "resnet.pt"))
    raises(lambda: st.convert_dit(os.path.join(work, "resnet.pt"), os.path.join(work, "x")), st.ConversionError,
           ["not a facebookresearch/DiT state_dict", "x_embedder.proj.weight"], "foreign state_dict")
    torch.save([1, 2, 3], os.path.join(work, "list.pt"))
    raises(lambda: st.convert_dit(os.path.join(work, "list.pt"), os.path.join(work, "x")), st.ConversionError,
           ["holds a list"], "a .pt holding a list")
    odd = dict(sd, **{"final_layer.linear.weight": torch.zeros(5, D)})
    torch.save(odd, os.path.join(work, "odd.pt"))
    raises(lambda: st.convert_dit(os.path.join(work, "odd.pt"), os.path.join(work, "x")), st.ConversionError,
           ["final_layer.linear has 5 outputs"], "final layer of a foreign size")
    extra = dict(sd, **{"extra.weight": torch.zeros(3)})
    torch.save(extra, os.path.join(work, "extra.pt"))
    raises(lambda: st.convert_dit(os.path.join(work, "extra.pt"), os.path.join(work, "x")), st.ConversionError,
           ["unexpected", "extra.weight"], "a tensor a DiT does not have")
    raises(lambda: st.convert_dit(os.path.join(work, "nope.pt"), os.path.join(work, "x")), st.ConversionError,
           ["no such file"], "missing file")
    run([sys.executable, "-m", "shortcut_torch", "convert-dit", os.path.join(work, "truncated.pt"), os.path.join(work, "x")],
        expect_rc=1, words=("error:", "not a readable PyTorch checkpoint"), what="the command line reports a damaged file")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    finish()
