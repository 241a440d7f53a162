"""Token priors on shapes (issue 13): the autoregressive prior's KV cache against recomputing the whole sequence
(its peer, same model, same tokens, same run), and MaskGIT's network calls against AR's.

shapes-ar-t2i and shapes-maskgit-t2i are trained with imgen.train.train on a shapes-vqgan tokenizer (--tokenizer
DIR, else one is trained into OUT/shapes-vqgan), or reused from OUT/<preset>. J:
  ar.ms_per_image_cached / ar.ms_per_image_uncached / ar.kv_cache_speedup   same tokens drawn both ways (checked)
  ar.nfe, maskgit.nfe                                   network calls to draw one image, counted (rerank=1)
  maskgit.nfe_ratio_vs_ar                                                AR's calls / MaskGIT's
  {ar, maskgit}.adherence                     imgen.metrics.adherence on held-out prompts, the presets' sampling:
                                              16 candidates per image, the one shapes-scenes-clip scores best kept
  {ar, maskgit}.adherence_no_rerank                                      the same with one candidate per image
  {ar, maskgit}.rerank, .calls_per_kept_image    candidates per image; nfe * rerank (nfe batched calls of rerank rows)
  ar.ms_per_image_reranked, maskgit.ms_per_image              generate() per kept image, reranking and decoding included
  {ar, maskgit}.train_steps                                              the budget each was trained with
  ar.sliding_window                     scenes twice the trained width, drawn through a sliding window (VQGAN sec. 3.2),
                                        in benchmarks/results/token_priors_wide.png

    OMP_NUM_THREADS=1 python benchmarks/token_priors.py --tokenizer runs/shapes-vqgan           # presets' budgets
    OMP_NUM_THREADS=1 python benchmarks/token_priors.py --quick --tokenizer runs/shapes-vqgan   # 150 steps, n=50
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import imgen
from imgen.images import save_grid
from imgen.metrics.adherence import adherence
from imgen.presets import get_preset
from imgen.train import train

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_STEPS, QUICK_N = 150, 50


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} training steps per prior, n={QUICK_N}")
    p.add_argument("--tokenizer", help="a trained shapes-vqgan directory (default: train one into OUT/shapes-vqgan)")
    p.add_argument("--out", default="runs/bench-token-priors", help="where models are trained / reused")
    p.add_argument("--steps", type=int, help="training steps per prior (default: the presets'; quick 150)")
    p.add_argument("--n", type=int, help="held-out prompts for adherence (default 200, quick 50)")
    p.add_argument("--batch", type=int, default=16, help="images per sampling call in the timing")
    return p


def trained(name: str, out: Path, tokenizer: str, steps: int | None) -> Path:
    cfg = get_preset(name)
    cfg.method.options["tokenizer"] = tokenizer
    if steps is not None:
        cfg.train.steps, cfg.train.ckpt_every = steps, min(cfg.train.ckpt_every, steps)
    state = out / "train_state.json"
    if not (state.is_file() and json.loads(state.read_text())["step"] >= cfg.train.steps):
        train(cfg, out, progress=True)
    return out


def timed(fn, repeats: int = 2) -> float:
    fn()  # warm-up
    tic = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - tic) / repeats


def count_calls(model, fn) -> int:
    calls = []
    hook = model.net.register_forward_hook(lambda *_: calls.append(1))
    try:
        fn()
    finally:
        hook.remove()
    return len(calls)


def reranking(model, n: int) -> dict:
    """Network calls, candidates and held-out adherence with the preset's reranking and without it."""
    nfe, k = count_calls(model, lambda: model.generate(["a red circle"], rerank=1)), model.config.sample.rerank
    return {"nfe": nfe, "rerank": k, "reranker": model.config.sample.reranker, "calls_per_kept_image": nfe * k,
            "train_steps": model.config.train.steps, "adherence": adherence(model, n=n),
            "adherence_no_rerank": adherence(model, n=n, rerank=1)}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    steps = args.steps or (QUICK_STEPS if args.quick else None)
    n = args.n or (QUICK_N if args.quick else 200)
    tokenizer = args.tokenizer
    if not tokenizer:
        tokenizer = str(out / "shapes-vqgan")
        if not (Path(tokenizer) / "ema.safetensors").is_file():
            train(get_preset("shapes-vqgan"), tokenizer, progress=True)
    J = {"quick": args.quick, "tokenizer": tokenizer, "n_prompts": n, "batch": args.batch}

    ar = imgen.load(trained("shapes-ar-t2i", out / "shapes-ar-t2i", tokenizer, steps))
    b = args.batch
    cond = {**ar.net.encode(["a red circle in the top left"] * b), "drop": torch.zeros(b, dtype=torch.bool)}
    draw = lambda cache: ar.method.sample_tokens(ar.net, b, cond, torch.Generator().manual_seed(0),  # noqa: E731
                                                 cfg=ar.config.sample.cfg, use_cache=cache)
    same = torch.equal(draw(True), draw(False))
    cached, uncached = timed(lambda: draw(True)), timed(lambda: draw(False))
    J["ar"] = {"ms_per_image_cached": 1e3 * cached / b, "ms_per_image_uncached": 1e3 * uncached / b,
               "kv_cache_speedup": uncached / cached, "same_tokens": same,
               "ms_per_image_reranked": 1e3 * timed(lambda: ar.generate(["a red circle in the top left"] * b)) / b,
               **reranking(ar, n)}
    print(json.dumps(J["ar"]), flush=True)
    prompts = ["a red circle in the top left", "a blue square at the bottom", "a big green triangle"]
    wide_cond = {**ar.net.encode(prompts), "drop": torch.zeros(len(prompts), dtype=torch.bool)}
    wide = ar.method.sample_wide(ar.net, len(prompts), 2 * ar.net.token_grid[1], wide_cond,
                                 torch.Generator().manual_seed(0), cfg=ar.config.sample.cfg)
    RESULTS.mkdir(exist_ok=True)
    save_grid(ar.method.decode_wide(wide), RESULTS / "token_priors_wide.png", nrow=1, scale=4)
    J["ar"]["sliding_window"] = {"prompts": prompts, "token_grid": list(wide.shape[1:]),
                                 "png": "benchmarks/results/token_priors_wide.png"}

    mg = imgen.load(trained("shapes-maskgit-t2i", out / "shapes-maskgit-t2i", tokenizer, steps))
    mg_time = timed(lambda: mg.generate(["a red circle in the top left"] * b))
    J["maskgit"] = {"ms_per_image": 1e3 * mg_time / b, "steps": mg.config.sample.steps, **reranking(mg, n)}
    J["maskgit"]["nfe_ratio_vs_ar"] = J["ar"]["nfe"] / J["maskgit"]["nfe"]
    print(json.dumps(J["maskgit"]), flush=True)

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("token_priors_quick.json" if args.quick else "token_priors.json")
    path.write_text(json.dumps(J, indent=2) + "\n")
    print(f"wrote {path}")
    return J


if __name__ == "__main__":
    main()
