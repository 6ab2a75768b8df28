"""train_images under mpirun: 1, 2 and 3 ranks train the same steps; a checkpoint of 2 ranks resumes
on 1, 2 and 3; a killed rank, a rank that fails, ranks that disagree and an uneven batch each end the
job at once with an error that names the rank.
  cli_test.py WORK TRAIN_IMAGES MPIEXEC [MPIEXEC FLAGS...]"""
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np

FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


def run(cmd, timeout=240):
    t0 = time.monotonic()
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = None, f"timed out after {timeout} s: {e}"
    return rc, out, time.monotonic() - t0


def weights(ckpt, name="model.safetensors"):
    """{tensor: float64 array} of a safetensors file (F32 only, which is what checkpoints hold)."""
    with open(os.path.join(ckpt, name), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype=np.float32).astype(np.float64)
            for k, v in header.items() if k != "__metadata__"}


def max_diff(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return {j["step"]: j["loss"] for j in map(json.loads, f)}


def main(work, train, mpiexec):
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8)
    labels = (np.arange(60) % 3).astype(np.int64)
    np.save(os.path.join(work, "x.npy"), images)
    np.save(os.path.join(work, "y.npy"), labels)
    # batch 36: 18 rows a rank on 2, 12 on 3; lr high enough that the steps move the weights
    base = {"--data-file": os.path.join(work, "x.npy"), "--labels-file": os.path.join(work, "y.npy"),
            "--batch": "36", "--lr": "2e-3", "--warmup": "0", "--seed": "5", "--sample-every": "0", "--log-every": "1"}

    def args(**over):
        """base options with some replaced: args(lr="1e-3", data_file="...")"""
        o = dict(base)
        o.update({"--" + k.replace("_", "-"): v for k, v in over.items()})
        return [*(x for kv in o.items() for x in kv), "-q"]

    common = args()

    def train_run(ranks, out, steps, *extra, expect_ok=True):
        cmd = ([train] if ranks == 0 else [*mpiexec, "-n", str(ranks), train])
        rc, text, secs = run([*cmd, *common, "--steps", str(steps), "--checkpoint-every", "3", "-o",
                              os.path.join(work, out), *extra])
        if expect_ok:
            who = f"{ranks} rank(s)" if ranks else "one process (no mpirun)"
            check(rc == 0, f"{who}, {steps} steps -> {out} ({secs:.1f} s)"
                  + ("" if rc == 0 else f"\n      output: {text.strip()[-800:]}"))
        return rc, text, secs

    # -- the same steps on 1 (plain and under mpirun), 2 and 3 ranks
    train_run(0, "one", 6)
    train_run(1, "one_mpi", 6)
    train_run(2, "two", 6)
    train_run(3, "three", 6)
    last = lambda d: os.path.join(work, d, "checkpoints", "last")
    one = weights(last("one"))
    check(max_diff(weights(last("one_mpi")), one) == 0, "1 rank under mpirun = the plain process, bit for bit")
    # float32: the gradient of 36 rows summed in another order differs by about 36 u |g| (u = 6e-8),
    # a relative 2e-6; AdamW passes a relative gradient error on to the step (lr m / sqrt(v)) at about
    # that size, except where v is tiny. Bound: steps * lr * 1e-3 = 1.2e-5 (measured: about 1.5e-7),
    # while a wrong row, label or noise draw moves weights by about lr = 2e-3 per step.
    tol = 6 * 2e-3 * 1e-3
    for d in ("two", "three"):
        diff = max_diff(weights(last(d)), one)
        check(diff <= tol, f"{d} ranks vs one process after 6 steps: max |w - w_1| = {diff:.3g} (<= {tol:.3g})")
        ema = max_diff(weights(last(d), "ema.safetensors"), weights(last("one"), "ema.safetensors"))
        check(ema <= tol, f"{d} ranks vs one process: EMA max diff {ema:.3g}")
        l1, ln = losses(os.path.join(work, "one")), losses(os.path.join(work, d))
        worst = max(abs(ln[s] - l1[s]) / l1[s] for s in l1)
        check(sorted(ln) == sorted(l1) and worst <= 1e-3,
              f"{d} ranks: the loss curve of one process, worst relative difference {worst:.3g} (<= 1e-3)")
    with open(os.path.join(work, "two", "metrics.jsonl")) as f:
        j = json.loads(f.readline())
    check(j.get("ranks") == 2 and "allreduce_seconds" in j, "metrics.jsonl of 2 ranks: ranks 2 and allreduce_seconds")

    # -- resume a checkpoint of 2 ranks (step 3 of 'two') on 1, 2 and 3 ranks
    half = os.path.join(work, "two", "checkpoints", "step_3")
    for ranks, name in ((0, "r1"), (2, "r2"), (3, "r3")):
        rc, text, _ = train_run(ranks, name, 6, "--resume", half)
        check("resumed from" in text and "at step 3" in text, f"{name}: says it resumed at step 3")
    two = weights(last("two"))
    check(max_diff(weights(last("r2")), two) == 0, "2-rank checkpoint resumed on 2 ranks = the uninterrupted run, bit for bit")
    for name in ("r1", "r3"):
        diff = max_diff(weights(last(name)), two)
        check(diff <= tol, f"2-rank checkpoint resumed on {name[1]} rank(s): max diff to the uninterrupted run {diff:.3g}")
    # the state itself carries over exactly: resumed and saved at once, the files hold the same weights
    for ranks, name in ((0, "s1"), (3, "s3")):
        train_run(ranks, name, 3, "--resume", half)
        for f in ("model.safetensors", "ema.safetensors"):
            check(max_diff(weights(last(name), f), weights(half, f)) == 0,
                  f"resumed on {ranks or 1} rank(s) and saved: {f} = the 2-rank checkpoint's, bit for bit")

    # -- another learning rate on resume: refused, naming the field, unless allowed
    def changed_lr(out, *extra):
        return run([train, *args(lr="1e-3"), "--steps", "6", "-o", os.path.join(work, out), "--resume", half, *extra])

    rc, text, _ = changed_lr("lr_changed")
    check(rc not in (0, None) and "adamw.lr" in text and "--allow-config-change" in text,
          "resume with another --lr is refused, naming adamw.lr and the flag that allows it"
          + ("" if rc not in (0, None) and "adamw.lr" in text else f"\n      output: {text.strip()[-600:]}"))
    rc, text, _ = changed_lr("lr_allowed", "--allow-config-change")
    check(rc == 0 and "at step 3" in text, "... and continued with --allow-config-change"
          + ("" if rc == 0 else f"\n      output: {text.strip()[-600:]}"))

    # -- faults: each ends the whole job quickly with the rank's name
    rc, text, secs = run([*mpiexec, "-n", "2", "sh", "-c",
                          'if [ "${OMPI_COMM_WORLD_RANK:-$PMI_RANK}" = 1 ]; then (sleep 4; kill -9 $$) & fi; exec "$0" "$@"',
                          train, *common, "--steps", "1000000", "--checkpoint-every", "0", "-o",
                          os.path.join(work, "killed")], timeout=120)
    check(rc not in (0, None) and secs < 60 and "rank 1" in text,
          f"a rank killed after 4 s ends the job in {secs:.1f} s (exit {rc}) naming rank 1"
          + ("" if rc not in (0, None) and "rank 1" in text else f"\n      output: {text.strip()[-600:]}"))

    def bad(cmd, words, what):
        rc, text, secs = run(cmd, timeout=120)
        ok = rc not in (0, None) and secs < 60 and all(w in text for w in words)
        check(ok, f"{what}: exit {rc} in {secs:.1f} s" + ("" if ok else f"\n      output: {text.strip()[-600:]}"))

    def rank(**over):
        return [train, *args(steps="5", checkpoint_every="0", out=os.path.join(work, "bad"), **over)]

    missing = os.path.join(work, "missing.npy")
    bad([*mpiexec, "-n", "1", *rank(), ":", "-n", "1", *rank(data_file=missing)],
        ("error on rank 1 of 2", "missing.npy"), "a rank that fails (its data file is missing) stops every rank")
    bad([*mpiexec, "-n", "1", *rank(), ":", "-n", "1", *rank(lr="1e-3")],
        ("rank 1 of 2 disagrees with rank 0 on the training configuration", "adamw"),
        "ranks started with different learning rates are refused at the start")
    bad([*mpiexec, "-n", "1", *rank(resume=half), ":", "-n", "1",
         *rank(resume=os.path.join(work, "two", "checkpoints", "step_6"))],
        ("rank 1 of 2 disagrees with rank 0 on the resume point",),
        "ranks resuming from different checkpoints are refused at the start")
    bad([*mpiexec, "-n", "3", *rank(batch="40")], ("cannot be split evenly over 3 ranks",),
        "a batch of 40 on 3 ranks is refused")

    # -- the paper's other objectives through the same program (DESIGN.md section 7)
    teacher = last("one")
    bad([train, *args(steps="8", checkpoint_every="0", out=os.path.join(work, "cd_bad"),
                      objective="consistency_distillation")],
        ("--teacher PATH",), "consistency distillation without --teacher is refused")
    bad([train, *args(steps="8", checkpoint_every="0", out=os.path.join(work, "cd_bad"),
                      objective="consistency_distillation", teacher=os.path.join(work, "nowhere"))],
        ("--teacher", "nowhere", "does not exist"), "a teacher that does not exist is refused")
    bad([train, *args(steps="3", checkpoint_every="0", out=os.path.join(work, "ct_bad"),
                      objective="consistency_training")],
        ("shorter than one step",), "consistency training shorter than its 7 stages is refused")
    rc, text, _ = train_run(0, "pd", 8, "--objective", "progressive_distillation", "--teacher", teacher)
    check("starts from the teacher" in text, "progressive distillation: the student starts from the teacher")
    check(os.path.exists(os.path.join(last("pd"), "teacher.safetensors")),
          "progressive distillation: its checkpoint holds the teacher")
    with open(os.path.join(last("pd"), "ema.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    check(json.loads(meta["training"])["objective"]["name"] == "progressive_distillation",
          "progressive distillation: the checkpoint's training metadata names the objective")
    # live reflow's reflow rows are spread over the ranks like bootstrap rows: 2 ranks = one process
    train_run(0, "reflow_one", 6, "--objective", "live_reflow")
    train_run(2, "reflow_two", 6, "--objective", "live_reflow")
    diff = max_diff(weights(last("reflow_two")), weights(last("reflow_one")))
    check(diff <= tol, f"live reflow on 2 ranks vs one process: max diff {diff:.3g} (<= {tol:.3g})")

    print("all checks passed" if not FAILURES else f"{len(FAILURES)} check(s) failed", flush=True)
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
