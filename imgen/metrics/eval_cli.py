"""`imgen eval GENERATED --ref REF [--metrics fid,kid,is,pr,psnr,ssim,perceptual] [--features NAME] [--json]`

The lead's CLI wires the `eval` subcommand to add_eval_arguments / run_eval; `python -m imgen.metrics.eval_cli`
runs it standalone.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from imgen.errors import ImgenError
from imgen.metrics.evaluate import METRICS, evaluate, resolve_source
from imgen.metrics.features import EXTRACTORS
from imgen.paths import input_file


def add_eval_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("generated", metavar="GENERATED",
                   help="folder of images, or a model directory (with config.json) to sample -n images from")
    p.add_argument("--ref", required=True, help="reference: folder of images or built-in dataset name (digits, shapes, ...)")
    p.add_argument("--metrics", default="fid,kid,pr", help=f"comma list of {','.join(METRICS)} (default fid,kid,pr)")
    p.add_argument("--features", choices=sorted(EXTRACTORS), default=None,
                   help="feature space (default: digits-eval / shapes-eval for those datasets, else inception)")
    p.add_argument("--inception-weights", default=None,
                   help="pt_inception-2015-12-05-6726825d.pth (else $IMGEN_INCEPTION_WEIGHTS or the cache)")
    p.add_argument("--download", action="store_true", help="download the Inception weights if missing (needs network)")
    p.add_argument("-n", "--num-samples", type=int, default=None, help="images to sample from a model (default 1000)")
    p.add_argument("--ref-n", type=int, default=None, help="use the first N reference images (shapes: default 10000)")
    p.add_argument("--ref-split", default=None, help="split of a built-in reference dataset (e.g. train, test)")
    p.add_argument("--image-size", type=int, default=None, help="resize folder images to N x N (needed for mixed sizes)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--k", type=int, default=3, help="neighbours for precision/recall/density/coverage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached reference features")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def format_table(result: dict) -> str:
    rows = [(k, "n/a" if v is None else f"{v:.6g}") for k, v in result["metrics"].items()]
    width = max(len(k) for k, _ in rows) if rows else 6
    lines = [f"generated: {result['generated']} ({result['n_generated']} images)",
             f"reference: {result['reference']} ({result['n_reference']} images)"]
    if result["features"]:
        lines.append(f"features:  {result['features']} (weights {result['fingerprint']})")
    lines += ["", f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(f"\n{result['seconds']:.1f} s, {result['images_per_second']:.0f} images/s")
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> int:
    """Run `imgen eval`; bad input prints one line to stderr and returns 2, each warning one line."""
    try:
        if args.inception_weights and Path(args.inception_weights).exists():  # missing: find_weights says how to get it
            input_file(args.inception_weights, "--inception-weights", "weights file")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _evaluate_args(args)
    except ImgenError as e:
        print(f"imgen eval: error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"imgen eval: warning: {w.message}", file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _evaluate_args(args: argparse.Namespace) -> dict:
    generated = resolve_source(args.generated, n=args.num_samples, image_size=args.image_size, seed=args.seed,
                               role="GENERATED")
    reference = resolve_source(args.ref, n=args.ref_n, split=args.ref_split, image_size=args.image_size,
                               seed=args.seed, role="--ref")
    return evaluate(generated, reference, args.metrics, args.features, args.inception_weights, args.download,
                    args.batch_size, args.kid_subsets, args.kid_subset_size, args.is_splits, args.k, args.seed,
                    use_cache=not args.no_cache, progress=not args.no_progress)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="imgen eval", description="Evaluate generated images against a reference set.")
    return run_eval(add_eval_arguments(p).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
