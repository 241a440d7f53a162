"""Text-to-image backbones at roughly equal compute: U-Net cross-attention vs the DiT paper's three conditioning
variants (Peebles & Xie 2023, sec. 3.2 and Fig. 5: adaLN-Zero, cross-attention, in-context tokens).

All four are preset shapes-t2i (24x24 one-object shapes, flow matching, the jointly trained text transformer,
batch, LR schedule, EMA, sampler, steps, CFG) with only the backbone swapped:

    unet         the preset's U-Net (cross-attention at 12 and 6 px + pooled text in the time embedding, AdaGN)
    dit_adaln    DiT, patch 2, dim 96, depth 6, 4 heads, adaLN-Zero (pooled text joins the time embedding c)
    dit_cross    the same DiT with a cross-attention layer per block over [t, pooled text, text tokens]
    dit_context  the same DiT with [t, pooled text, text tokens] appended to the image tokens (in-context)

The DiTs share one shape, as in the paper's comparison; their MACs per image (imgen.nn.flops.count_macs of the
backbone, one forward pass at 24 padded text tokens) land within +-25% of the U-Net's, checked at start-up.
The text encoder (identical in all four) is counted separately. Each model is trained with imgen.train.train for
--steps steps (same seed), then evaluated on --n-eval held-out prompts (held-out (shape, colour) pairs and caption
templates, imgen.metrics.adherence): adherence read by shapes-eval, FID[shapes-eval] of the generated images vs the
real renders of the same held-out scenes (needs n-eval > 128, the feature dimension; KID is given at any n), the
median images/s of the training log, and sampling seconds per image (the preset's sampler, steps and CFG).

    OMP_NUM_THREADS=1 python benchmarks/t2i_backbones.py --out runs/t2i_backbones            # ~1 h (below)
    OMP_NUM_THREADS=1 python benchmarks/t2i_backbones.py --out runs/t2ib_smoke --steps 60 --n-eval 40
    OMP_NUM_THREADS=1 python benchmarks/t2i_backbones.py --quick     # 15 steps each, 32 prompts, 10 sampler steps
Writes OUT/t2i_backbones.json, OUT/t2i_backbones.png (bar chart) and OUT/samples_<name>.png (the first 16 held-out
prompts, prompts listed in the JSON); prints the JSON. Models already trained in OUT/<name> are reused (a
shorter run is resumed to --steps). --quick caches its models in OUT/quick.

Time on a shared 2-core machine (OMP_NUM_THREADS=1): --quick measured 1 min 49 s from scratch (no shipped model
has these backbones, so all four are trained, for 15 steps). The full run (600 steps each, 200 prompts at the
preset's 25 sampler steps) is an estimate from the quick run's per-step times, not a full run: training
600 x (1.57 + 1.31 + 1.22 + 1.26) s/step ~54 min, sampling 200 prompts with each backbone (~1.4 s per prompt for
the four together at 25 steps) ~5 min: ~1 h.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import imgen
from imgen.config import Config
from imgen.data import load_dataset
from imgen.data.shapes import render_scenes, sample_scene_attributes
from imgen.images import save_grid
from imgen.metrics.adherence import HELDOUT_SEED, adherence_prompts, score_images
from imgen.metrics.evaluators import load_evaluator
from imgen.metrics.fid import fid
from imgen.metrics.kid import kid
from imgen.nn import build_net_from_config
from imgen.nn.flops import count_macs, count_params
from imgen.presets import get_preset
from imgen.train import resolve_config, train

PRESET = "shapes-t2i"
DIT = {"patch_size": 2, "dim": 96, "depth": 6, "num_heads": 4}
BACKBONES = {  # name -> (backbone, backbone_options or None for the preset's U-Net, label)
    "unet": ("unet", None, "U-Net cross-attn"),
    "dit_adaln": ("dit", {**DIT, "conditioning": "adaln_zero"}, "DiT adaLN-Zero"),
    "dit_cross": ("dit", {**DIT, "conditioning": "cross_attn"}, "DiT cross-attn"),
    "dit_context": ("dit", {**DIT, "conditioning": "in_context"}, "DiT in-context"),
}
MAC_TOLERANCE = 0.25  # DiT MACs per image within +-25% of the U-Net's
MAC_BATCH = 2  # MACs are linear in the batch


def backbone_configs(steps: int | None = None, seed: int = 0, sample_steps: int | None = None) -> dict[str, Config]:
    """The four configs: preset shapes-t2i with its backbone swapped (everything else identical)."""
    configs = {}
    for name, (backbone, options, label) in BACKBONES.items():
        c = get_preset(PRESET)
        if options is not None:
            c.net.options["backbone"] = backbone
            c.net.options["backbone_options"] = dict(options)
        c.description = f"{PRESET} with backbone {label}"
        c.train.seed = seed
        if steps is not None:
            c.train.steps = steps
            c.train.ckpt_every = min(c.train.ckpt_every, steps)
        if sample_steps is not None:
            c.sample.steps = sample_steps
        configs[name] = c
    return configs


def measure_cost(configs: dict[str, Config]) -> dict[str, dict]:
    """Params and MACs per image (one forward pass) of each net's backbone and text encoder, on training captions."""
    first = next(iter(configs.values()))
    ds = load_dataset(first.data.name, **first.data.options)
    batch = ds.get(np.arange(MAC_BATCH))
    x, t = batch["image"], torch.full((MAC_BATCH,), 0.5)
    keep = torch.zeros(MAC_BATCH, dtype=torch.bool)
    out = {}
    for name, c in configs.items():
        torch.manual_seed(0)
        net = build_net_from_config(resolve_config(copy.deepcopy(c), ds)).eval()
        enc = net.encode(batch["caption"])
        total = count_macs(net, x, t, {"caption": batch["caption"], "drop": keep})
        backbone = count_macs(net.backbone, x, t, {**enc, "drop": keep})
        out[name] = {"backbone_params": count_params(net.backbone),
                     "text_encoder_params": count_params(net.text_encoder),
                     "backbone_macs_per_image": backbone // MAC_BATCH,
                     "text_encoder_macs_per_image": (total - backbone) // MAC_BATCH}
    ref = out["unet"]["backbone_macs_per_image"]
    for row in out.values():
        row["macs_vs_unet"] = round(row["backbone_macs_per_image"] / ref, 3)
        row["macs_within_25pct"] = abs(row["macs_vs_unet"] - 1) <= MAC_TOLERANCE
    return out


def real_heldout_renders(n: int, image_size: int, seed: int = HELDOUT_SEED) -> torch.Tensor:
    """The ground-truth renders of the n held-out adherence scenes (the same attributes adherence_prompts uses)."""
    a = sample_scene_attributes(seed, np.arange(n), "heldout", max_objects=1, templates="heldout")
    return render_scenes(a, image_size, a["offset"])


@torch.no_grad()
def evaluate(model_dir: Path, n: int, seed: int, batch: int, evaluator,
             real_feats: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Adherence, FID/KID vs real renders and sampling time of one trained model on n held-out prompts."""
    m = imgen.load(model_dir)
    prompts, truth = adherence_prompts(n)
    tic = time.perf_counter()
    # as imgen.metrics.adherence.adherence, keeping the images for FID and the grids
    images = torch.cat([m.generate(prompts[i:i + batch], seed=seed + i) for i in range(0, n, batch)])
    sample_s = time.perf_counter() - tic
    rates = score_images(images, truth, evaluator)
    feats = evaluator.features(images)
    row = {"adherence": {k: round(rates[k], 4) for k in ("shape_color", "pos", "all3", "shape", "color")},
           "fid_shapes_eval": round(fid(feats, real_feats, "shapes-eval"), 3) if n > evaluator.dim else None,
           "kid_shapes_eval": round(kid(feats, real_feats, subsets=50, subset_size=min(n, 1000), seed=seed)[0], 5),
           "sample_s_per_image": round(sample_s / n, 4)}
    return row, images


def train_row(cfg: Config, out: Path) -> dict:
    """Train (or resume / reuse) one model; the log's median images/s and its final loss. The training wall time
    is summed over resumed runs (OUT/<name>/wall_s.json)."""
    state = out / "train_state.json"
    done = state.is_file() and json.loads(state.read_text())["step"] >= cfg.train.steps
    record = out / "wall_s.json"
    before = json.loads(record.read_text())["wall_s"] if record.is_file() and state.is_file() else 0.0
    tic = time.perf_counter()
    train(cfg, out, progress=True)
    if not done:
        record.write_text(json.dumps({"wall_s": before + time.perf_counter() - tic}) + "\n")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"train_steps": cfg.train.steps,
            "train_images_per_s": round(statistics.median(r["images_per_s"] for r in log), 2),
            "train_wall_s": round(json.loads(record.read_text())["wall_s"], 1) if record.is_file() else None,
            "final_loss": round(float(np.mean([r["loss"] for r in log[-3:]])), 4),
            "first_loss": round(log[0]["loss"], 4)}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["backbones"])
    rows = [result["backbones"][k] for k in names]
    labels = [r["label"].replace(" ", "\n", 1) for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    width, xs = 0.26, np.arange(len(names))
    for j, (key, title) in enumerate((("shape_color", "shape+colour"), ("pos", "position"), ("all3", "all three"))):
        axes[0].bar(xs + (j - 1) * width, [r["adherence"][key] for r in rows], width, label=title)
    axes[0].set(title=f"adherence ({result['n_eval']} held-out prompts)", ylim=(0, 1))
    axes[0].legend(fontsize=7)
    fids = [r["fid_shapes_eval"] for r in rows]
    if all(f is not None for f in fids):
        axes[1].bar(xs, fids, color="C3")
        axes[1].set(title="FID[shapes-eval] (lower is better)")
    else:
        axes[1].bar(xs, [r["kid_shapes_eval"] for r in rows], color="C3")
        axes[1].set(title="KID[shapes-eval] (n-eval <= 128: no FID)")
    axes[2].bar(xs, [r["train_images_per_s"] for r in rows], color="C4")
    axes[2].set(title=f"train images/s ({result['torch_threads']} thread)")
    axes[3].bar(xs, [r["backbone_macs_per_image"] / 1e6 for r in rows], color="C5")
    ref = rows[names.index("unet")]["backbone_macs_per_image"] / 1e6 if "unet" in names else None
    if ref:
        axes[3].axhspan(ref * (1 - MAC_TOLERANCE), ref * (1 + MAC_TOLERANCE), color="0.9", zorder=0,
                        label="U-Net +-25%")
        axes[3].legend(fontsize=7)
    axes[3].set(title="backbone MMACs / image")
    for ax in axes:
        ax.set_xticks(xs, labels, fontsize=8)
    fig.suptitle(f"{PRESET} backbones, {result['train_steps']} training steps, batch {result['batch_size']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/t2i_backbones")
    p.add_argument("--steps", type=int, default=600, help="training steps of every model (preset: 1200)")
    p.add_argument("--n-eval", type=int, default=200, help="held-out prompts for adherence and FID (FID needs > 128)")
    p.add_argument("--only", default=",".join(BACKBONES), help=f"comma-separated subset of {', '.join(BACKBONES)}")
    p.add_argument("--batch", type=int, default=100, help="prompts per sampling batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default: the preset's)")
    p.add_argument("--quick", action="store_true",
                   help="15 training steps per backbone, 32 held-out prompts, 10 sampler steps; models in OUT/quick")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.out, args.steps, args.n_eval = str(Path(args.out) / "quick"), 15, min(args.n_eval, 32)
        args.sample_steps = args.sample_steps or 10
    only = args.only.split(",")
    if unknown := [k for k in only if k not in BACKBONES]:
        raise SystemExit(f"unknown backbone(s) {unknown}; choose from {', '.join(BACKBONES)}")
    if args.steps < 1 or args.n_eval < 2:
        raise SystemExit("--steps must be >= 1 and --n-eval >= 2")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    configs = backbone_configs(args.steps, args.seed, args.sample_steps)
    cost = measure_cost(configs)
    print(json.dumps({"cost": cost}, indent=1), flush=True)
    configs = {k: configs[k] for k in only}
    ev = load_evaluator("shapes-eval")
    size = configs[only[0]].data.options["image_size"]
    real_feats = ev.features(real_heldout_renders(args.n_eval, size))
    # the floor: real renders of other held-out scenes vs these
    real_other = ev.features(real_heldout_renders(args.n_eval, size, seed=HELDOUT_SEED + 1))
    rows = {}
    for name, cfg in configs.items():
        tr = train_row(cfg, out / name)
        ev_row, images = evaluate(out / name, args.n_eval, args.seed, args.batch, ev, real_feats)
        save_grid(images[:16], out / f"samples_{name}.png", nrow=8, scale=4)
        rows[name] = {"label": BACKBONES[name][2], "backbone": cfg.net.options["backbone"],
                      "backbone_options": cfg.net.options["backbone_options"], **cost[name], **tr, **ev_row}
        print(json.dumps({name: rows[name]}), flush=True)

    first = configs[only[0]]
    result = {
        "benchmark": "t2i_backbones", "preset": PRESET, "quick": args.quick,
        "budget": "same optimizer steps, batch, LR schedule, EMA and seed for every backbone",
        "train_steps": args.steps, "batch_size": first.data.batch_size, "lr": first.train.lr,
        "warmup": first.train.warmup, "sampler": first.sample.sampler, "sample_steps": first.sample.steps,
        "cfg": first.sample.cfg, "n_eval": args.n_eval, "seed": args.seed, "torch_threads": torch.get_num_threads(),
        "macs": "backbone multiply-adds of one forward pass per image (imgen.nn.flops), 24 padded text tokens",
        "fid_real_floor": round(fid(real_other, real_feats, "shapes-eval"), 3) if args.n_eval > ev.dim else None,
        "backbones": rows,
        "sample_prompts": adherence_prompts(16)[0],
    }
    (out / "t2i_backbones.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / "t2i_backbones.png")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
