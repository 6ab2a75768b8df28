"""Checks scripts/perf_table.py on made-up benchmark outputs in the formats it reads (Google Benchmark
JSON with repetitions and aggregates; the peer's JSON lines): the medians picked, the ratios, the
fractions of the ceilings, and clear behaviour on missing or broken inputs.
Usage: perf_table_check.py <path to perf_table.py>"""
import json
import os
import subprocess
import sys
import tempfile

script = sys.argv[1]


def gb(name, ms, reps=None, agg=None, **counters):
    b = {"name": name + "/manual_time", "run_name": name, "real_time": ms * 1e3, "time_unit": "us",
         "run_type": "aggregate" if agg else "iteration"}
    if agg:
        b["aggregate_name"] = agg
        b["name"] += "_" + agg
    b.update(counters)
    return b


def run(*args):
    p = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def row(text, *first_cells):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[: len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no row starting with {first_cells} in:\n{text}")


with tempfile.TemporaryDirectory() as d:
    e2e = os.path.join(d, "e2e.json")
    json.dump({"benchmarks": [
        # repetitions: the median aggregate (20 ms) wins over the mean (30 ms) and the single runs
        gb("BM_train_step/mnist-S2/tf32", 19.0), gb("BM_train_step/mnist-S2/tf32", 50.0),
        gb("BM_train_step/mnist-S2/tf32", 30.0, agg="mean"),
        gb("BM_train_step/mnist-S2/tf32", 20.0, agg="median", **{"images/s": 12800.0, "TFLOP/s": 400.0}),
        # no repetitions: the median of the iterations (40 of 10, 40, 90)
        gb("BM_train_step/mnist-S2/fp32", 10.0), gb("BM_train_step/mnist-S2/fp32", 90.0),
        gb("BM_train_step/mnist-S2/fp32", 40.0),
        gb("BM_train_step/mnist-S2/bf16", 15.0, agg="median"),
        gb("BM_sample/mnist-S2/1/tf32", 2.0, agg="median"), gb("BM_sample/mnist-S2/128/tf32", 256.0, agg="median"),
    ]}, open(e2e, "w"))
    peer = os.path.join(d, "peer.jsonl")
    with open(peer, "w") as f:
        f.write("2.5.0 NVIDIA H100 80GB HBM3\n")
        f.write(json.dumps({"config": "mnist-S2", "mode": "compile", "dtype": "tf32", "step_ms": 25.0,
                            "sample_1step_ms": 4.0, "images_per_s": 10240.0, "tflops": 320.0}) + "\n")
        f.write(json.dumps({"config": "mnist-S2", "mode": "eager", "dtype": "bf16", "error": "out of memory"}) + "\n")
    kern = os.path.join(d, "kernels.json")
    json.dump({"benchmarks": [
        gb("BM_ceiling_copy", 1.0, agg="median", **{"GB/s": 3000.0}),
        gb("BM_ceiling_matmul_fp32", 1.0, agg="median", **{"TFLOP/s": 50.0}),
        gb("BM_attention_forward/fused/32/256/6/64", 0.010, agg="median", **{"TFLOP/s": 25.0}),
        gb("BM_attention_forward/unfused/32/256/6/64", 0.030, agg="median", **{"TFLOP/s": 8.0}),
        gb("BM_attention_forward/cpu/32/256/6/64", 5.0, **{"TFLOP/s": 0.05}),
        gb("BM_ln_modulate_forward/fused/32/256/384", 0.020, agg="median", **{"GB/s": 1500.0}),
    ]}, open(kern, "w"))

    rc, out, err = run("--end-to-end", e2e, "--peer", peer, "--kernels", kern, "--card", "H100", "--commit", "abc")
    assert rc == 0, err
    assert "Card: H100; commit abc." in out
    r = row(out, "mnist-S2", "train step")
    # ours fp32, tf32, bf16, eager tf32, eager bf16, compile tf32, compile bf16, then the four ratios
    assert r[2:9] == ["40", "20", "15", "—", "error", "25", "—"], r
    assert r[11] == "0.6", r  # our bf16 15 ms / the peer's 25 ms
    r = row(out, "mnist-S2", "sample 1 step")
    assert r[3] == "2" and r[4] == "—" and r[7] == "4" and r[11] == "0.5", r  # no bf16 row: TF32's 2 / 4
    r = row(out, "mnist-S2", "sample 128 steps")
    assert r[3] == "256" and r[7] == "—", r  # the peer does not measure 128 steps
    assert "torch eager bf16 failed: out of memory" in out
    r = row(out, "attention_forward", "32/256/6/64")
    assert r[2] == "10" and r[3] == "30" and r[4] == "5000", r
    assert r[6] == "0.5" and r[7] == "3" and r[8] == "500", r  # 25/50 of the fp32 ceiling; 30/10; 5000/10
    r = row(out, "ln_modulate_forward", "32/256/384")
    assert r[5] == "1500 GB/s" and r[6] == "0.5", r

    # missing inputs: a table that says so, not a failure
    rc, out, err = run("--end-to-end", os.path.join(d, "absent.json"))
    assert rc == 0 and "(no end-to-end benchmark output)" in out and "(no kernel benchmark output)" in out, out
    # a broken file: exit 2 and a message naming the problem
    bad = os.path.join(d, "bad.json")
    open(bad, "w").write("{not json")
    rc, out, err = run("--kernels", bad)
    assert rc == 2 and "cannot read the inputs" in err, (rc, err)
print("perf_table checks passed")
