"""PyTorch <-> C++ checkpoints.
  interop_test.py cpp-to-torch TOOL WORK   C++ training writes checkpoints (two DiTs, two MLP networks);
                                           shortcut_torch.load (strict, both weight sets) reproduces our
                                           forward and our N-step samples; bad configs are CheckpointErrors
  interop_test.py torch-to-cpp TOOL SAMPLE_IMAGES WORK
                                           shortcut_torch.save writes a folder; C++ reproduces PyTorch's
                                           forward, sample_images its samples from the same noise"""
import json
import os
import sys

import numpy as np
import torch

from common import check, close, finish, nchw, nhwc, raises, randomize, run, st


def cpp_to_torch(tool, work):
    run([tool, "export", work], what="C++ export: training, checkpoints, forward and samples")
    for name in ("a", "b", "mlp", "mlp_fourier", "mlp_meanflow"):
        ck = os.path.join(work, name, "checkpoints", "last")
        io, _ = st.read_safetensors(os.path.join(work, name, "io.safetensors"))
        ema, raw = st.load(ck, "ema"), st.load(ck, "model")  # strict loading
        check(ema.training_config is not None and ema.step == 3, f"{name}: config, training metadata and step read")
        if name == "mlp_meanflow":  # a network that reads d itself: N-step samples below feed d = 1/N
            check(ema.training_config["shortcut"].get("step_input") == "d" and ema.config["step_scale"] == 5.0,
                  f"{name}: step_input d and step_scale read")
        mlp = name.startswith("mlp")
        check(isinstance(ema, st.MlpNet if mlp else st.DiT), f"{name}: loaded as {type(ema).__name__}")
        # the library's files hold NHWC images; PyTorch's DiT takes NCHW (points need no change)
        to_torch, to_ours = (lambda v: v, lambda v: v) if mlp else (nchw, nhwc)
        x, t, k, y = to_torch(io["x"]), io["t"], io["k"], io["y"].long()
        what = f"{name} ({ema.config.get('attn_scale', 'fourier ' + str(ema.config.get('fourier')))})"
        with torch.no_grad():
            close(to_ours(ema(x, t, k, y)), io["out_ema"], f"{what}: forward, EMA weights")
            close(to_ours(raw(x, t, k, y)), io["out_model"], f"{name}: forward, raw weights")
        opt, _ = st.read_safetensors(os.path.join(ck, "optimizer.safetensors"))
        params = {n for n, _ in raw.named_parameters()}
        check({n[len("exp_avg."):] for n in opt if n.startswith("exp_avg.")} == params,
              f"{name}: optimizer moments named by the parameters")
        for N in (1, 2, 4):
            for g in ("1", "1.5"):
                s = st.sample(ema, io["labels"].long(), N, float(g), noise=to_torch(io["noise"]))
                close(to_ours(s), io[f"sample_{N}_{g}"], f"{name}: {N}-step samples, guidance {g}, same noise")
    # configs the networks refuse, and models there are none of: CheckpointErrors naming the file
    f = os.path.join(work, "mlp", "checkpoints", "last", "ema.safetensors")
    sd, meta = st.read_safetensors(f)
    for bad, cfg_words in ((dict(json.loads(meta["config"]), model="unet"), ["unknown model 'unet'"]),
                           (dict(json.loads(meta["config"]), fourier=3), ["fourier must be 0 or an even number"]),
                           ({"model": "mlp", "dim": 2}, ["missing field(s)"])):
        p = os.path.join(work, "bad_config.safetensors")
        st.write_safetensors(p, sd, dict(meta, config=json.dumps(bad)))
        raises(lambda p=p: st.load(p), st.CheckpointError, [p, "config"] + cfg_words, f"load: bad config {bad}")
    raises(lambda: st.load(os.path.join(work, "a", "io.safetensors")), st.CheckpointError,
           ["io.safetensors"], "load: a file that holds no weights")


def torch_to_cpp(tool, sample_images, work):
    cfg = st.default_config(image=8, channels=3, patch=2, hidden=48, depth=2, heads=3, classes=4,
                            attn_scale="1/sqrt(head_dim)", mlp_ratio=3.0)
    torch.manual_seed(0)
    model, ema = randomize(st.DiT(cfg), 1), randomize(st.DiT(cfg), 2)
    for folder, opt in (("plain", None), ("with_optimizer", torch.optim.AdamW(model.parameters(), lr=1e-3))):
        d = os.path.join(work, folder)
        if opt is not None:  # one real step, so the moments are not zero; the weights are reset after
            state = {k: v.clone() for k, v in model.state_dict().items()}
            model(torch.randn(2, 3, 8, 8), torch.rand(2), torch.zeros(2), torch.tensor([0, 1])).square().mean().backward()
            opt.step()
            model.load_state_dict(state)
        st.save(model, d, cfg, ema=ema, optimizer=opt, step=5 if opt else 0)
        g = torch.Generator().manual_seed(3)
        x, t = torch.randn(4, 3, 8, 8, generator=g), torch.tensor([0.0, 0.125, 0.5, 0.75])
        k, y = torch.tensor([0.0, 2.0, 5.0, 7.0]), torch.tensor([0, 1, 3, 4])
        st.write_safetensors(os.path.join(work, "in.safetensors"),
                             {"x": nhwc(x), "t": t, "k": k, "y": y.float()})
        out_file = os.path.join(work, f"out_{folder}.safetensors")
        run([tool, "forward", d, os.path.join(work, "in.safetensors"), out_file],
            words=("resumable checkpoint at step 5",) if opt else (),
            what=f"C++ loads the folder written by shortcut_torch.save ({folder})")
        out, _ = st.read_safetensors(out_file)
        with torch.no_grad():
            close(out["out_ema"], nhwc(ema(x, t, k, y)), f"C++ forward = PyTorch forward, EMA weights ({folder})")
            close(out["out_model"], nhwc(model(x, t, k, y)), f"C++ forward = PyTorch forward, raw weights ({folder})")
    # damaged and mismatched files: clear errors from the Python side too
    f = os.path.join(work, "plain", "ema.safetensors")
    raw = open(f, "rb").read()
    for name, data, words in (("trunc.safetensors", raw[:-7], ["truncated"]), ("tiny.safetensors", raw[:5], ["8-byte"]),
                              ("hdr.safetensors", raw[:8] + b"[" + raw[9:], ["not valid JSON"])):
        with open(os.path.join(work, name), "wb") as fh:
            fh.write(data)
        raises(lambda n=name: st.load(os.path.join(work, n)), st.SafetensorsError, words, f"load: damaged file ({name})")
    sd, meta = st.read_safetensors(f)
    st.write_safetensors(os.path.join(work, "shape.safetensors"), dict(sd, **{"y_embedder.embedding_table.weight":
                                                                            torch.zeros(3, 48)}), meta)
    raises(lambda: st.load(os.path.join(work, "shape.safetensors")), st.CheckpointError,
           ["wrong shape for tensor 'y_embedder.embedding_table.weight'"], "load: wrong shape")
    st.write_safetensors(os.path.join(work, "less.safetensors"),
                         {k: v for k, v in sd.items() if not k.startswith("d_embedder")}, meta)
    raises(lambda: st.load(os.path.join(work, "less.safetensors")), st.CheckpointError,
           ["missing tensors", "d_embedder.mlp.0.weight"], "load: missing tensors (strict)")
    typed = os.path.join("run", "checkpoints", "nope")  # relative, as a user types it: named absolute
    raises(lambda: st.load(typed), st.CheckpointError,
           [f"checkpoint folder '{os.path.abspath(typed)}' does not exist"], "load: no such folder")
    if sample_images:
        noise = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(4))
        np.save(os.path.join(work, "noise.npy"), nhwc(noise).contiguous().numpy())
        raw = os.path.join(work, "samples.raw")
        run([sample_images, os.path.join(work, "plain"), "--noise", os.path.join(work, "noise.npy"), "--labels",
             "0,1,2,3,4", "--steps", "4", "--guidance", "1.5", "--objective", "shortcut", "-q", "-o", os.path.join(work, "s.png"), "--raw", raw],
            what="sample_images on a folder written by shortcut_torch.save (no 'training' metadata: --objective "
                 "says how it was trained), --noise from numpy")
        ours = torch.from_numpy(np.fromfile(raw, dtype=np.float32).reshape(5, 8, 8, 3))
        mine = st.sample(st.load(os.path.join(work, "plain")), [0, 1, 2, 3, 4], 4, 1.5, noise=noise)
        close(ours, nhwc(mine), "sample_images = shortcut_torch.sample (4 steps, guidance 1.5, same noise)")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "cpp-to-torch":
        cpp_to_torch(sys.argv[2], sys.argv[3])
    elif mode == "torch-to-cpp":
        torch_to_cpp(sys.argv[2], sys.argv[3] if len(sys.argv) > 4 else None, sys.argv[-1])
    else:
        sys.exit(f"unknown mode {mode}")
    finish()
