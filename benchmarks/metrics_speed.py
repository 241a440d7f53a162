"""Speed of imgen's metrics against torchmetrics, measured in the same run on the same inputs.

1. FID and KID on two precomputed (N, D) feature sets (default 10k vs 10k, D = 2048, KID 100 subsets of 1000):
   imgen.metrics (streaming float64 stats + eigh-based trace sqrt; batched KID) vs torchmetrics with a
   pass-through feature module. Values are compared too.
2. End-to-end `imgen eval` (folder -> features -> FID + KID) in images/s vs torchmetrics fed the same images
   through the same feature network (shapes-eval) and the same folder loader.

    python benchmarks/metrics_speed.py            # full sizes, prints JSON
    python benchmarks/metrics_speed.py --quick    # small sizes, a smoke run

Time on a shared 2-core machine (OMP_NUM_THREADS=1, --threads 2 as by default): --quick measured 53 s. The full run
is an estimate, not measured: the FID/KID part scales with n * dim^2 and subsets * subset_size^2 * dim (80x the
quick sizes, ~12 s of its 53 s) and the end-to-end part with the image count (5x), so roughly 15-20 min.
Nothing is trained; the end-to-end images are rendered into a temporary folder each run.

Ratios are torchmetrics time / imgen time (> 1 means imgen is faster). Each pair is run `--repeats` times,
alternating imgen and torchmetrics, and the best time of each is kept, so load from other processes on a
shared machine hits both alike.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgen.metrics.fid import frechet_distance  # noqa: E402
from imgen.metrics.kid import kid  # noqa: E402
from imgen.metrics.references import import_torchmetrics  # noqa: E402
from imgen.metrics.stats import RunningStats  # noqa: E402

import_torchmetrics()
from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: E402
from torchmetrics.image.kid import KernelInceptionDistance  # noqa: E402

warnings.filterwarnings("ignore", message=".*will save all extracted features.*")


class PassThrough(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


class FeatureModule(torch.nn.Module):
    """An imgen extractor as a torchmetrics custom feature network (float images in [0, 1])."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor
        self.num_features = extractor.dim

    def forward(self, x):
        return self.extractor(x * 2 - 1)[0]


def race(ours, theirs, repeats):
    """Alternate the two callables `repeats` times; return (our value, best time, their value, best time)."""
    best = [float("inf"), float("inf")]
    values = [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((ours, theirs)):
            t = time.perf_counter()
            values[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return values[0], best[0], values[1], best[1]


def fake_features(n, dim, seed, shift=0.0):
    """Non-negative, correlated features like Inception pool activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) / dim ** 0.5
    return torch.relu(torch.randn(n, dim, generator=g) @ mix + shift + 0.5)


def bench_features(n, dim, subsets, subset_size, batch, repeats):
    real, gen = fake_features(n, dim, 0), fake_features(n, dim, 1, shift=0.05)

    def imgen_fid():
        a, b = RunningStats(dim), RunningStats(dim)
        for i in range(0, n, batch):
            a.update(real[i:i + batch])
            b.update(gen[i:i + batch])
        return frechet_distance(a.mean, a.cov, b.mean, b.cov)

    def tm_fid():
        m = FrechetInceptionDistance(feature=PassThrough(dim))
        for i in range(0, n, batch):
            m.update(real[i:i + batch], real=True)
            m.update(gen[i:i + batch], real=False)
        return float(m.compute())

    def imgen_kid():
        return kid(real, gen, subsets, subset_size, seed=0)[0]

    def tm_kid():
        m = KernelInceptionDistance(feature=PassThrough(dim), subsets=subsets, subset_size=subset_size)
        for i in range(0, n, batch):
            m.update(real[i:i + batch], real=True)
            m.update(gen[i:i + batch], real=False)
        torch.manual_seed(0)
        return float(m.compute()[0])

    out = {}
    for name, ours, theirs in (("fid", imgen_fid, tm_fid), ("kid", imgen_kid, tm_kid)):
        v_ours, t_ours, v_tm, t_tm = race(ours, theirs, repeats)
        out[name] = {"imgen_s": round(t_ours, 3), "torchmetrics_s": round(t_tm, 3), "ratio": round(t_tm / t_ours, 3),
                     "imgen_value": v_ours, "torchmetrics_value": v_tm, "rel_diff": abs(v_ours - v_tm) / abs(v_tm)}
    t_ours = out["fid"]["imgen_s"] + out["kid"]["imgen_s"]
    t_tm = out["fid"]["torchmetrics_s"] + out["kid"]["torchmetrics_s"]
    out["fid_plus_kid"] = {"imgen_s": round(t_ours, 3), "torchmetrics_s": round(t_tm, 3), "ratio": round(t_tm / t_ours, 3)}
    return out


def bench_end_to_end(n, subsets, subset_size, batch, features, repeats):
    from imgen.data import load_dataset
    from imgen.images import save_pngs
    from imgen.metrics.evaluate import evaluate, resolve_source
    from imgen.metrics.features import get_extractor

    with tempfile.TemporaryDirectory() as tmp:
        ref_ds = load_dataset("shapes", n=n, seed=0)
        gen_ds = load_dataset("shapes", n=n, seed=1)
        for name, ds in (("ref", ref_ds), ("gen", gen_ds)):
            for i in range(0, n, 1000):
                save_pngs(ds.get(np.arange(i, min(i + 1000, n)))["image"], Path(tmp) / name, prefix=f"{i:06d}_")

        def ours():
            r = evaluate(resolve_source(f"{tmp}/gen"), resolve_source(f"{tmp}/ref", role="--ref"), ("fid", "kid"),
                         features, batch_size=batch, kid_subsets=subsets, kid_subset_size=subset_size,
                         use_cache=False, progress=False)
            return r["metrics"][f"fid[{features}]"]

        def theirs():
            module = FeatureModule(get_extractor(features))
            fid_m = FrechetInceptionDistance(feature=module, normalize=True)
            kid_m = KernelInceptionDistance(feature=module, subsets=subsets, subset_size=subset_size, normalize=True)
            for name, real in (("ref", True), ("gen", False)):
                ds = load_dataset("folder", path=f"{tmp}/{name}")
                for i in range(0, len(ds), batch):
                    x = (ds.get(np.arange(i, min(i + batch, len(ds))))["image"] + 1) / 2
                    fid_m.update(x, real=real)
                    kid_m.update(x, real=real)
            kid_m.compute()
            return float(fid_m.compute())

        v_ours, t_ours, v_tm, t_tm = race(ours, theirs, repeats)
    images = 2 * n
    return {"images": images, "features": features, "imgen_images_per_s": round(images / t_ours, 1),
            "torchmetrics_images_per_s": round(images / t_tm, 1), "ratio": round(t_tm / t_ours, 3),
            "imgen_fid": v_ours, "torchmetrics_fid": v_tm, "fid_rel_diff": abs(v_ours - v_tm) / abs(v_tm)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000, help="features per set")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--subsets", type=int, default=100)
    p.add_argument("--subset-size", type=int, default=1000)
    p.add_argument("--images", type=int, default=5000, help="images per set for the end-to-end run")
    p.add_argument("--features", default="shapes-eval")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per pair; best time kept")
    p.add_argument("--quick", action="store_true", help="n=2000, dim=512, 20 subsets of 500, 1000 images")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.n, args.dim, args.subsets, args.subset_size, args.images = 2000, 512, 20, 500, 1000
    torch.set_num_threads(args.threads)
    result = {"benchmark": "metrics_speed", "quick": args.quick,
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": args.threads, "n": args.n, "dim": args.dim, "kid_subsets": args.subsets,
              "kid_subset_size": args.subset_size, "repeats": args.repeats}
    result.update(bench_features(args.n, args.dim, args.subsets, args.subset_size, args.batch, args.repeats))
    result["end_to_end"] = bench_end_to_end(args.images, args.subsets, min(args.subset_size, args.images),
                                            args.batch, args.features, args.repeats)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
