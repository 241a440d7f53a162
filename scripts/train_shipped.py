"""Train, measure and package the text-to-image model shipped in imgen/pretrained/models/<name>/.

    python scripts/train_shipped.py shapes-latent-t2i [--run DIR] [--steps N] [--n-eval 500] [--skip-train]

Trains the preset with `imgen train` (rerunning resumes; --skip-train packages the last checkpoint of a run,
e.g. one stopped early), measures prompt adherence on held-out prompts with
imgen.metrics.adherence at several guidance scales (the CFG table) and every stated attribute of one- and
two-object prompts at the model's default guidance (the attribute table), times `imgen generate`, and copies
config.json + ema.safetensors (+ the latent model's autoencoder/) with a CARD.md (command, data, steps, metrics) into the package.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

import imgen
from imgen.checkpoint import atomic_write_text
from imgen.metrics.adherence import adherence, attribute_table, markdown_table
from imgen.presets import get_preset
from imgen.pretrained import MODELS_DIR

CFG_SCALES = (1.0, 2.0, 3.0, 4.0, 5.0)


def measure(model, n: int, steps: int) -> list[dict]:
    rows = []
    for cfg in CFG_SCALES:
        t0 = time.perf_counter()
        r = adherence(model, n=n, cfg=cfg, steps=steps)
        rows.append({"cfg": cfg, "steps": steps, "nfe": steps * (1 if cfg == 1.0 else 2), **r,
                     "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def measure_attributes(model, n: int) -> dict:
    """Every attribute of one- and two-object held-out prompts at the model's default sampling, each over the
    prompts that state it (adherence's rule)."""
    out = {str(k): adherence(model, n=n, max_objects=k) for k in (1, 2)}
    print(json.dumps(out), flush=True)
    return out


def card(name: str, config: dict, rows: list[dict], att: dict, cmd: str, train_s: float, gen_s: float) -> str:
    head = "| guidance scale | NFE | shape+colour | position | shape+colour+position | size |\n|---|---|---|---|---|---|\n"
    table = "".join(f"| {r['cfg']:g} | {r['nfe']} | {r['shape_color']:.1%} | {r['pos']:.1%} | {r['all3']:.1%} | "
                    f"{r['size']:.1%} |\n" for r in rows)
    data, train = config["data"], config["train"]
    opts = config["net"]["options"]
    text = (f"the frozen text tower of the shipped {opts['encoder_init']}" if opts.get("freeze_encoder")
            else "a text transformer trained jointly")
    if opts.get("phrases"):
        text += ", read as word tokens plus one token per object phrase"
    if config["method"]["name"] == "latent":
        text += "; latent flow matching in the 4x8x8 latent space of the shipped shapes-ae autoencoder"
    return f"""# {name}

Text-to-image model shipped with imgen: {config['description']}.

- Data: built-in `shapes` stream, options {json.dumps(data['options'])}; batch {data['batch_size']}. The held-out
  (shape, colour) pairs (`imgen.data.shapes.HELDOUT_PAIRS`) and caption templates were never shown in training.
- Net: `{config['net']['name']}` (backbone {config['net']['options'].get('backbone')}; text: {text}; vocabulary of
  {len(config['net']['options'].get('vocab') or [])} words from the training captions).
- Method: {config['method']['name']} {json.dumps(config['method']['options'])}; {train['steps']} steps, lr {train['lr']},
  EMA {train['ema_decay']}, seed {train['seed']}; {train_s / 60:.0f} min of training on a shared 2-core CPU.
- Command: `{cmd}`
- Sampling default: {config['sample']['sampler']}, {config['sample']['steps']} steps, guidance scale {config['sample']['cfg']}.
- `imgen generate` with this model: {gen_s:.1f} s for one image on 2 CPU cores (process start included).

## Prompt adherence ({rows[0]['n']} held-out prompts, one image each, read by shapes-eval)

{head}{table}
Measured by `imgen.metrics.adherence.adherence(imgen.load("{name}"), n=N, cfg=W)` on one-object prompts of
held-out (shape, colour) pairs written with held-out caption templates.

## Every attribute a prompt states ({att['n']} held-out prompts each, default sampling)

Each attribute is scored over the prompts that state it (`imgen.data.shapes.stated_attributes`); in two-object
prompts the main object has a held-out (shape, colour) pair, and shapes-cells reads each object in the cell its
prompt names, so an attribute drawn on the wrong object counts as wrong.

{markdown_table(attribute_table({1: att["1"], 2: att["2"]}, att["n"]))}
Measured by `adherence(m, n=N, max_objects=1)` and `adherence(m, n=N, max_objects=2)`.
"""


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=["shapes-latent-t2i"])
    p.add_argument("--n-attributes", type=int, default=300, help="prompts of each kind in the attribute table")
    p.add_argument("--run", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n-eval", type=int, default=500)
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args()
    run = Path(args.run or f"runs/shipped-{args.name}")
    cmd = [sys.executable, "-m", "imgen", "train", args.name, "--out", str(run)]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    t0 = time.perf_counter()
    if not args.skip_train:
        subprocess.run(cmd, check=True)
    train_s = time.perf_counter() - t0
    config = json.loads((run / "config.json").read_text())
    model = imgen.load(run)
    rows = measure(model, args.n_eval, config["sample"]["steps"])
    for r in rows:
        r["n"] = args.n_eval
    att = {**measure_attributes(model, args.n_attributes), "n": args.n_attributes}
    steps_done = json.loads((run / "train_state.json").read_text())["step"]
    config["train"]["steps"] = steps_done  # the checkpoint shipped (a run may be stopped before its planned end)
    if config["method"]["name"] == "latent":
        config["method"]["options"]["autoencoder"] = "shapes-ae"  # the shipped one; the model reads autoencoder/
    if config["net"]["options"].get("encoder_init"):  # the shipped CLIP; its weights are in ema.safetensors
        config["net"]["options"]["encoder_init"] = get_preset(args.name).net.options["encoder_init"]
    dest = MODELS_DIR / args.name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    atomic_write_text(dest / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(run / "ema.safetensors", dest / "ema.safetensors")
    if (run / "autoencoder").is_dir():
        shutil.copytree(run / "autoencoder", dest / "autoencoder",
                        ignore=shutil.ignore_patterns("model.safetensors", "train_state*", "log.jsonl"))
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgen", "generate", "a red circle in the top left", "--model", args.name,
                    "--out", str(run / "generate.png")], check=True)
    gen_s = time.perf_counter() - t1
    shown = " ".join(["python scripts/train_shipped.py", args.name] + (["--steps", str(args.steps)] if args.steps else []))
    atomic_write_text(dest / "CARD.md", card(args.name, config, rows, att, shown, train_s, gen_s))
    metrics = {"adherence": rows, "attributes": att, "generate_seconds": gen_s}
    atomic_write_text(dest / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    print(f"shipped {args.name} -> {dest} ({sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
