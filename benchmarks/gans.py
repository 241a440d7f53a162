"""imgen's GANs on digits, judged as the diffusion presets are, against imgen's digits-flow trained in the same run.

For digits-dcgan, digits-cgan, digits-wgan-gp (issue 12) and the peer digits-flow (class-conditional flow matching,
`J["models"]["flow_reference"]`), each trained with imgen.train.train_preset (or reused from OUT/<name>):
  svc_accuracy     conditional models only: scikit-learn's SVC on the requested labels (imgen.digits_check)
  fid              fid[digits-eval]: imgen's digits evaluator features of n samples vs all 1797 real digits
  diversity_ratio  mean within-class pairwise pixel distance of the samples over that of the real digits
                   (imgen.metrics.diversity); an unconditional model's classes are the SVC's reading of each sample
  train_seconds    wall time of training (summed over resumed runs), on this machine with OMP_NUM_THREADS=1
plus, for GANs, the last logged D accuracies and (WGAN-GP) the critic's gradient norm on interpolates, and a
mode-collapse warning when diversity_ratio < 0.5. J["targets"] checks issue 12's digits targets: digits-cgan
svc_accuracy >= 0.95, diversity_ratio >= 0.7, fid within 2x of the flow reference's.

    OMP_NUM_THREADS=1 python benchmarks/gans.py            # presets' own budgets; writes benchmarks/results/gans.json
    OMP_NUM_THREADS=1 python benchmarks/gans.py --quick    # 100 training steps each, n=300 (~4 min)
    OMP_NUM_THREADS=1 python benchmarks/gans.py --only digits   # just these rows and J["targets"], other keys kept

J["translation"] (shapes-pix2pix, shapes-cyclegan; measured on scenes of another seed, never trained on):
  pix2pix_psnr                  PSNR (dB) of pix2pix's translations of label maps against the true renders, beside
                                background_psnr (the background colour alone: what a map's B channel gives for free)
  pix2pix_eval_accuracy         shapes-eval reading the main object's shape and colour right on the translations
                                (real_eval_accuracy: on the true renders)
  cyclegan_target_accuracy      fraction of A -> B translations (black -> gray background) shapes-eval reads as B
  cyclegan_kept_shape           fraction whose shape shapes-eval reads as it reads the source's (kept_color alike)
  cyclegan_back_target_accuracy the same for B -> A
  srgan_psnr, bicubic_psnr      shapes-srgan (x4, 8 -> 32 px) and bicubic interpolation on n held-out one-object
                                scenes (imgen.metrics.adherence's held-out stream) area-averaged to 8 px: PSNR (dB)
                                against the 32 px truth
  srgan_eval_accuracy,          shapes-eval reading the truth's shape AND colour on the upscaled images
  bicubic_eval_accuracy         (truth_eval_accuracy: on the truth itself). SRGAN's content loss is on shapes-eval's
                                own conv maps, so this reader is the one its generator was taught to please
  srgan_cells_accuracy,         the same read by shapes-cells, an evaluator the loss never saw (in the object's cell)
  bicubic_cells_accuracy
    OMP_NUM_THREADS=1 python benchmarks/gans.py --only translation   # just J["translation"], other keys kept
    OMP_NUM_THREADS=1 python benchmarks/gans.py --only srgan         # just J["translation"]'s srgan keys

J["truncation"] (shapes-stylegan, StyleGAN's truncation trick, Karras et al. 2019 sec. 5.1): a list of
{psi, precision, recall, fid} at psi 1.0, 0.7, 0.5, 0.3: n samples of the same z at each psi against n real scenes of
another seed, precision/recall[shapes-eval] (Kynkaanniemi et al. 2019, k = 3) and fid[shapes-eval]; J["truncation_run"]
holds the training facts and whether precision rises and recall falls monotonically (issue 12's target). Writes
gans_truncation.png (the same z at psi 1 ... 0) and gans_style_mixing.png (StyleGAN fig. 3) beside the JSON.
--quick reuses OUT/shapes-stylegan when a full run trained it (a 100-step GAN says nothing about truncation).
    OMP_NUM_THREADS=1 python benchmarks/gans.py --only truncation    # just these two keys, other keys kept
Measured (2000 steps, n = 1000; training 276 s on one thread; multimodal truncation toward the nearest of 16
k-means centres of w, the preset's truncation_clusters): precision 0.637, 0.671, 0.710, 0.766 and recall 0.275, 0.237,
0.134, 0.076 at psi 1, 0.7, 0.5, 0.3, both monotone (a second training run of the preset: precision 0.651, 0.650,
0.671, 0.696, flat at n = 3000; not yet robust). Toward the mean w instead (truncation_clusters 0): precision
0.637, 0.671, 0.609, 0.515 (w_avg draws a near-empty navy scene, so truncating faded the small objects out). Without
D's CLIP head: precision 0.546, 0.568, 0.541, 0.500, recall 0.191, 0.185, 0.110, 0.045. The first StyleGAN-lite (plain
layers, DCGAN discriminator, no sqrt(2) gain) had recall 0.006, 0, 0, 0.002.

J["models"]["shapes-text-gan"] (GAN-INT-CLS, Reed et al. 2016, on 16 px one-object shapes captions): shape_adherence,
color_adherence (and shape_color_, position_adherence) = the rates at which shapes-eval reads the prompt's shape and
colour in one image per held-out prompt (imgen.metrics.adherence: (shape, colour) pairs and caption templates never
trained on; shapes-eval reads the 16 px images enlarged bilinearly to its 32 px input), beside real_shape_adherence
and real_color_adherence: the same evaluator on true renders of the same prompts at the model's size (the ceiling:
at 16 px it reads 0.886 of the true shapes and every colour), train_seconds (wall) and train_cpu_seconds, and
cells_shape_color_adherence (shapes-cells, an evaluator no part of the GAN saw, reading shape and colour in the
prompt's cell); issue 12's target: shape and colour >= 0.7. --quick reuses OUT/shapes-text-gan when a full run
trained it.
    OMP_NUM_THREADS=1 python benchmarks/gans.py --only text_gan      # just this row, other keys kept
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.svm import SVC

import imgen
from imgen.data import load_dataset
from imgen.data.shapes import BACKGROUNDS, render_scenes
from imgen.digits_check import _to_digits_space, digits_quality
from imgen.apps.translate import translate
from imgen.apps.upscale import bicubic, upscale
from imgen.images import adapt_images
from imgen.metrics.adherence import READ, adherence_prompts, adherence_scenes, score_images
from imgen.metrics.diversity import diversity_ratio, mode_collapse_warning
from imgen.metrics.evaluate import evaluate, tensor_source
from imgen.metrics.evaluators import load_evaluator
from imgen.metrics.psnr_ssim import psnr
from imgen.metrics.features import get_extractor
from imgen.metrics.fid import fid
from imgen.plots import style_mixing_grid, truncation_strip
from imgen.presets import get_preset
from imgen.train import train_preset

GANS = ("digits-dcgan", "digits-cgan", "digits-wgan-gp")
REFERENCE = "digits-flow"
TEXT_GAN = "shapes-text-gan"
QUICK_STEPS, QUICK_N = 100, 300
RESULTS = Path(__file__).resolve().parent / "results" / "gans.json"
PSIS = (1.0, 0.7, 0.5, 0.3)


def judge(model, n: int, seed: int, real: dict, real_feats: torch.Tensor, svc: SVC, extractor) -> dict:
    """svc_accuracy (conditional), fid[digits-eval], diversity_ratio of n samples."""
    conditional = model.num_classes is not None
    labels = torch.arange(n) % 10 if conditional else None
    x = model.sample(n, labels=labels, seed=seed)
    row = {"svc_accuracy": None}
    if conditional:
        q = digits_quality(model, n=n, sampler=model.config.sample.sampler, steps=model.config.sample.steps,
                           seed=seed)
        row["svc_accuracy"] = q["svc_accuracy"]
    read = torch.from_numpy(svc.predict(_to_digits_space(x)))
    row["fid"] = round(fid(extractor(x)[0].float(), real_feats, "digits-eval"), 3)
    row["diversity_ratio"] = round(diversity_ratio(x, labels if conditional else read, real["image"],
                                                   real["label"]), 4)
    row["classes_read"] = np.bincount(read.numpy(), minlength=10).tolist()  # a collapse onto few digits shows here
    return row


def gan_diagnostics(out: Path) -> dict:
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    keys = ("loss_discriminator", "loss_generator", "d_real_acc", "d_fake_acc", "d_wrong_acc", "gp_grad_norm")
    return {f"last_{k}": round(last[k], 4) for k in keys if k in last}


def translation(out: Path, steps: int | None, n: int, seed: int) -> dict:
    """J["translation"]: shapes-pix2pix and shapes-cyclegan trained (or reused) in out/, judged on n scenes of a
    stream seed they never saw."""
    ev, row = load_evaluator("shapes-eval"), {}
    seconds = train_preset("shapes-pix2pix", out / "shapes-pix2pix", steps)
    b = load_dataset("shapes-pairs", seed=1000 + seed).get(np.arange(n))
    y = translate(imgen.load(out / "shapes-pix2pix"), b["source"])
    read = ev.predict

    def main_object_read(x):  # shapes-eval reads the main object's shape and colour right
        p = read(x)
        ok = (p["shape"] == b["attrs"]["shape"]) & (p["color"] == b["attrs"]["color"])
        return round(float(ok.float().mean()), 4)

    row.update(pix2pix_psnr=round(float(psnr(y, b["image"]).mean()), 2),
               background_psnr=round(float(psnr(_background(b), b["image"]).mean()), 2),
               pix2pix_eval_accuracy=main_object_read(y), real_eval_accuracy=main_object_read(b["image"]),
               pix2pix_train_seconds=seconds)
    seconds = train_preset("shapes-cyclegan", out / "shapes-cyclegan", steps)
    model = imgen.load(out / "shapes-cyclegan")
    d = load_dataset("shapes-domains", seed=1000 + seed, **{k: v for k, v in model.config.data.options.items()
                                                             if k != "seed"})
    batch, names = d.get(np.arange(n)), ev.value_names["bg"]
    for key, x, direction, target in (("", batch["image"], "ab", d.domain_b), ("back_", batch["image_b"], "ba",
                                                                               d.domain_a)):
        src, out_read = read(x), read(translate(model, x, direction))
        row[f"cyclegan_{key}target_accuracy"] = round(float((out_read["bg"] == names.index(target)).float().mean()), 4)
        row[f"cyclegan_{key}kept_shape"] = round(float((out_read["shape"] == src["shape"]).float().mean()), 4)
        row[f"cyclegan_{key}kept_color"] = round(float((out_read["color"] == src["color"]).float().mean()), 4)
    row["cyclegan_train_seconds"] = seconds
    return {**row, **srgan(out, steps, n)}


def srgan(out: Path, steps: int | None, n: int) -> dict:
    """J["translation"]'s SRGAN keys: shapes-srgan trained (or reused) in out/ and bicubic, on n held-out scenes."""
    seconds = train_preset("shapes-srgan", out / "shapes-srgan", steps)
    model = imgen.load(out / "shapes-srgan")
    a = adherence_scenes(n)  # the held-out stream (another seed than training's)
    truth = render_scenes(a, 32, offsets=a["offset"])
    low = adapt_images(truth, 3, model.net.low_res_size)  # area average, as the training pairs
    row = {}
    for name, x in (("srgan", upscale(model, low)), ("bicubic", bicubic(low, 32))):
        row[f"{name}_psnr"] = round(float(psnr(x, truth).mean()), 2)
        row[f"{name}_eval_accuracy"] = round(score_images(x, {k: a[k] for k in READ})["shape_color"], 4)
        row[f"{name}_cells_accuracy"] = cells_read(x, a)
    row["truth_eval_accuracy"] = round(score_images(truth, {k: a[k] for k in READ})["shape_color"], 4)
    return {**row, "srgan_train_seconds": seconds}


def cells_read(x: torch.Tensor, a: dict) -> float:
    """shapes-cells (an evaluator SRGAN's loss never saw) reading shape AND colour right in each scene's object cell."""
    p, cell = load_evaluator("shapes-cells").predict(x), torch.as_tensor(a["pos"])[:, None]
    ok = (p["cell_shape"].gather(1, cell)[:, 0] == torch.as_tensor(a["shape"])) & \
        (p["cell_color"].gather(1, cell)[:, 0] == torch.as_tensor(a["color"]))
    return round(float(ok.float().mean()), 4)


def _translation_keys(args, result: dict, out: Path, steps: int | None, n: int) -> dict:
    """--only translation: all of J["translation"]; --only srgan: its srgan keys, the others kept from `result`."""
    if args.only == "srgan":
        return {**result.get("translation", {}), **srgan(out, steps, n)}
    return translation(out, steps, n, args.seed)


def truncation(out: Path, steps: int | None, n: int, seed: int, pictures: Path | None) -> dict:
    """J["truncation"] and J["truncation_run"]: shapes-stylegan trained (or reused) in out/, n samples at each psi
    (one seed: the same z and noise at every psi) against n real scenes of a stream seed it never saw."""
    name = "shapes-stylegan"
    seconds = train_preset(name, out / name, steps)
    model = imgen.load(out / name)
    options = {k: v for k, v in model.config.data.options.items() if k != "seed"}
    real = tensor_source(load_dataset("shapes", seed=1000 + seed, **options).get(np.arange(n))["image"], "real")
    rows = []
    for psi in PSIS:
        x = model.sample(n, truncation=psi, seed=seed)
        m = evaluate(tensor_source(x, f"psi {psi}"), real, metrics=("fid", "pr"), features="shapes-eval",
                     progress=False)["metrics"]
        rows.append({"psi": psi, "precision": round(m["precision[shapes-eval]"], 4),
                     "recall": round(m["recall[shapes-eval]"], 4), "fid": round(m["fid[shapes-eval]"], 3)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    p, r = [row["precision"] for row in rows], [row["recall"] for row in rows]
    run = {"preset": name, "train_seconds": seconds,
           "steps": json.loads((out / name / "train_state.json").read_text())["step"], "n": n,
           "features": "shapes-eval", "precision_rises": all(a <= b for a, b in zip(p, p[1:])),
           "recall_falls": all(a >= b for a, b in zip(r, r[1:]))}
    if pictures is not None:
        for kind, fig in (("truncation", truncation_strip(model, seed=seed)),
                          ("style_mixing", style_mixing_grid(model, seed=seed))):
            target = pictures.with_name(f"{pictures.stem}_{kind}.png")
            fig.savefig(target, dpi=110)
            run[f"{kind}_png"] = target.name
    return {"truncation": rows, "truncation_run": run}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def text_gan(out: Path, steps: int | None, n: int, seed: int) -> dict:
    """J["models"]["shapes-text-gan"]: the text GAN trained (or reused) in out/, read by shapes-eval on n held-out
    prompts (imgen.metrics.adherence: held-out (shape, colour) pairs and caption templates), one image each."""
    folder, tic = out / TEXT_GAN, _cpu_seconds()
    seconds = train_preset(TEXT_GAN, folder, steps)
    cpu, record = _cpu_seconds() - tic, folder / "cpu_s.json"
    if cpu > 1 or not record.is_file():  # trained (or resumed) now: summed over runs, as train_preset's wall time
        cpu += json.loads(record.read_text())["cpu_s"] if record.is_file() else 0.0
        record.write_text(json.dumps({"cpu_s": round(cpu, 1)}) + "\n")
    model = imgen.load(folder)
    prompts, truth = adherence_prompts(n)
    a = adherence_scenes(n)
    tic = time.perf_counter()  # one image per prompt, as imgen.metrics.adherence.adherence draws them
    x = torch.cat([model.generate(prompts[i:i + 100], seed=seed + i) for i in range(0, n, 100)])
    gen_seconds = round(time.perf_counter() - tic, 2)
    rates = score_images(x, truth)
    row = {"preset": TEXT_GAN, "shape_adherence": round(rates["shape"], 4), "color_adherence": round(rates["color"], 4),
           "shape_color_adherence": round(rates["shape_color"], 4), "position_adherence": round(rates["pos"], 4),
           "train_seconds": seconds, "train_cpu_seconds": json.loads(record.read_text())["cpu_s"],
           "steps": json.loads((folder / "train_state.json").read_text())["step"], "n": n, "image_size":
           model.shape[-1], "generate_seconds": gen_seconds, **gan_diagnostics(folder)}
    real = score_images(render_scenes(a, model.shape[-1], offsets=a["offset"]), truth)
    row.update(real_shape_adherence=round(real["shape"], 4), real_color_adherence=round(real["color"], 4),
               cells_shape_color_adherence=cells_read(x, a))  # shapes-cells: an evaluator no GAN part ever saw
    row["target_shape_and_color_ge_0.7"] = row["shape_adherence"] >= 0.7 and row["color_adherence"] >= 0.7
    return row


def digits(out: Path, steps: int | None, n: int, seed: int) -> dict:
    """J["models"]' digits rows (the GANs and the flow reference) and J["targets"]."""
    ds = load_dataset("digits", split="all")
    real = ds.get(np.arange(len(ds)))
    extractor = get_extractor("digits-eval")
    real_feats = extractor(real["image"])[0].float()
    sk_digits = load_digits()
    svc = SVC().fit(sk_digits.data, sk_digits.target)
    models = {}
    for name in GANS + (REFERENCE,):
        key = "flow_reference" if name == REFERENCE else name
        seconds = train_preset(name, out / name, steps)
        model = imgen.load(out / name)
        row = {"preset": name, **judge(model, n, seed, real, real_feats, svc, extractor),
               "train_seconds": seconds, "steps": json.loads((out / name / "train_state.json").read_text())["step"]}
        if name != REFERENCE:
            row.update(gan_diagnostics(out / name))
            row["mode_collapse_warning"] = mode_collapse_warning(row["diversity_ratio"])
        models[key] = row
        print(json.dumps({key: row}), file=sys.stderr, flush=True)
    cgan, flow = models["digits-cgan"], models["flow_reference"]
    targets = {"cgan_svc_accuracy_ge_0.95": cgan["svc_accuracy"] >= 0.95,
               "cgan_diversity_ratio_ge_0.7": cgan["diversity_ratio"] >= 0.7,
               "cgan_fid_within_2x_flow": cgan["fid"] <= 2 * flow["fid"],
               "cgan_fid_over_flow_fid": round(cgan["fid"] / flow["fid"], 3)}
    return {"models": models, "targets": targets}


def _text_gan(args, out: Path, steps: int | None, n: int) -> dict:
    full = Path(args.out) / TEXT_GAN / "train_state.json"
    if args.quick and full.is_file() and json.loads(full.read_text())["step"] >= get_preset(TEXT_GAN).train.steps:
        out, steps = Path(args.out), None  # a full run's model, reused (100 GAN steps draw no shapes)
    row = text_gan(out, steps, n, args.seed)
    print(json.dumps({TEXT_GAN: row}), file=sys.stderr, flush=True)
    return {**row, "quick": args.quick}


def _background(b: dict) -> torch.Tensor:
    """Each scene's bare background (what a label map's B channel states with no model at all)."""
    bgs = torch.tensor(list(BACKGROUNDS.values()), dtype=torch.float32) / 127.5 - 1
    return bgs[b["attrs"]["bg"]][:, :, None, None].expand_as(b["image"]).contiguous()


def _truncation(args, out: Path, steps: int | None, n: int, path: Path | None) -> dict:
    full = Path(args.out) / "shapes-stylegan" / "train_state.json"
    if args.quick and full.is_file() and json.loads(full.read_text())["step"] >= \
            get_preset("shapes-stylegan").train.steps:
        out, steps = Path(args.out), None  # a full run's StyleGAN, reused
    result = truncation(out, steps, n, args.seed, path)
    result["truncation_run"]["quick"] = args.quick
    return result


def _reread(path: Path | None, result: dict) -> dict:
    """The JSON at path as it is now (another --only run may have written it meanwhile), else result."""
    return json.loads(path.read_text()) if path is not None and path.is_file() else result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/gans", help="model cache (--quick: OUT/quick)")
    p.add_argument("--n", type=int, default=1000, help="samples per model")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} training steps per model, n={QUICK_N}")
    p.add_argument("--json", default=None, help=f"where to write the result (default without --quick: {RESULTS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["digits", "translation", "srgan", "truncation", "text_gan"],
                   help="measure only this part; the JSON's other keys are kept")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    steps, n, out = (QUICK_STEPS, QUICK_N, Path(args.out) / "quick") if args.quick else (None, args.n, Path(args.out))
    tic = time.perf_counter()
    path = Path(args.json) if args.json else (None if args.quick else RESULTS)
    if args.only:
        result = _reread(path, {"benchmark": "gans"})
        if args.only in ("translation", "srgan"):
            result["translation"] = {**_translation_keys(args, result, out, steps, n), "quick": args.quick, "n": n,
                                     "seconds": round(time.perf_counter() - tic, 1)}
        elif args.only == "digits":
            part = digits(out, steps, n, args.seed)
            result = _reread(path, result)
            result.setdefault("models", {}).update(part["models"])
            result["targets"] = part["targets"]
        elif args.only == "text_gan":
            row = _text_gan(args, out, steps, n)
            result = _reread(path, result)
            result.setdefault("models", {})[TEXT_GAN] = row
        else:
            part = _truncation(args, out, steps, n, path)
            part["truncation_run"]["seconds"] = round(time.perf_counter() - tic, 1)
            result = _reread(path, result)
            result.update(part)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")
        if args.only == "text_gan":
            print(json.dumps({TEXT_GAN: result["models"][TEXT_GAN]}, indent=1))
            return result
        if args.only == "digits":
            print(json.dumps({k: result[k] for k in ("models", "targets")}, indent=1))
            return result
        part = "translation" if args.only == "srgan" else args.only
        print(json.dumps({k: result[k] for k in result if k.startswith(part)}, indent=1))
        return result
    result = {"benchmark": "gans", "quick": args.quick, "n": n, "torch_threads": torch.get_num_threads(),
              "features": "digits-eval", **digits(out, steps, n, args.seed)}
    result["models"][TEXT_GAN] = _text_gan(args, out, steps, n)
    result["translation"] = translation(out, steps, n, args.seed)
    result.update(_truncation(args, out, steps, n, path))
    result["seconds"] = round(time.perf_counter() - tic, 1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
