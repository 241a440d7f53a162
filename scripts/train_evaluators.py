"""Train imgen's evaluator networks on the built-in data and write them, with a card, to
imgen/pretrained/evaluators/<name>/{model.safetensors, config.json, CARD.md}.

    python scripts/train_evaluators.py                  # all three (a quarter of an hour on 2 CPU cores)
    python scripts/train_evaluators.py --which digits   # just one

All train with imgen's Trainer (net "evaluator", method "attribute_classifier") into --work/<name>/, a model
directory that a rerun resumes; the shipped folder holds the trained weights and a card.

digits-eval: 8x8 digit classifier, trained on digits split="train", held-out accuracy on split="test".
shapes-eval: attribute classifier for single-object shapes scenes (shape, color, size, pos, bg), trained on a
fresh stream of split="all" scenes: it is a measuring instrument, so it must read the held-out shape/colour
pairs that text-to-image models are tested on. Accuracy is measured on unseen split="heldout" scenes (a separate
seed; every main object has a held-out pair) and on unseen split="train" scenes.
shapes-cells: reads every cell of the 3x3 grid of a one- or two-object scene: what it holds (a shape or EMPTY),
the colour and size of that object (losses only on occupied cells), and the background; trained on a fresh stream
of split="all" scenes with 1-2 objects, tested on unseen split="heldout" two-object scenes and unseen split="all"
scenes (other seeds). imgen.metrics.adherence reads two-object prompts with it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgen.config import Config, DataConfig, MethodConfig, NetConfig, TrainConfig  # noqa: E402
from imgen.data import load_dataset  # noqa: E402
from imgen.data.shapes import (BACKGROUND_NAMES, COLOR_NAMES, POSITION_LABELS, SHAPES, SIZES,  # noqa: E402
                               cell_attributes)
from imgen.metrics.evaluators import EVALUATOR_DIR, save_evaluator  # noqa: E402
from imgen.recipes import fit  # noqa: E402

SHAPES_HEADS = {"shape": list(SHAPES), "color": list(COLOR_NAMES), "size": list(SIZES),
                "pos": list(POSITION_LABELS), "bg": list(BACKGROUND_NAMES)}
CELLS_HEADS = {"cell_shape": list(SHAPES) + ["empty"], "cell_color": list(COLOR_NAMES), "cell_size": list(SIZES),
               "bg": list(BACKGROUND_NAMES)}  # cell heads read all 9 cells (slots in POSITION_LABELS order)


@torch.no_grad()
def accuracy(net, images, labels: dict[str, torch.Tensor], batch: int = 512) -> dict[str, float]:
    """Fraction of labels read right per head, over the labels that are not -1 (every cell for a per-cell head)."""
    net.eval()
    correct, total = {k: 0 for k in labels}, {k: 0 for k in labels}
    for i in range(0, len(images), batch):
        out = net(images[i:i + batch])
        for k in labels:
            y = labels[k][i:i + batch]
            correct[k] += int(((out[k].argmax(1) == y) & (y != -1)).sum())
            total[k] += int((y != -1).sum())
    return {k: correct[k] / total[k] for k in labels}


def evaluator_config(data: DataConfig, net: dict, method: dict, steps: int, lr: float, weight_decay: float,
                     seed: int) -> Config:
    """The Trainer config of an evaluator: AdamW, cosine LR from the first step, no EMA (the raw weights ship)."""
    return Config(description="imgen evaluator classifier", data=data, net=NetConfig("evaluator", net),
                  method=MethodConfig("attribute_classifier", method),
                  train=TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, betas=[0.9, 0.999], warmup=0,
                                    lr_schedule="cosine", grad_clip=0.0, ema_decay=0.0, ema_warmup=False, seed=seed,
                                    ckpt_every=max(1, min(500, steps)), log_every=50))


def train_digits(steps: int, seed: int, work: Path, progress: bool = True) -> tuple:
    test = load_dataset("digits", split="test")
    x_te = test.get(np.arange(len(test)))
    net_opts = {"widths": [32, 64, 64], "strides": [1, 1, 2], "feature_dim": 128, "heads": {"label": 10}}
    config = evaluator_config(DataConfig("digits", {"split": "train"}, batch_size=64), net_opts,
                              {"heads": ["label"], "label_smoothing": 0.05, "max_shift": 1, "noise": 0.05},
                              steps, 2e-3, 1e-3, seed)
    net, _ = fit(config, work / "digits-eval", progress)
    acc = accuracy(net, x_te["image"], {"label": x_te["label"]})
    meta = {"name": "digits-eval", "value_names": {"label": test.class_names}, "is_head": "label",
            "train_data": "digits split=train (1438 images)", "heldout_data": f"digits split=test ({len(test)} images)",
            "heldout_accuracy": acc, "steps": steps, "seed": seed}
    return net, meta


def train_shapes(steps: int, seed: int, work: Path, progress: bool = True, batch: int = 128) -> tuple:
    heads = {k: len(v) for k, v in SHAPES_HEADS.items()}
    net_opts = {"widths": [16, 32, 32, 64, 64], "strides": [1, 2, 1, 2, 2], "feature_dim": 128, "heads": heads}
    stream = DataConfig("shapes", {"n": 10 ** 12, "split": "all", "max_objects": 1, "seed": seed + 1},
                        batch_size=batch)  # batch k = stream items k*B .. (k+1)*B - 1: every step sees fresh scenes
    config = evaluator_config(stream, net_opts, {"heads": list(heads)}, steps, 3e-3, 1e-4, seed)
    net, _ = fit(config, work / "shapes-eval", progress)
    heldout = load_dataset("shapes", n=2000, split="heldout", max_objects=1, seed=seed + 1000)
    ho = heldout.get(np.arange(len(heldout)))
    seen = load_dataset("shapes", n=2000, split="train", max_objects=1, seed=seed + 2000).get(np.arange(2000))
    acc = accuracy(net, ho["image"], {k: ho["attrs"][k] for k in heads})
    acc_train_pairs = accuracy(net, seen["image"], {k: seen["attrs"][k] for k in heads})
    meta = {"name": "shapes-eval", "value_names": SHAPES_HEADS, "is_head": "shape",
            "train_data": f"shapes split=all max_objects=1, a fresh stream ({steps * batch} scenes, seed {seed + 1})",
            "heldout_data": f"unseen shapes split=heldout max_objects=1 scenes (2000, seed {seed + 1000}; the "
                            "main object always has a held-out shape/colour pair)",
            "heldout_accuracy": acc, "train_pairs_accuracy": acc_train_pairs, "steps": steps, "seed": seed,
            "note": "\nTrained on one-object scenes: on two-object scenes the heads describe one of the objects, not "
                    "reliably the main one.\n"}
    return net, meta


def train_cells(steps: int, seed: int, work: Path, progress: bool = True, batch: int = 128) -> tuple:
    heads = {k: [len(v), len(POSITION_LABELS)] if k.startswith("cell_") else len(v) for k, v in CELLS_HEADS.items()}
    net_opts = {"widths": [16, 32, 32, 64], "strides": [1, 2, 1, 2], "feature_dim": 256, "heads": heads}  # 8x8 map
    stream = DataConfig("shapes", {"n": 10 ** 12, "split": "all", "max_objects": 2, "seed": seed + 3, "cells": True},
                        batch_size=batch)  # a fresh stream of 1-2 object scenes, every step new ones
    config = evaluator_config(stream, net_opts, {"heads": list(heads), "noise": 0.03}, steps, 3e-3, 1e-4, seed)
    net, _ = fit(config, work / "shapes-cells", progress)
    acc = {}
    for name, split, s in (("heldout_accuracy", "heldout", seed + 1003), ("all_pairs_accuracy", "all", seed + 2003)):
        test = load_dataset("shapes", n=2000, split=split, max_objects=2, seed=s).get(np.arange(2000))
        if split == "heldout":  # two-object scenes only: the adherence metric's case
            two = np.flatnonzero(test["attrs"]["n_objects"].numpy() == 2)
            test = {"image": test["image"][two], "attrs": {k: v[two] for k, v in test["attrs"].items()}}
        a = {k: v.numpy() for k, v in test["attrs"].items()}
        labels = {"bg": test["attrs"]["bg"], **{k: torch.from_numpy(v) for k, v in cell_attributes(a).items()}}
        acc[name] = accuracy(net, test["image"], labels)
    meta = {"name": "shapes-cells", "value_names": CELLS_HEADS, "is_head": "bg", "slots": list(POSITION_LABELS),
            "train_data": f"shapes split=all max_objects=2 (1-2 objects), a fresh stream ({steps * batch} scenes, "
                          f"seed {seed + 3})",
            "heldout_data": f"unseen shapes split=heldout two-object scenes (those among 2000, seed {seed + 1003}; the "
                            "main object has a held-out shape/colour pair); second column: unseen split=all 1-2 "
                            f"object scenes (2000, seed {seed + 2003}). cell_shape is over all 9 cells (empty "
                            "included), cell_color and cell_size over occupied cells",
            **acc, "steps": steps, "seed": seed,
            "note": "\nReads every cell of the 3x3 grid: heads cell_shape (5 shapes + empty), cell_color and cell_size "
                    "give (N, classes, 9) logits, one slot per grid cell in POSITION_LABELS order.\n"}
    return net, meta


def write_card(folder: Path, net, meta: dict, command: str, seconds: float) -> None:
    n_params = sum(p.numel() for p in net.parameters())
    size_kb = (folder / "model.safetensors").stat().st_size / 1024
    column = {"train_pairs_accuracy": "unseen split=train scenes", "all_pairs_accuracy": "unseen split=all scenes"}
    second = next((k for k in column if k in meta), None)  # the card's second column, if any
    extra = meta.get(second, {})
    acc = "\n".join(f"| {k} | {v * 100:.2f}% |" + (f" {extra[k] * 100:.2f}% |" if extra else "")
                    for k, v in meta["heldout_accuracy"].items())
    header = "| head | held-out accuracy |" + (f" {column[second]} |" if extra else "")
    rule = "|---|---|" + ("---|" if extra else "")
    cfg = net.cfg
    (folder / "CARD.md").write_text(f"""# {meta['name']}

imgen evaluator network: a {len(cfg.widths)}-layer CNN ({n_params:,} parameters, {size_kb:.0f} KB) on
{cfg.image_size}x{cfg.image_size} images with {cfg.in_channels} channel(s); heads: {', '.join(cfg.heads)}.
Its {cfg.feature_dim}-dim penultimate activations are the `{meta['name']}` feature space of imgen.metrics
(`fid[{meta['name']}]`, `kid[{meta['name']}]`, ...). Larger images are area-downsampled to its input size.
These numbers are not comparable with Inception-based FID.

- Training data: {meta['train_data']}
- Held-out data: {meta['heldout_data']}
- Steps: {meta['steps']}, seed {meta['seed']}, {seconds:.0f} s on CPU
- Training command: `{command}`
{meta.get("note", "")}
## Held-out accuracy

{header}
{rule}
{acc}
""")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--which", default="digits,shapes,cells", help="comma list of: digits, shapes, cells")
    p.add_argument("--out", default=str(EVALUATOR_DIR), help="folder that receives <name>/")
    p.add_argument("--digits-steps", type=int, default=3000)
    p.add_argument("--shapes-steps", type=int, default=1500)
    p.add_argument("--cells-steps", type=int, default=1800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="runs/evaluators", help="folder of the training runs (model directories; "
                                                             "a rerun resumes them)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python scripts/train_evaluators.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for which in args.which.split(","):
        t0 = time.time()
        if which == "digits":
            net, meta = train_digits(args.digits_steps, args.seed, Path(args.work))
        elif which == "shapes":
            net, meta = train_shapes(args.shapes_steps, args.seed, Path(args.work))
        elif which == "cells":
            net, meta = train_cells(args.cells_steps, args.seed, Path(args.work))
        else:
            p.error(f"unknown evaluator {which!r}; use digits, shapes and/or cells")
        folder = save_evaluator(net, Path(args.out) / meta["name"], {**meta, "command": command.strip()})
        write_card(folder, net, meta, command.strip(), time.time() - t0)
        print(json.dumps({"name": meta["name"], "heldout_accuracy": meta["heldout_accuracy"],
                          "seconds": round(time.time() - t0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
