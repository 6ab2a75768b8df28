"""The DiT of the shortcut library (shared/docs/DESIGN.md section 4) in PyTorch: adaLN blocks
conditioned on c = E_t(t) + E_d(k) + E_y(y), with the state_dict names of facebookresearch/DiT plus
`d_embedder`. Images are NCHW here, as in PyTorch; the library's own files hold NHWC."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FREQ_DIM = 256
_ATTN_SCALES = ("1/head_dim", "1/sqrt(head_dim)")


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


class ScalarEmbedder(nn.Module):
    """256 sinusoidal features [cos(a f_j), sin(a f_j)], f_j = exp(-ln(10000) j / 128), then
    Linear(256, D), SiLU, Linear(D, D): the DiT's t_embedder, and our d_embedder of the step index k."""

    def __init__(self, hidden):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, a):
        half = FREQ_DIM // 2
        f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=a.device) / half)
        x = a.float()[:, None] * f[None]
        return self.mlp(torch.cat([torch.cos(x), torch.sin(x)], -1).to(self.mlp[0].weight.dtype))


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

    @property
    def null_label(self):
        return self.config["classes"]

    def forward(self, x, t, k, y):
        cfg = self.config
        B, p, C, H = x.shape[0], cfg["patch"], cfg["channels"], cfg["image"]
        if tuple(x.shape[1:]) != (C, H, H):
            raise ValueError(f"DiT: input of shape {tuple(x.shape)}, expected [B, {C}, {H}, {H}] (NCHW)")
        g = H // p
        h = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(t) + self.d_embedder(k) + self.y_embedder.embedding_table(y.long())
        for b in self.blocks:
            h = b(h, c)
        sh, sc = self.final_layer.adaLN_modulation(c).chunk(2, -1)
        h = self.final_layer.linear(_modulate(h, sh, sc, cfg["ln_eps"]))
        # tokens (row, col) hold values ordered (patch row, patch col, channel)
        return h.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, H, H)
