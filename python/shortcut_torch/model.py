"""The networks of the shortcut library (shared/docs/DESIGN.md section 4) in PyTorch: the DiT, adaLN
blocks conditioned on c = E_t(t) + E_d(k) + E_y(y), with the state_dict names of facebookresearch/DiT
plus `d_embedder` (images are NCHW here, as in PyTorch; the library's own files hold NHWC), and the
MLP velocity network for low-dimensional data (include/shortcut/nn/mlp_net.hpp). With one class
either network reads every label as the null label, as the library does."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FREQ_DIM = 256
_ATTN_SCALES = ("1/head_dim", "1/sqrt(head_dim)")
_DIT_KEYS = ("model", "image", "channels", "patch", "hidden", "depth", "heads", "mlp_ratio", "classes",
             "attn_scale", "ln_eps")


def default_config(**kw):
    c = {"model": "dit", "image": 28, "channels": 1, "patch": 2, "hidden": 384, "depth": 12, "heads": 6,
         "mlp_ratio": 4.0, "classes": 10, "attn_scale": "1/head_dim", "ln_eps": 1e-6}
    c.update(kw)
    return check_config(c)


def check_config(cfg):
    """A full, validated copy of a config dict as the library writes it in __metadata__['config']."""
    cfg = dict(cfg)
    if cfg.get("model", "dit") != "dit":
        raise ValueError(f"config: model '{cfg.get('model')}' is not a DiT")
    missing = [k for k in ("image", "channels", "patch", "hidden", "depth", "heads", "mlp_ratio", "classes")
               if k not in cfg]
    if missing:
        raise ValueError(f"config: missing field(s) {missing}")
    cfg.setdefault("model", "dit")
    cfg.setdefault("attn_scale", "1/head_dim")
    cfg.setdefault("ln_eps", 1e-6)
    for k in ("image", "channels", "patch", "hidden", "depth", "heads", "classes"):
        if not isinstance(cfg[k], int) or cfg[k] <= 0:
            raise ValueError(f"config: '{k}' must be a positive integer, got {cfg[k]!r}")
    cfg["mlp_ratio"] = float(cfg["mlp_ratio"])
    if cfg["image"] % cfg["patch"]:
        raise ValueError(f"config: image {cfg['image']} is not a multiple of patch {cfg['patch']}")
    if cfg["hidden"] % cfg["heads"] or cfg["hidden"] % 4:
        raise ValueError(f"config: hidden {cfg['hidden']} must be a multiple of heads {cfg['heads']} and of 4")
    if cfg["attn_scale"] not in _ATTN_SCALES:
        raise ValueError(f"config: attn_scale must be one of {_ATTN_SCALES}, got {cfg['attn_scale']!r}")
    return cfg


def sincos_pos_embed(grid, dim):
    """[1, grid*grid, dim]: token r*grid + c gets [sin(c w) | cos(c w) | sin(r w) | cos(r w)],
    w_j = 10000^(-j / (dim/4)) (computed in float64, as the library and facebookresearch/DiT do)."""
    q = dim // 4
    w = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)
    r, c = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                          indexing="ij")
    r, c = r.reshape(-1, 1) * w, c.reshape(-1, 1) * w
    return torch.cat([c.sin(), c.cos(), r.sin(), r.cos()], 1).float()[None]


class _Holder(nn.Module):
    """An attribute holder, so that parameter names match the PyTorch DiT (x_embedder.proj, attn.qkv, ...)."""


def sinusoids(a, dim):
    """[N, dim]: [cos(a f_j), sin(a f_j)], f_j = exp(-ln(10000) j / (dim/2)), of the values a [N]."""
    half = dim // 2
    f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=a.device) / half)
    x = a.float()[:, None] * f[None]
    return torch.cat([torch.cos(x), torch.sin(x)], -1)


def _labels(y, classes):
    """One class: every label is the null label (training never sees another; DESIGN.md section 2)."""
    y = y.long()
    return torch.full_like(y, classes) if classes <= 1 else y


class ScalarEmbedder(nn.Module):
    """256 sinusoidal features [cos(a f_j), sin(a f_j)], f_j = exp(-ln(10000) j / 128), then
    Linear(256, D), SiLU, Linear(D, D): the DiT's t_embedder, and our d_embedder of the step index k."""

    def __init__(self, hidden):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, a):
        return self.mlp(sinusoids(a, FREQ_DIM).to(self.mlp[0].weight.dtype))


def _modulate(x, shift, scale, eps):
    return F.layer_norm(x, (x.shape[-1],), eps=eps) * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, hidden, heads, mlp_hidden, scale, eps):
        super().__init__()
        self.heads, self.scale, self.eps = heads, scale, eps
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))
        self.attn = _Holder()
        self.attn.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn.proj = nn.Linear(hidden, hidden)
        self.mlp = _Holder()
        self.mlp.fc1 = nn.Linear(hidden, mlp_hidden)
        self.mlp.fc2 = nn.Linear(mlp_hidden, hidden)

    def forward(self, x, c):
        B, T, D = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, -1)
        h = _modulate(x, sh1, sc1, self.eps)
        q, k, v = self.attn.qkv(h).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        logits = (q.float() @ k.float().transpose(-1, -2)) * self.scale  # softmax in fp32
        a = (torch.softmax(logits, -1).to(v.dtype) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + g1[:, None] * self.attn.proj(a)
        h = _modulate(x, sh2, sc2, self.eps)
        return x + g2[:, None] * self.mlp.fc2(F.gelu(self.mlp.fc1(h), approximate="tanh"))


class DiT(nn.Module):
    """s(x, t, k, y): x [B, C, H, W], t [B] in [0, 1], k [B] the step index log2(1/d) (float),
    y [B] labels in [0, classes] (classes = the null label) -> velocity [B, C, H, W].

    `config` is the dict of the library's __metadata__['config'] (see default_config)."""

    def __init__(self, config):
        super().__init__()
        cfg = self.config = check_config(config)
        D, C, p = cfg["hidden"], cfg["channels"], cfg["patch"]
        hd = D // cfg["heads"]
        scale = 1.0 / hd if cfg["attn_scale"] == "1/head_dim" else hd ** -0.5
        self.x_embedder = _Holder()
        self.x_embedder.proj = nn.Conv2d(C, D, p, p)
        self.register_buffer("pos_embed", sincos_pos_embed(cfg["image"] // p, D))
        self.t_embedder = ScalarEmbedder(D)
        self.d_embedder = ScalarEmbedder(D)
        self.y_embedder = _Holder()
        self.y_embedder.embedding_table = nn.Embedding(cfg["classes"] + 1, D)
        mlp = int(D * cfg["mlp_ratio"])
        self.blocks = nn.ModuleList([Block(D, cfg["heads"], mlp, scale, cfg["ln_eps"]) for _ in range(cfg["depth"])])
        self.final_layer = _Holder()
        self.final_layer.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.final_layer.linear = nn.Linear(D, p * p * C)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """DESIGN.md's init: Xavier-uniform linears (the patch embedding with fan_in p*p*C), zero biases,
        N(0, 0.02) for the t/d embedders and the label table, zero final linears."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        for e in (self.t_embedder, self.d_embedder):
            for i in (0, 2):
                nn.init.normal_(e.mlp[i].weight, std=0.02)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for m in (self.final_layer.adaLN_modulation[1], self.final_layer.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    check_config = staticmethod(check_config)

    @staticmethod
    def metadata_config(cfg):
        """The config as the library writes it in __metadata__['config']."""
        cfg = check_config(cfg)
        return {k: cfg[k] for k in _DIT_KEYS}

    @property
    def null_label(self):
        return self.config["classes"]

    @property
    def sample_shape(self):
        """The shape of one sample: [C, H, W]."""
        c = self.config
        return (c["channels"], c["image"], c["image"])

    def forward(self, x, t, k, y):
        cfg = self.config
        B, p, C, H = x.shape[0], cfg["patch"], cfg["channels"], cfg["image"]
        if tuple(x.shape[1:]) != (C, H, H):
            raise ValueError(f"DiT: input of shape {tuple(x.shape)}, expected [B, {C}, {H}, {H}] (NCHW)")
        g = H // p
        h = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(t) + self.d_embedder(k) + self.y_embedder.embedding_table(_labels(y, cfg["classes"]))
        for b in self.blocks:
            h = b(h, c)
        sh, sc = self.final_layer.adaLN_modulation(c).chunk(2, -1)
        h = self.final_layer.linear(_modulate(h, sh, sc, cfg["ln_eps"]))
        # tokens (row, col) hold values ordered (patch row, patch col, channel)
        return h.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, H, H)


def check_mlp_config(cfg):
    """A full, validated copy of an MLP network's config dict (model 'mlp'), with the defaults of
    MlpNetConfig for the fields the library leaves out (fourier 0, fourier_scale 1, t_scale 1, step_scale 1,
    ln_eps 1e-6)."""
    cfg = dict(cfg)
    if cfg.get("model") != "mlp":
        raise ValueError(f"config: model '{cfg.get('model')}' is not the MLP network ('mlp')")
    missing = [k for k in ("dim", "hidden", "depth", "mlp_ratio", "classes") if k not in cfg]
    if missing:
        raise ValueError(f"config: missing field(s) {missing}")
    cfg.setdefault("ln_eps", 1e-6)
    cfg.setdefault("fourier", 0)
    cfg.setdefault("fourier_scale", 1.0)
    cfg.setdefault("t_scale", 1.0)
    cfg.setdefault("step_scale", 1.0)
    for k in ("dim", "hidden", "depth", "classes"):
        if not isinstance(cfg[k], int) or cfg[k] <= 0:
            raise ValueError(f"config: '{k}' must be a positive integer, got {cfg[k]!r}")
    f = cfg["fourier"]
    if not isinstance(f, int) or f < 0 or f % 2 or f == 2:
        raise ValueError(f"config: fourier must be 0 or an even number >= 4, got {f!r}")
    for k in ("mlp_ratio", "fourier_scale", "t_scale", "step_scale", "ln_eps"):
        cfg[k] = float(cfg[k])
        if not (cfg[k] > 0 and math.isfinite(cfg[k])):
            raise ValueError(f"config: '{k}' must be positive, got {cfg[k]!r}")
    return cfg


def _modulate_rows(x, shift, scale, eps):
    return F.layer_norm(x, (x.shape[-1],), eps=eps) * (1 + scale) + shift


class MlpBlock(nn.Module):
    def __init__(self, hidden, mlp_hidden, eps):
        super().__init__()
        self.eps = eps
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        self.mlp = _Holder()
        self.mlp.fc1 = nn.Linear(hidden, mlp_hidden)
        self.mlp.fc2 = nn.Linear(mlp_hidden, hidden)

    def forward(self, x, c):
        shift, scale, gate = self.adaLN_modulation(c).chunk(3, -1)
        h = _modulate_rows(x, shift, scale, self.eps)
        return x + gate * self.mlp.fc2(F.gelu(self.mlp.fc1(h), approximate="tanh"))


class MlpNet(nn.Module):
    """The library's velocity network for low-dimensional data (nn/mlp_net.hpp): s(x, t, k, y) with
    x [B, dim], t [B], k [B] the step index (float), y [B] labels in [0, classes] -> velocity [B, dim].
    The input embedding x_embedder(x), plus with fourier = F > 0 x_fourier_embedder of the F
    sinusoidal features of each coordinate times fourier_scale; E_t embeds t * t_scale; then `depth`
    adaLN-modulated MLP blocks and the DiT's final layer, on a single token."""

    check_config = staticmethod(check_mlp_config)

    def __init__(self, config):
        super().__init__()
        cfg = self.config = check_mlp_config(config)
        D, dim = cfg["hidden"], cfg["dim"]
        self.x_embedder = nn.Linear(dim, D)
        if cfg["fourier"]:
            self.x_fourier_embedder = nn.Linear(dim * cfg["fourier"], D)
        self.t_embedder = ScalarEmbedder(D)
        self.d_embedder = ScalarEmbedder(D)
        self.y_embedder = _Holder()
        self.y_embedder.embedding_table = nn.Embedding(cfg["classes"] + 1, D)
        self.blocks = nn.ModuleList([MlpBlock(D, int(D * cfg["mlp_ratio"]), cfg["ln_eps"])
                                     for _ in range(cfg["depth"])])
        self.final_layer = _Holder()
        self.final_layer.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.final_layer.linear = nn.Linear(D, dim)

    @staticmethod
    def metadata_config(cfg):
        """The config as the library writes it: the Fourier and t_scale fields only where they differ
        from the plain network (MlpNetConfig::to_json)."""
        cfg = check_mlp_config(cfg)
        out = {k: cfg[k] for k in ("model", "dim", "hidden", "depth", "mlp_ratio", "classes", "ln_eps")}
        if cfg["fourier"]:
            out.update(fourier=cfg["fourier"], fourier_scale=cfg["fourier_scale"])
        if cfg["t_scale"] != 1.0:
            out["t_scale"] = cfg["t_scale"]
        if cfg["step_scale"] != 1.0:
            out["step_scale"] = cfg["step_scale"]
        return out

    @property
    def null_label(self):
        return self.config["classes"]

    @property
    def sample_shape(self):
        """The shape of one sample: [dim]."""
        return (self.config["dim"],)

    def forward(self, x, t, k, y):
        cfg = self.config
        B, dim = x.shape[0], cfg["dim"]
        if tuple(x.shape[1:]) != (dim,):
            raise ValueError(f"MlpNet: input of shape {tuple(x.shape)}, expected [B, {dim}]")
        h = self.x_embedder(x)
        if cfg["fourier"]:
            a = (cfg["fourier_scale"] * x).reshape(-1)
            feats = sinusoids(a, cfg["fourier"]).to(x.dtype).reshape(B, dim * cfg["fourier"])
            h = h + self.x_fourier_embedder(feats)
        c = (self.t_embedder(t * cfg["t_scale"]) + self.d_embedder(k * cfg["step_scale"])
             + self.y_embedder.embedding_table(_labels(y, cfg["classes"])))
        for b in self.blocks:
            h = b(h, c)
        shift, scale = self.final_layer.adaLN_modulation(c).chunk(2, -1)
        return self.final_layer.linear(_modulate_rows(h, shift, scale, cfg["ln_eps"]))


def network_from_config(cfg):
    """The network a config describes (its 'model': 'dit', the default, or 'mlp'), freshly initialised."""
    model = dict(cfg).get("model", "dit")
    if model == "mlp":
        return MlpNet(cfg)
    if model == "dit":
        return DiT(cfg)
    raise ValueError(f"config: unknown model '{model}' (known: 'dit', 'mlp')")
