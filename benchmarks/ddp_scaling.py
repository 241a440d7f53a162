"""Data-parallel scaling: training images/s of one preset with 1 and 2 processes (`imgen train --nproc N`, torchrun,
gloo on CPU; imgen.distributed), the same global batch split over the processes.

images/s is read from the run's log.jsonl (the Trainer logs it per window of log_every steps, on rank 0, for the
global batch), the median over the windows after the first (start-up, process-group set-up and warm-up excluded).
Each process runs one intra-op thread (OMP_NUM_THREADS=1), so N processes use N cores: on an idle 2-core machine
the ideal ratio is 2; gradient all-reduce per step and any other load on the machine pull it below.

    OMP_NUM_THREADS=1 python benchmarks/ddp_scaling.py            # digits-flow, 300 steps per run
    OMP_NUM_THREADS=1 python benchmarks/ddp_scaling.py --quick    # 80 steps per run

Measured on this shared 2-core machine (load average ~6 from other jobs): --quick 76 s, full 3 min 45 s;
digits-flow 352 images/s with 1 process, 441 with 2 (ratio 1.26); on an idle machine expect more.
Writes benchmarks/results/ddp_scaling.json (--quick: ddp_scaling_quick.json): J["images_per_s"]["1"], ["2"] and
J["ratio"] = ["2"] / ["1"].
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def run(preset: str, nproc: int, steps: int, log_every: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "imgen", "train", preset, "--out", str(out), "--steps", str(steps), "--quiet",
           "--nproc", str(nproc), "--set", f"train.log_every={log_every}", "--set", f"train.ckpt_every={steps}"]
    tic = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - tic
    rates = [json.loads(line)["images_per_s"] for line in (out / "log.jsonl").read_text().splitlines()][1:]
    return {"images_per_s": statistics.median(rates), "windows": len(rates), "wall_s": round(wall, 1)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="80 steps per run (a smoke run)")
    p.add_argument("--preset", default="digits-flow")
    p.add_argument("--steps", type=int, help="steps per run (default 300, --quick 80)")
    p.add_argument("--nprocs", default="1,2", help="process counts to measure")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    steps = args.steps or (80 if args.quick else 300)
    log_every = max(steps // 10, 1)
    from imgen.presets import get_preset

    batch = get_preset(args.preset).data.batch_size
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(v) for v in args.nprocs.split(",")]:
            runs[str(n)] = run(args.preset, n, steps, log_every, Path(tmp) / f"n{n}")
            print(f"{n} process(es): {runs[str(n)]['images_per_s']:.0f} images/s", file=sys.stderr)
    result = {"preset": args.preset, "steps": steps, "global_batch_size": batch, "cpu_count": os.cpu_count(),
              "omp_threads_per_process": 1, "images_per_s": {n: round(r["images_per_s"], 1) for n, r in runs.items()},
              "runs": runs}
    if "1" in runs and "2" in runs:
        result["ratio"] = round(runs["2"]["images_per_s"] / runs["1"]["images_per_s"], 3)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("ddp_scaling_quick.json" if args.quick else "ddp_scaling.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
