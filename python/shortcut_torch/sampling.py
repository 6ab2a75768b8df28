"""The Euler sampler of DESIGN.md section 3: x = x0 ~ N(0, I); for i < N: t = i / N,
v = s(x, t, k, y) with k = log2 N (k = log2 M for flow-matching models), or the step size d = 1/N
itself where the model's step input is d (training metadata "step_input": "d"; flow matching then
reads 0), x += v / N; with guidance
w != 1, v = v(null) + w (v(y) - v(null))."""
import math

import torch


def _training(model, objective, denoise_timesteps):
    tr = (getattr(model, "training_config", None) or {}).get("shortcut", {})
    obj = objective or tr.get("objective", "shortcut")
    M = int(denoise_timesteps or tr.get("denoise_timesteps", 128))
    if obj not in ("shortcut", "flow"):
        raise ValueError(f"objective must be 'shortcut' or 'flow', got {obj!r}")
    step_input = tr.get("step_input", "index")
    if step_input not in ("index", "d"):
        raise ValueError(f"step_input must be 'index' or 'd', got {step_input!r}")
    return obj, M, step_input


@torch.no_grad()
def velocity(model, x, t, k, y, guidance=1.0):
    """The guided velocity v(null) + w (v(y) - v(null)) (v(y) when w == 1), one forward of 2B rows."""
    if guidance == 1.0:
        return model(x, t, k, y)
    B = x.shape[0]
    v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([k, k]),
              torch.cat([y, torch.full_like(y, model.null_label)]))
    vc, vu = v[:B], v[B:]
    return vu + guidance * (vc - vu)


@torch.no_grad()
def sample(model, labels, steps, guidance=1.0, generator=None, noise=None, objective=None, denoise_timesteps=None):
    """Samples [B, *model.sample_shape] (a DiT's images [B, C, H, W], nominally in [-1, 1]; the MLP
    network's points [B, dim]) for `labels` ([B], classes = the null label) in `steps` Euler steps (a
    power of two up to denoise_timesteps, 128 by default). The noise x0 is `noise` (of that shape) when
    given, else drawn with torch.randn(generator=generator). The objective (which
    decides the step index) and M come from model.training_config (set by load) unless given."""
    obj, M, step_input = _training(model, objective, denoise_timesteps)
    if steps < 1 or steps & (steps - 1) or steps > M:
        raise ValueError(f"steps must be a power of two in [1, {M}], got {steps}")
    p = next(model.parameters())
    y = torch.as_tensor(labels, dtype=torch.long, device=p.device).reshape(-1)
    B, cfg = y.shape[0], model.config
    if bool((y < 0).any()) or bool((y > cfg["classes"]).any()):
        raise ValueError(f"labels must lie in [0, {cfg['classes']}] ({cfg['classes']} = unconditional)")
    shape = (B,) + tuple(model.sample_shape)
    if noise is None:
        x = torch.randn(shape, generator=generator, dtype=p.dtype, device="cpu" if generator is None
                        else generator.device).to(p.device)
    else:
        x = torch.as_tensor(noise).to(device=p.device, dtype=p.dtype).clone()
        if tuple(x.shape) != shape:
            raise ValueError(f"noise has shape {tuple(x.shape)}, expected {list(shape)}"
                             + (" (NCHW)" if len(shape) == 4 else ""))
    if step_input == "d":
        k = 0.0 if obj == "flow" else 1.0 / steps
    else:
        k = float(int(math.log2(M)) if obj == "flow" else int(math.log2(steps)))
    kk = torch.full((B,), k, dtype=p.dtype, device=p.device)
    for i in range(steps):
        t = torch.full((B,), i / steps, dtype=p.dtype, device=p.device)
        x = x + (1.0 / steps) * velocity(model, x, t, kk, y, guidance)
    return x
