#!/usr/bin/env python3
"""One table from one GPU call: our end-to-end numbers (end_to_end_bench JSON), the PyTorch peer's
(torch_shortcut.py's JSON lines) and the ratios, then the kernels against their references
(kernels_bench JSON) with the fraction of the measured ceilings. Markdown on stdout, for
docs/performance.md.

Usage: perf_table.py --end-to-end e2e.json --peer peer.jsonl --kernels kernels.json [--kernels more.json]
                     [--card TEXT] [--commit SHA]
Any input may be missing (a run that failed): its rows say so instead of the script failing.
Benchmark names follow benchmarks/: BM_train_step/<config>/<precision>, BM_sample/<config>/<steps>/<precision>,
BM_<kernel>_<direction>/<impl>/<args...> with impl fused | unfused | cpu, BM_ceiling_<what>.
"""
import argparse
import json
import math
import os
import re
import sys


def load_benchmarks(path):
    """{run_name: {"ms": median time in ms, counters...}} from Google Benchmark JSON output: the
    median aggregate where repetitions ran, else the median of the plain iterations."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    runs, medians = {}, {}
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    for b in data.get("benchmarks", []):
        if b.get("error_occurred"):
            runs.setdefault(clean(b), []).append({"error": b.get("error_message", "error")})
            continue
        name = clean(b)
        row = {k: v for k, v in b.items() if isinstance(v, (int, float)) and "/" in k}
        row["ms"] = b["real_time"] * scale[b.get("time_unit", "ns")]
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[name] = row
        else:
            runs.setdefault(name, []).append(row)
    out = {}
    for name, rows in runs.items():
        good = [r for r in rows if "error" not in r]
        if not good:
            out[name] = rows[0]
            continue
        good.sort(key=lambda r: r["ms"])
        out[name] = good[len(good) // 2]
    out.update(medians)
    return out


def clean(b):
    name = b.get("run_name") or b["name"]
    return re.sub(r"/(manual_time|real_time)$", "", name)


def load_peer(path):
    """{(config, mode, dtype): row} from torch_shortcut.py's output (JSON lines; other lines skipped)."""
    if not path or not os.path.exists(path):
        return None
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "config" in r:
                rows[(r["config"], r.get("mode"), r.get("dtype"))] = r
    return rows


def fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


PEER_COLUMNS = [("eager", "tf32"), ("eager", "bf16"), ("compile", "tf32"), ("compile", "bf16")]


def end_to_end_table(ours, peer):
    lines = ["### End to end (median ms; ratio = our bf16 time, or TF32 where bf16 was not measured, / the peer's "
             "time; under 1 means we are faster)", ""]
    head = ["config", "what", "ours fp32", "ours tf32", "ours bf16"] + [f"torch {m} {d}" for m, d in PEER_COLUMNS]
    head += [f"ratio vs {m} {d}" for m, d in PEER_COLUMNS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if ours is None:
        lines.append("| (no end-to-end benchmark output) |")
    configs = sorted({k.split("/")[1] for k in (ours or {}) if k.startswith(("BM_train_step/", "BM_sample/"))})
    for config in configs:
        measures = [("train step", "BM_train_step/{c}/{p}", "step_ms")]
        steps = sorted({int(k.split("/")[2]) for k in ours if k.startswith(f"BM_sample/{config}/")})
        measures += [(f"sample {s} step{'s' if s > 1 else ''}", f"BM_sample/{{c}}/{s}/{{p}}",
                      "sample_1step_ms" if s == 1 else None) for s in steps]
        for what, pattern, peer_key in measures:
            mine = {p: (ours.get(pattern.format(c=config, p=p)) or {}).get("ms") for p in ("fp32", "tf32", "bf16")}
            cells = [config, what, fmt(mine["fp32"]), fmt(mine["tf32"]), fmt(mine["bf16"])]
            best = mine["bf16"] or mine["tf32"]
            theirs = []
            for mode, dtype in PEER_COLUMNS:
                r = (peer or {}).get((config, mode, dtype))
                v = r.get(peer_key) if (r and peer_key) else None
                theirs.append(v)
                cells.append(fmt(v) if r is None or "error" not in r else "error")
            for v in theirs:
                cells.append(fmt(best / v, 3) if (v and best) else "—")
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    extra = []
    for config in configs:
        for prec in ("tf32", "bf16"):
            r = (ours or {}).get(f"BM_train_step/{config}/{prec}") or {}
            if "images/s" in r:
                extra.append(f"{config}: ours ({prec}) {fmt(r['images/s'])} images/s, {fmt(r.get('TFLOP/s'))} TFLOP/s")
        for mode, dtype in PEER_COLUMNS:
            p = (peer or {}).get((config, mode, dtype))
            if p and "tflops" in p:
                extra.append(f"{config}: torch {mode} {dtype} {fmt(p['images_per_s'])} images/s, {fmt(p['tflops'])} TFLOP/s")
            elif p and "error" in p:
                extra.append(f"{config}: torch {mode} {dtype} failed: {p['error'][:120]}")
    if peer is None:
        extra.append("(no peer output)")
    lines += [f"- {e}" for e in extra] + [""]
    return lines


def ceiling(kernels, name):
    r = (kernels or {}).get(name) or {}
    return r.get("GB/s") or r.get("TFLOP/s")


def kernel_table(kernels):
    lines = ["### Kernels (median µs; fraction = achieved rate / measured ceiling)", ""]
    if kernels is None:
        return lines + ["(no kernel benchmark output)", ""]
    ceil_copy = ceiling(kernels, "BM_ceiling_copy")
    ceil_fp32 = ceiling(kernels, "BM_ceiling_matmul_fp32")
    ceil_tf32 = ceiling(kernels, "BM_ceiling_matmul_tf32")
    ceil_bf16 = ceiling(kernels, "BM_ceiling_matmul_bf16")
    lines.append(f"Ceilings: device copy {fmt(ceil_copy)} GB/s; matmul fp32 {fmt(ceil_fp32)}, TF32 {fmt(ceil_tf32)}, "
                 f"bf16 {fmt(ceil_bf16)} TFLOP/s.")
    lines.append("")
    groups = {}
    for name, r in kernels.items():
        parts = name.split("/")
        if len(parts) < 2 or parts[0].startswith("BM_ceiling") or parts[1] not in ("fused", "unfused", "cpu"):
            continue
        key = (parts[0][3:] if parts[0].startswith("BM_") else parts[0], "/".join(parts[2:]))
        groups.setdefault(key, {})[parts[1]] = r
    head = ["kernel", "shape", "ours µs", "unfused µs", "cpu µs", "ours rate", "fraction of ceiling",
            "unfused / ours", "cpu / ours"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (kernel, shape), impls in sorted(groups.items()):
        f, u, c = impls.get("fused", {}), impls.get("unfused", {}), impls.get("cpu", {})
        us = lambda r: r.get("ms") * 1e3 if "ms" in r else None  # noqa: E731
        rate, frac = "—", "—"
        if "GB/s" in f:
            rate = f"{fmt(f['GB/s'])} GB/s"
            frac = fmt(f["GB/s"] / ceil_copy, 2) if ceil_copy else "—"
        elif "TFLOP/s" in f:
            rate = f"{fmt(f['TFLOP/s'])} TFLOP/s"
            ceil = (ceil_bf16 if "bf16" in kernel or "cudnn" in kernel else
                    ceil_tf32 if "tf32" in kernel or "tf32" in shape else ceil_fp32)
            frac = fmt(f["TFLOP/s"] / ceil, 2) if ceil else "—"
        fu, uu, cu = us(f), us(u), us(c)
        cells = [kernel, shape, fmt(fu) if "error" not in f else "error", fmt(uu), fmt(cu), rate, frac,
                 fmt(uu / fu, 3) if (fu and uu) else "—", fmt(cu / fu, 3) if (fu and cu) else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def cudnn_table(kernels):
    """The bf16 tensor-core attention beside cuDNN's fused attention (BM_attention_cudnn_*), shape by shape."""
    if not kernels:
        return []
    head = ["direction", "shape", "bf16 tensor cores µs", "cuDNN µs", "cuDNN / ours"]
    lines = ["### bf16 attention: ours and cuDNN's (SDPA)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, ours in sorted(kernels.items()):
        parts = name.split("/")
        for d in ("forward", "backward"):
            if parts[0] != f"BM_attention_bf16tc_{d}":
                continue
            theirs = kernels.get("/".join([f"BM_attention_cudnn_{d}"] + parts[1:]), {})
            o, c = ours.get("ms"), theirs.get("ms")
            cells = [d, "/".join(parts[2:]), fmt(o * 1e3) if o else "error",
                     fmt(c * 1e3) if c else theirs.get("error", "—")[:60].replace("|", "/"), fmt(c / o, 3) if (o and c) else "—"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--end-to-end", dest="e2e")
    ap.add_argument("--peer")
    ap.add_argument("--kernels", action="append", default=[], help="kernels_bench JSON; repeatable (merged)")
    ap.add_argument("--card", default="unknown card")
    ap.add_argument("--commit", default="unknown commit")
    a = ap.parse_args(argv)
    try:
        ours, peer = load_benchmarks(a.e2e), load_peer(a.peer)
        kernels = None
        for path in a.kernels:
            part = load_benchmarks(path)
            if part is not None:
                kernels = {**(kernels or {}), **part}
    except (OSError, ValueError, KeyError) as e:
        print(f"perf_table: cannot read the inputs: {e}", file=sys.stderr)
        return 2
    out = [f"Card: {a.card}; commit {a.commit}.", ""]
    out += end_to_end_table(ours, peer)
    out += kernel_table(kernels)
    out += cudnn_table(kernels)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
