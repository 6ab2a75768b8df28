"""facebookresearch/DiT weights -> a shortcut weights file: every tensor kept by name, the
learned-sigma half of the final linear dropped, and a d_embedder added whose output layer is zero, so
that the converted model computes exactly the original DiT's first C output channels (at any step
index k) until training moves it. See docs/checkpoints.md for what fine-tuning from it means."""
import os
import pickle
import zipfile

import torch

from .checkpoint import EMA_FILE, MODEL_FILE
from .model import DiT
from .safetensors import write_safetensors

# facebookresearch/DiT models.py: hidden size -> heads (DiT-S, B, L, XL)
_DIT_HEADS = {384: 6, 768: 12, 1024: 16, 1152: 16}
_REQUIRED = ("x_embedder.proj.weight", "x_embedder.proj.bias", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.weight",
             "y_embedder.embedding_table.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight",
             "final_layer.linear.weight", "final_layer.adaLN_modulation.1.weight")


class ConversionError(ValueError):
    """A file that is not a readable facebookresearch/DiT checkpoint (the message says why)."""


def _read_pt(path, trusted=False):
    if not os.path.isfile(path):
        raise ConversionError(f"'{path}': " + ("is a folder, not a .pt file" if os.path.isdir(path) else "no such file"))
    try:
        if trusted:
            return torch.load(path, map_location="cpu")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except TypeError:  # torch without weights_only
            return torch.load(path, map_location="cpu")
        except pickle.UnpicklingError as e:
            if "Unsupported class" in str(e):
                raise ConversionError(f"'{path}' holds Python objects besides tensors (e.g. the 'args' of a DiT "
                                      "train.py checkpoint), which are not loaded unless you trust the file: pass "
                                      "trusted=True (--trusted)") from None
            raise
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, ImportError, IndexError, OSError) as e:
        msg = str(e).split("WeightsUnpickler error:")[-1].strip()
        raise ConversionError(f"'{path}' is not a readable PyTorch checkpoint (damaged, truncated, or not a "
                              f".pt file): {type(e).__name__}: {msg.splitlines()[0] if msg else ''}") from None


def dit_state_dict(obj, path="<state_dict>", weights="ema"):
    """The DiT state_dict inside what torch.load returned: the dict itself (released DiT-XL-2-*.pt), or
    its 'ema' / 'model' entry (train.py checkpoints), with a DataParallel 'module.' prefix removed."""
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in (weights, "ema", "model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"'{path}' holds a {type(obj).__name__}, not a state_dict of a facebookresearch/DiT model")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"'{path}': entries {bad[:3]} are not named tensors; not a DiT state_dict")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise ConversionError(f"'{path}' is not a facebookresearch/DiT state_dict: it lacks {missing[:4]} "
                              f"(it has e.g. {list(obj)[:4]})")
    return obj


def dit_config(sd, path="<state_dict>", heads=None, image=None):
    """The shortcut config of a DiT state_dict, and whether it predicts a learned sigma."""
    w = sd["x_embedder.proj.weight"]
    if w.dim() != 4 or w.shape[2] != w.shape[3]:
        raise ConversionError(f"'{path}': x_embedder.proj.weight has shape {list(w.shape)}, expected [D, C, p, p]")
    D, C, p = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in sd:
        depth += 1
    if image is None:
        if "pos_embed" not in sd:
            raise ConversionError(f"'{path}' has no pos_embed to tell the image size; pass image=")
        T = int(sd["pos_embed"].shape[1])
        g = int(round(T ** 0.5))
        if g * g != T:
            raise ConversionError(f"'{path}': pos_embed has {T} tokens, not a square grid")
        image = g * p
    if heads is None:
        if D not in _DIT_HEADS:
            raise ConversionError(f"'{path}': cannot tell the head count of a DiT of width {D} (not DiT-S/B/L/XL); "
                                  "pass heads=")
        heads = _DIT_HEADS[D]
    out = int(sd["final_layer.linear.weight"].shape[0])
    if out == p * p * 2 * C:
        learned_sigma = True
    elif out == p * p * C:
        learned_sigma = False
    else:
        raise ConversionError(f"'{path}': final_layer.linear has {out} outputs; a DiT with patch {p} and {C} channels "
                              f"has {p * p * C} or, with learned sigma, {p * p * 2 * C}")
    classes = int(sd["y_embedder.embedding_table.weight"].shape[0]) - 1
    if classes < 1:
        raise ConversionError(f"'{path}': the label table has {classes + 1} rows; expected classes + 1 (the last is the "
                              "null label)")
    cfg = {"model": "dit", "image": int(image), "channels": C, "patch": p, "hidden": D, "depth": depth,
           "heads": int(heads), "mlp_ratio": float(sd["blocks.0.mlp.fc1.weight"].shape[0]) / D, "classes": classes,
           "attn_scale": "1/sqrt(head_dim)", "ln_eps": 1e-6}
    return cfg, learned_sigma


def convert_dit(pt_file, out, heads=None, image=None, weights="ema", seed=0, dtype=torch.float32, trusted=False):
    """Converts a facebookresearch/DiT checkpoint (`torch.save` of its state_dict, or a train.py checkpoint
    with 'model' / 'ema') into the library's format. `out` ending in .safetensors: one weights file;
    otherwise a folder with ema.safetensors and model.safetensors (the same weights), which
    `train_images --init`, `sample_images` and `load` take. Returns (the converted DiT, its config).

    The attention scale is 1/sqrt(head_dim) (the original's), the label table keeps its classes + 1 rows
    (the last is the null label), and d_embedder gets a N(0, 0.02) first layer (drawn from `seed`) and a
    zero output layer."""
    pt_file = os.fspath(pt_file)
    sd = dit_state_dict(_read_pt(pt_file, trusted), pt_file, weights)
    cfg, learned_sigma = dit_config(sd, pt_file, heads, image)
    sd = dict(sd)
    if learned_sigma:  # outputs per token are (patch row, patch col, channel) over 2C channels: keep the first C
        p, C, D = cfg["patch"], cfg["channels"], cfg["hidden"]
        sd["final_layer.linear.weight"] = sd["final_layer.linear.weight"].reshape(p, p, 2 * C, D)[:, :, :C].reshape(-1, D)
        sd["final_layer.linear.bias"] = sd["final_layer.linear.bias"].reshape(p, p, 2 * C)[:, :, :C].reshape(-1)
    model = DiT(cfg)
    own = model.state_dict()
    g = torch.Generator().manual_seed(seed)
    if "d_embedder.mlp.0.weight" not in sd:
        e = model.d_embedder.mlp
        sd["d_embedder.mlp.0.weight"] = torch.empty_like(e[0].weight).normal_(0, 0.02, generator=g)
        sd["d_embedder.mlp.0.bias"] = torch.zeros_like(e[0].bias)
        sd["d_embedder.mlp.2.weight"] = torch.zeros_like(e[2].weight)
        sd["d_embedder.mlp.2.bias"] = torch.zeros_like(e[2].bias)
    sd.setdefault("pos_embed", own["pos_embed"])
    unexpected = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd]
    wrong = [f"{k}: {list(sd[k].shape)} vs {list(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if unexpected or missing or wrong:
        raise ConversionError(f"'{pt_file}' does not fit a DiT of config {cfg}: "
                              + "; ".join(s for s in (f"unexpected {unexpected[:4]}" if unexpected else "",
                                                      f"missing {missing[:4]}" if missing else "",
                                                      f"wrong shapes {wrong[:3]}" if wrong else "") if s))
    pos_diff = (sd["pos_embed"].double() - own["pos_embed"].double()).abs().max().item()
    if pos_diff > 1e-4:
        raise ConversionError(f"'{pt_file}': pos_embed differs from the 2-D sin-cos embedding by {pos_diff:.3g}; "
                              "not a facebookresearch/DiT position embedding")
    if not all(torch.isfinite(v).all() for v in sd.values()):
        raise ConversionError(f"'{pt_file}' holds non-finite weights")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    model.training_config = None
    out = os.fspath(out)
    import json
    meta = {"format": "pt", "producer": "shortcut_torch.convert_dit", "content": "weights",
            "config": json.dumps(cfg), "step": "0", "source": f"facebookresearch/DiT {os.path.basename(pt_file)}"
                                                               + (" (learned sigma dropped)" if learned_sigma else "")}
    tensors = {k: v.to(dtype) for k, v in model.state_dict().items()}
    if out.endswith(".safetensors"):
        d = os.path.dirname(out)
        if d:
            os.makedirs(d, exist_ok=True)
        write_safetensors(out, tensors, meta)
    else:
        os.makedirs(out, exist_ok=True)
        write_safetensors(os.path.join(out, MODEL_FILE), tensors, dict(meta, content="model"))
        write_safetensors(os.path.join(out, EMA_FILE), tensors, dict(meta, content="ema"))
    return model.eval(), cfg
