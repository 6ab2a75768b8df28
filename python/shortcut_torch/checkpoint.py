"""Checkpoint folders and weights files of the shortcut library (docs/checkpoints.md) in PyTorch:
`load` a folder or file into a DiT or MLP network (strict), `save` one as a folder the C++ programs load."""
import json
import os

import torch

from .model import DiT, network_from_config
from .safetensors import CheckpointError, read_safetensors, write_safetensors

EMA_FILE, MODEL_FILE, OPTIMIZER_FILE = "ema.safetensors", "model.safetensors", "optimizer.safetensors"


def weights_file(path, weights="ema"):
    """The file of one weight set: a checkpoint folder's ema.safetensors / model.safetensors, or the file itself."""
    path = os.fspath(path)
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    # folders named by their absolute path, as the C++ side does (docs/checkpoints.md)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint folder '{os.path.abspath(path)}' does not exist")
    if os.path.isdir(path):
        f = os.path.join(path, EMA_FILE if weights == "ema" else MODEL_FILE)
        if not os.path.isfile(f):
            raise CheckpointError(f"checkpoint folder '{os.path.abspath(path)}' has no {os.path.basename(f)}")
        return f
    return path


def _json_meta(meta, key, path):
    if key not in meta:
        return None
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"'{path}': __metadata__ '{key}' is not valid JSON: {e}") from None


def load_state(path, model, contents=None):
    """Loads a weights file into `model` with strict name and shape checks; returns the file's metadata.
    `contents`: the file's (tensors, metadata) when already read."""
    sd, meta = contents if contents is not None else read_safetensors(path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
    for k, v in sd.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            problems.append(f"wrong shape for tensor '{k}': expected {list(own[k].shape)}, got {list(v.shape)}")
        elif k in own and not v.is_floating_point():
            problems.append(f"tensor '{k}' has dtype {v.dtype}; weights must be floating point")
        elif k in own and not torch.isfinite(v).all():
            problems.append(f"tensor '{k}' holds a non-finite value")
    if problems:
        raise CheckpointError(f"'{path}': " + "; ".join(problems))
    expected_pos = model.pos_embed.clone() if isinstance(model, DiT) else None
    model.load_state_dict(sd, strict=True)
    diff = 0.0 if expected_pos is None else (model.pos_embed - expected_pos).abs().max().item()
    if diff > 1e-4:
        raise CheckpointError(f"'{path}': tensor 'pos_embed' differs from the values this model computes "
                              f"(max difference {diff:.3g}): the file comes from a different model")
    return meta


def load(checkpoint, weights="ema", config=None):
    """The network in eval mode (a DiT, or MlpNet for the config's model 'mlp') from a checkpoint folder
    (its EMA weights by default; weights='model' for the raw ones) or a single weights file. The config
    comes from the file's __metadata__ (or `config` for files without one). Sets model.training_config
    (the 'training' metadata: objective, denoise_timesteps, ...; None when absent) and model.step.
    Every problem with the files is a CheckpointError naming the file."""
    path = weights_file(checkpoint, weights)
    contents = read_safetensors(path)
    meta = contents[1]
    cfg = _json_meta(meta, "config", path)
    if cfg is None:
        if config is None:
            raise CheckpointError(f"'{path}' has no model config in its metadata ('config'); pass config=")
        cfg = config
    try:
        model = network_from_config(cfg)
    except ValueError as e:
        raise CheckpointError(f"'{path}': __metadata__ 'config': {e}") from None
    load_state(path, model, contents)
    model.training_config = _json_meta(meta, "training", path)
    step = meta.get("step", "0")
    model.step = int(step) if step.isdigit() else 0
    return model.eval()


def _weights_of(m):
    return m.state_dict() if isinstance(m, torch.nn.Module) else dict(m)


def save(model, directory, config=None, ema=None, optimizer=None, step=0, training=None, dtype=torch.float32):
    """Writes a checkpoint folder the C++ programs load (sample_images, evaluate_images, train_images --init):
    model.safetensors (the weights of `model`), ema.safetensors (`ema`, a module or state_dict; default
    the same weights) and, when `optimizer` (a torch.optim.Adam/AdamW over model.parameters()) is given,
    optimizer.safetensors with its moments, which makes the folder resumable (train_images --resume).
    `training`: the dict stored as the 'training' metadata (e.g. {"shortcut": {"objective": "flow",
    "denoise_timesteps": 128}}; the C++ load_generator needs both keys); default model.training_config
    when load() set it."""
    cfg = type(model).metadata_config(config if config is not None else model.config)
    if cfg != type(model).metadata_config(model.config):
        raise ValueError(f"save: config {cfg} does not describe this model ({model.config})")
    os.makedirs(directory, exist_ok=True)
    if training is None:
        training = getattr(model, "training_config", None)
    meta = {"format": "pt", "producer": "shortcut_torch", "config": json.dumps(cfg), "step": str(int(step))}
    if training is not None:
        meta["training"] = json.dumps(training)
    names = [k for k, _ in model.named_parameters()]
    if optimizer is not None:
        by_param = {id(p): k for k, p in model.named_parameters()}
        m, v = {}, {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in by_param:
                    raise ValueError("save: the optimizer holds a tensor that is not a parameter of the model")
                st = optimizer.state.get(p, {})
                m[by_param[id(p)]] = st.get("exp_avg", torch.zeros_like(p))
                v[by_param[id(p)]] = st.get("exp_avg_sq", torch.zeros_like(p))
        opt = {"exp_avg." + k: m.get(k, torch.zeros_like(dict(model.named_parameters())[k])).to(dtype) for k in names}
        opt.update({"exp_avg_sq." + k: v.get(k, torch.zeros_like(dict(model.named_parameters())[k])).to(dtype)
                    for k in names})
        write_safetensors(os.path.join(directory, OPTIMIZER_FILE), opt,
                          dict(meta, content="optimizer", rng_seed="0", rng_position="0", extra="{}"))
    for weights, fname, content in ((model, MODEL_FILE, "model"), (ema if ema is not None else model, EMA_FILE, "ema")):
        sd = _weights_of(weights)
        write_safetensors(os.path.join(directory, fname), {k: t.to(dtype) for k, t in sd.items()},
                          dict(meta, content=content))
    return directory
