"""Helpers shared by the PyTorch tests (run by CTest with PYTHONPATH=<repo>/python)."""
import os
import subprocess
import sys

import torch

import shortcut_torch as st

torch.set_num_threads(1)
FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


def close(a, b, what, tol=1e-4):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.shape != b.shape:
        check(False, f"{what}: shapes {list(a.shape)} vs {list(b.shape)}")
        return
    d = (a - b).abs().max().item()
    scale = max(1.0, b.abs().max().item())
    check(d <= tol * scale, f"{what}: max |diff| = {d:.3g} (values up to {b.abs().max().item():.3g})")


def raises(fn, exc, words, what):
    try:
        fn()
    except exc as e:
        msg = str(e)
        check(all(w in msg for w in words), f"{what}: {type(e).__name__}: {msg[:200]}")
        return
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: expected {exc.__name__}, got {type(e).__name__}: {e}")
        return
    check(False, f"{what}: no error")


def run(cmd, expect_rc=0, words=(), what=None):
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        check(False, f"{what or cmd[0]}: {e}")
        return ""
    out = p.stdout + p.stderr
    ok = p.returncode == expect_rc and all(w in out for w in words)
    check(ok, (what or " ".join(map(str, cmd[:3]))) + f" (exit {p.returncode})"
          + ("" if ok else f"\n      output: {out.strip()[-600:]}"))
    return out


def randomize(model, seed, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def nhwc(x):
    return x.permute(0, 2, 3, 1)


def nchw(x):
    return x.permute(0, 3, 1, 2)


def finish():
    print("all checks passed" if not FAILURES else f"{len(FAILURES)} check(s) failed", flush=True)
    sys.exit(1 if FAILURES else 0)
