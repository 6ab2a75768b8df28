"""train_images --data-file on small safetensors and .npy files written here (uint8 and float, 1 and 4
channels, 32x32), every bad case, and --init (a checkpoint folder, weights without d_embedder, wrong files).
  data_file_test.py TRAIN_IMAGES WORK"""
import json
import os
import sys

import numpy as np
import torch

from common import check, close, finish, run, st

N, S = 16, 32


def write(work, name, arrays):
    """arrays: {name: numpy array}; a .npy file holds the first one."""
    p = os.path.join(work, name)
    if name.endswith(".npy"):
        np.save(p, next(iter(arrays.values())))
    else:
        st.write_safetensors(p, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
    return p


def main(train, work):
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = (np.arange(N) % 3).astype(np.int64)
    u8 = {c: rng.integers(0, 256, (N, S, S, c), dtype=np.uint8) for c in (1, 4)}
    f32 = {c: rng.standard_normal((N, S, S, c)).astype(np.float32) for c in (1, 4)}
    lab = write(work, "labels.npy", {"l": labels})
    quick0 = ["--batch", "28", "--sample-every", "0", "--checkpoint-every", "0", "-q"]
    quick = ["--steps", "1", *quick0]

    def train_ok(args, C, what, classes=3):
        out = os.path.join(work, "run_" + what.replace(" ", "_").replace(",", ""))
        run([train, *args, *quick, "-o", out], words=(f"32x32x{C}",), what=f"--data-file: {what}")
        ck = os.path.join(out, "checkpoints", "last")
        if os.path.isdir(ck):
            m = st.load(ck)
            check(m.config["image"] == S and m.config["channels"] == C and m.config["classes"] == classes,
                  f"{what}: the checkpoint's DiT is 32x32x{C} with {classes} classes")
        return ck

    good = {}
    for C in (1, 4):
        good[("npy", "u8", C)] = train_ok(["--data-file", write(work, f"u8_{C}.npy", {"x": u8[C]}), "--labels-file", lab],
                                          C, f"npy uint8 {C} channel(s)")
        good[("npy", "f32", C)] = train_ok(["--data-file", write(work, f"f32_{C}.npy", {"x": f32[C]}), "--labels-file",
                                            lab], C, f"npy float32 {C} channel(s)")
        good[("st", "u8", C)] = train_ok(["--data-file", write(work, f"u8_{C}.safetensors",
                                                               {"images": u8[C], "labels": labels})],
                                         C, f"safetensors uint8 {C} channel(s)")
        train_ok(["--data-file", write(work, f"f16_{C}.safetensors", {"latents": f32[C].astype(np.float16),
                                                                       "y": labels.astype(np.int32)}), "--classes", "5"],
                 C, f"safetensors float16 {C} channel(s) unnamed tensors --classes 5", classes=5)

    # bad cases: each exits 1 with a message that says what is wrong
    def bad(args, words, what):
        run([train, *args, *quick, "-o", os.path.join(work, "bad")], expect_rc=1, words=words, what=f"bad: {what}")

    x1 = write(work, "x1.npy", {"x": u8[1]})
    bad(["--data-file", write(work, "rank3.npy", {"x": u8[1][..., 0]}), "--labels-file", lab],
        ("rank 4 [N, H, W, C]", "x[..., None]"), "images of rank 3")
    bad(["--data-file", write(work, "i32.npy", {"x": u8[1].astype(np.int32)}), "--labels-file", lab],
        ("uint8", "floating point", "I32"), "int32 images")
    bad(["--data-file", x1, "--labels-file", write(work, "flab.npy", {"l": labels.astype(np.float32)})],
        ("labels must be integers",), "float labels")
    bad(["--data-file", x1, "--labels-file", write(work, "lab2d.npy", {"l": labels[:, None]})],
        ("rank 1 [N]",), "labels of rank 2")
    bad(["--data-file", x1, "--labels-file", lab, "--classes", "2"],
        ("label 2 at index 2 is out of range for 2 classes",), "label beyond --classes")
    bad(["--data-file", x1, "--labels-file", write(work, "neg.npy", {"l": labels - 1})],
        ("label -1 at index 0 is negative",), "negative label")
    bad(["--data-file", x1, "--labels-file", write(work, "short.npy", {"l": labels[:10]})],
        ("16 images", "10 labels"), "mismatched counts")
    bad(["--data-file", x1], ("no labels", "--labels-file"), ".npy without labels")
    bad(["--data-file", write(work, "nolab.safetensors", {"images": u8[1]})], ("no labels", "'labels'"),
        "safetensors without labels")
    bad(["--data-file", write(work, "noimg.safetensors", {"labels": labels})], ("no tensor 'images'",),
        "safetensors without images")
    bad(["--data-file", write(work, "rect.npy", {"x": u8[1][:, :, :16]}), "--labels-file", lab], ("square",),
        "non-square images")
    bad(["--data-file", write(work, "nan.npy", {"x": np.where(f32[1] > 2, np.nan, f32[1]).astype(np.float32)}),
         "--labels-file", lab], ("non-finite",), "nan in float images")
    raw = open(x1, "rb").read()
    # every message names the file and its format (a file named .npy is read as one, whatever it holds)
    for name, data, words in (("trunc.npy", raw[:-100], ("truncated",)),
                              ("magic.npy", b"NOTNUMPY" + raw[8:], ("not a .npy file",)),
                              ("empty.npy", b"", ("not a .npy file",)),
                              ("hdr.npy", raw[:10] + b"{'descr': 'x'" + raw[23:], ("header",)),
                              ("shape.npy", raw.replace(b"'shape': (", b"'shape': ((", 1), ("header",))):
        with open(os.path.join(work, name), "wb") as f:
            f.write(data)
        bad(["--data-file", os.path.join(work, name), "--labels-file", lab], ("npy file", name, *words),
            f"damaged .npy ({name})")
        bad(["--data-file", x1, "--labels-file", os.path.join(work, name)], ("npy file", name, *words),
            f"damaged .npy labels ({name})")
    bad(["--data-file", os.path.join(work, "missing.npy")], ("does not exist",), "missing file")
    bad(["--labels-file", lab, "--data", os.path.join(work, "nowhere")], ("go with --data-file",),
        "--labels-file without --data-file")

    # --init: from a checkpoint folder, from weights without d_embedder, and wrong files
    src = good[("npy", "u8", 1)]
    out = os.path.join(work, "init_folder")
    run([train, "--data-file", x1, "--labels-file", lab, "--init", src, *quick0, "--steps", "0", "-o", out],
        words=("initial weights",), what="--init a checkpoint folder")
    a, b = st.load(src, "model"), st.load(os.path.join(out, "checkpoints", "last"), "model")
    close(b.state_dict()["blocks.1.mlp.fc2.weight"], a.state_dict()["blocks.1.mlp.fc2.weight"],
          "--init: the run starts from the folder's weights")
    sd, meta = st.read_safetensors(os.path.join(src, "model.safetensors"))
    nod = {k: v for k, v in sd.items() if not k.startswith("d_embedder.")}
    st.write_safetensors(os.path.join(work, "no_d.safetensors"), nod, meta)
    out = os.path.join(work, "init_no_d")
    run([train, "--data-file", x1, "--labels-file", lab, "--init", os.path.join(work, "no_d.safetensors"), *quick0,
         "--steps", "0", "-o", out], words=("no d_embedder", "zero-initialised"), what="--init weights without d_embedder")
    m = st.load(os.path.join(out, "checkpoints", "last"), "model")
    check(m.d_embedder.mlp[2].weight.abs().max().item() == 0 and m.d_embedder.mlp[2].bias.abs().max().item() == 0
          and m.d_embedder.mlp[0].weight.abs().max().item() > 0, "--init: d_embedder output layer zero, first layer random")
    st.write_safetensors(os.path.join(work, "extra.safetensors"), dict(sd, **{"foo.weight": torch.zeros(2)}), meta)
    bad(["--data-file", x1, "--labels-file", lab, "--init", os.path.join(work, "extra.safetensors")],
        ("unexpected tensor 'foo.weight'",), "--init with an extra tensor")
    less = {k: v for k, v in sd.items() if k != "blocks.0.mlp.fc1.bias"}
    st.write_safetensors(os.path.join(work, "less.safetensors"), less, meta)
    bad(["--data-file", x1, "--labels-file", lab, "--init", os.path.join(work, "less.safetensors")],
        ("missing tensor 'blocks.0.mlp.fc1.bias'",), "--init with a missing tensor")
    nometa = dict(sd, **{"blocks.0.mlp.fc1.bias": torch.zeros(7)})
    st.write_safetensors(os.path.join(work, "shape.safetensors"), nometa, {})
    bad(["--data-file", x1, "--labels-file", lab, "--init", os.path.join(work, "shape.safetensors")],
        ("wrong shape for tensor 'blocks.0.mlp.fc1.bias'",), "--init with a wrong shape (no config: the preset's)")
    bad(["--data-file", write(work, "x4.npy", {"x": u8[4]}), "--labels-file", lab, "--init", src],
        ("holds a DiT for 32x32x1", "32x32x4"), "--init for other images")
    bad(["--data-file", x1, "--labels-file", lab, "--init", src, "--resume", src], ("exclude each other",),
        "--init with --resume")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    finish()
