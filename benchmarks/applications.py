"""Training-free applications (issue 14) on the shipped shapes-latent-t2i: inpainting and SDEdit, read by shapes-eval.

The task: n held-out adherence prompts (imgen.metrics.adherence.adherence_prompts: one object, held-out (shape,
colour) pairs and templates); each input image is the prompt's scene rendered with ANOTHER shape and colour
(same size, position, jitter and background), so the prompt's object is not in the input.
  inpaint   the square over the object (0.8 cell either side of its centre) is the hole; RePaint (and replacement)
            fill it under the prompt, and so does "trained": an inpainting model (mask + masked image's latent as
            input channels, as Stable Diffusion's) fine-tuned from shapes-latent-t2i (imgen.recipes.inpaint, 600
            steps at batch 32; finetune_seconds / finetune_cpu_seconds; trained into --inpaint-cache and reused). fill_adherence: the rate at which shapes-eval reads the prompt's shape AND
            colour; all_stated: every attribute the prompt states; known_psnr: PSNR of the known pixels against the
            input (MSE floored at 1e-12, so an exact paste reads 126.0 dB), known_psnr_before_paste: the same for
            the decoded sample before the final paste (what latent-space blending alone keeps).
  sdedit    img2img of the whole image at each strength: adherence (shape and colour read as prompted) and
            psnr_to_input (mean PSNR of the outputs against the input).
  lora      a style the shipped model cannot be prompted into (it ignores background words): 16 pictures of
            one-object scenes all on a brown background (imgen.metrics.adherence.style_concept), a LoRA fine-tune
            (imgen.recipes.lora, rank 4 on attention and convs, 300 steps), then on the n held-out prompts:
            concept_accuracy (shapes-eval reads the brown background), prompt_still_obeyed (shape, colour and
            position as prompted), each also for the base; adapter_bytes / base_bytes (the EMA weights file);
            merge_max_abs_diff (net output merged vs unmerged) and unmerge_max_abs_diff (weights after a round trip).
  textual_inversion   a new word, "zorp", for an object the shipped model never saw (a magenta triangle, a
            held-out pair): 16 pictures captioned "a big zorp in the top left" (imgen.metrics.adherence.word_concept),
            300 steps learning only zorp's embedding (imgen.recipes.textual_inversion, init "triangle"), then n
            held-out prompts "a {size} zorp {position}": concept_accuracy (shapes-eval reads a magenta triangle) and
            prompt_still_obeyed (size and position as prompted), each also for the base (zorp is unknown to it).
  sr        super-resolution 8 -> 32 px (SR3 with Imagen's noise-conditioning augmentation; imgen.apps.upscale):
            4n held-out one-object scenes (held-out seed and (shape, colour) pairs) rendered at 32 px, area-averaged to
            8 px, enlarged by the upsampler (--sr-model DIR, or the shapes-sr preset trained here, ~4 min) and by
            bicubic interpolation: psnr (mean, against the 32 px truth) and eval_accuracy (shapes-eval reads the
            truth's shape AND colour).
  control   ControlNet-lite (Zhang et al. 2023; imgen.recipes.controlnet, 700 steps on shapes' label maps): 4n
            held-out scenes whose label map puts the object in another cell; follows_control (shapes-eval reads it in
            the map's cell) for position-free prompts, follows_control_against_prompt for captions naming the old
            cell; base_* the same prompts without control (reference, same run).

    OMP_NUM_THREADS=1 python benchmarks/applications.py            # n=64; writes benchmarks/results/applications.json
    OMP_NUM_THREADS=1 python benchmarks/applications.py --quick    # n=16 -> applications_quick.json
    OMP_NUM_THREADS=1 python benchmarks/applications.py --only lora   # one section, the file's others kept
    OMP_NUM_THREADS=1 python benchmarks/applications.py --only textual_inversion
    OMP_NUM_THREADS=1 python benchmarks/applications.py --only sr --sr-model runs/shapes-sr
    OMP_NUM_THREADS=1 python benchmarks/applications.py --quick --only control
    OMP_NUM_THREADS=1 python benchmarks/applications.py --quick --only inpaint_trained   # model cached in
                                                                                         # runs/bench-inpaint
    OMP_NUM_THREADS=1 python benchmarks/applications.py --only few_step --quick   # teacher + students cached in
                                                                                  # runs/bench-few-step
  few_step  consistency (1, 2 NFE) and LCM (4 NFE; 1, 2 too) students of the digits-flow teacher, 400 distillation
            steps each (imgen.recipes.consistency): rows {name, nfe, fid, fid_ratio_to_teacher, svc_accuracy}, FID of
            1,000 samples in digits-eval features (mean of sampling seeds 0, 1, 2) over the teacher's at its 25 Euler
            steps on the same seeds in the same run; details (the teacher's own 1/2/4 Euler steps, the teacher at
            LCM's guidance, LCM's sampler ablation, train seconds) in few_step_detail. few_step_t2i: LCM proper, a
            latent student of shapes-latent-t2i with its cfg 3 folded in (400 steps), on 500 held-out prompts:
            adherence and FID[shapes-eval] against the true renders, over the teacher's at 25 steps, cfg 3.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import imgen
from imgen.apps.edit import edit, invert, reconstruct
from imgen.apps.img2img import img2img
from imgen.apps.inpaint import inpaint
from imgen.data.files import save_image_folder
from imgen.metrics.adherence import HELDOUT_SEED, adherence_prompts, inpaint_tasks, score_images, style_accuracy, \
    style_concept, word_accuracy, word_concept
from imgen.metrics.editing import edit_scores, edit_tasks
from imgen.metrics.evaluators import load_evaluator
from imgen.metrics.psnr_ssim import psnr

RESULTS = Path(__file__).resolve().parent / "results"
STRENGTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
INPAINT_STEPS = 600  # fine-tuning steps of the trained inpainting model (batch 32)


def known_psnr(out: torch.Tensor, x: torch.Tensor, hole: torch.Tensor) -> float:
    keep = ~hole.expand_as(out[0])
    mse = max(float((out[:, keep] - x[:, keep]).double().square().mean()), 1e-12)
    return 10 * math.log10(4 / mse)


def inpaint_row(model, tasks, ev, **kwargs) -> dict:
    """{fill_adherence, all_stated, known_psnr (the minimum), seconds_per_image} of inpaint(model, ..., **kwargs)
    on inpaint_tasks `tasks`, task i at seed i."""
    prompts, truth, inputs, holes = tasks
    outs, known, t0 = [], [], time.perf_counter()
    for i in range(len(prompts)):
        out = inpaint(model, inputs[i], holes[i], prompts[i], seed=i, **kwargs)
        outs.append(out)
        known.append(known_psnr(out, inputs[i:i + 1], holes[i]))
    seconds = (time.perf_counter() - t0) / len(prompts)
    s = score_images(torch.cat(outs), truth, ev)
    return {"fill_adherence": s["shape_color"], "all_stated": s["all_stated"], "known_psnr": min(known),
            "seconds_per_image": round(seconds, 3)}


def run(n: int, method: str, jump_length: int, resample: int, cache: str | Path | None = None) -> dict:
    model = imgen.load("shapes-latent-t2i")
    ev = load_evaluator("shapes-eval")
    tasks = inpaint_tasks(n)
    prompts, truth, inputs, holes = tasks
    J: dict = {"model": "shapes-latent-t2i", "n": n, "inpaint": {}, "sdedit": []}
    for meth in (method, "replacement") if method != "replacement" else (method,):
        J["inpaint"][meth] = inpaint_row(model, tasks, ev, method=meth, jump_length=jump_length, resample=resample)
        if meth == "repaint":
            J["inpaint"][meth].update(jump_length=jump_length, resample=resample)
        print(meth, J["inpaint"][meth], flush=True)
    J["inpaint"][method]["known_psnr_before_paste"] = _before_paste(model, prompts, inputs, holes, method,
                                                                   jump_length, resample)
    if cache is not None:
        J["inpaint"]["trained"] = run_trained_inpaint(n, cache)
    for strength in STRENGTHS:
        outs, t0 = [], time.perf_counter()
        for i in range(n):
            outs.append(img2img(model, inputs[i], prompts[i], strength, seed=i))
        seconds = (time.perf_counter() - t0) / n
        outs = torch.cat(outs)
        s = score_images(outs, truth, ev)
        p = psnr(outs.clamp(-1, 1), inputs).clamp(max=126.0)
        J["sdedit"].append({"strength": strength, "adherence": s["shape_color"], "all_stated": s["all_stated"],
                            "psnr_to_input": round(float(p.mean()), 2), "seconds_per_image": round(seconds, 3)})
        print(J["sdedit"][-1], flush=True)
    return J


def run_trained_inpaint(n: int, cache: str | Path, steps: int = INPAINT_STEPS) -> dict:
    """J["inpaint"]["trained"]: an inpainting model fine-tuned from shapes-latent-t2i (imgen.recipes.inpaint; reused
    from CACHE/model when that run has reached `steps`, its fine-tune time in CACHE/finetune_seconds.json) on the
    same tasks, prompts and seeds as repaint; method "trained" (one plain sampler run, the known pixels pasted)."""
    from imgen.recipes.inpaint import finetune_inpaint

    cache = Path(cache)
    model_dir, record = cache / "model", cache / "finetune_seconds.json"
    done = record.is_file() and json.loads(record.read_text()).get("steps") == steps
    if not done:
        t0, c0 = time.perf_counter(), time.process_time()
        finetune_inpaint("shapes-latent-t2i", model_dir, steps=steps, progress=False)
        record.write_text(json.dumps({"steps": steps, "seconds": round(time.perf_counter() - t0, 1),
                                      "cpu_seconds": round(time.process_time() - c0, 1)}) + "\n")
    rec = json.loads(record.read_text())
    model = imgen.load(model_dir)
    tasks = inpaint_tasks(n)
    J = {**inpaint_row(model, tasks, load_evaluator("shapes-eval"), method="trained"),
         "finetune_seconds": rec["seconds"], "finetune_cpu_seconds": rec["cpu_seconds"], "steps": steps,
         "batch_size": model.config.data.batch_size, "model": str(model_dir), "reused": done}
    prompts, _, inputs, holes = tasks
    J["known_psnr_before_paste"] = round(float(np.mean([known_psnr(
        inpaint(model, inputs[i], holes[i], prompts[i], seed=i, paste=False), inputs[i:i + 1], holes[i])
        for i in range(min(8, n))])), 2)
    print("trained", J, flush=True)
    return J


def run_lora(n: int, steps: int = 300, rank: int = 4, images: int = 16) -> dict:
    """J["lora"]: fine-tune a LoRA adapter on the brown-background style, measure it against the base."""
    import tempfile

    from imgen.nn.lora import apply_adapter, merge, remove_lora, unmerge
    from imgen.pretrained import resolve_model_path
    from imgen.recipes.lora import finetune_lora

    ev = load_evaluator("shapes-eval")
    prompts, truth = adherence_prompts(n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_image_folder(Path(tmp) / "style", *style_concept(images))
        t0 = time.perf_counter()
        result = finetune_lora("shapes-latent-t2i", folder, Path(tmp) / "style.safetensors", steps=steps, rank=rank,
                               progress=False)
        seconds = time.perf_counter() - t0
        model = imgen.load("shapes-latent-t2i")
        base = style_accuracy(model.generate(prompts, seed=0), truth, evaluator=ev)
        net = model.net
        weights = {k: v.clone() for k, v in net.state_dict().items()}
        apply_adapter(net, result["adapter"])
        g = torch.Generator().manual_seed(0)
        x, t = torch.randn(8, *model.shape, generator=g), torch.rand(8, generator=g)
        cond = {**net.encode(prompts[:8]), "drop": torch.zeros(8, dtype=torch.bool)}
        with torch.no_grad():
            unmerged = net(x, t, cond)
            merge(net)
            merged = net(x, t, cond)
        tuned = style_accuracy(model.generate(prompts, seed=0), truth, evaluator=ev)
        unmerge(net)
        remove_lora(net)
        roundtrip = max(float((net.state_dict()[k] - v).abs().max()) for k, v in weights.items())
    J = {"concept": "every object on a brown background (16 pictures; the base ignores background words)",
         "adapter_bytes": result["adapter_bytes"],
         "base_bytes": (resolve_model_path("shapes-latent-t2i") / "ema.safetensors").stat().st_size,
         "merge_max_abs_diff": float((merged - unmerged).abs().max()), "unmerge_max_abs_diff": roundtrip,
         "concept_accuracy": tuned["concept_accuracy"], "prompt_still_obeyed": tuned["prompt_still_obeyed"],
         "base_concept_accuracy": base["concept_accuracy"], "base_prompt_still_obeyed": base["prompt_still_obeyed"],
         "rank": rank, "steps": steps, "images": images, "finetune_seconds": round(seconds, 1)}
    J["adapter_fraction"] = round(J["adapter_bytes"] / J["base_bytes"], 4)
    print("lora", J, flush=True)
    return J


def run_edit(n: int) -> dict:
    """Prompt-to-prompt colour and shape swaps after null-text inversion (imgen.metrics.editing's tasks), and the
    reconstruction PSNR of inversion at guidance 1 and 3, plain DDIM vs null-text, on the model's own grid."""
    model = imgen.load("shapes-latent-t2i")
    ev = load_evaluator("shapes-eval")
    J: dict = {"n": n, "steps": model.config.sample.steps}
    for attribute in ("color", "shape"):
        images, sources, targets, scenes, new = edit_tasks(n, attribute)
        t0 = time.perf_counter()
        outs = torch.cat([edit(model, images[i], sources[i], targets[i]) for i in range(n)])
        J[attribute] = {**edit_scores(outs, scenes, attribute, new, ev),
                        "seconds_per_image": round((time.perf_counter() - t0) / n, 2)}
        print("edit", attribute, J[attribute], flush=True)
    J["target_attribute"] = float(np.mean([J[a]["target_attribute"] for a in ("color", "shape")]))
    J["kept_attributes"] = float(np.mean([J[a]["kept_attributes"] for a in ("color", "shape")]))
    images, sources = edit_tasks(min(n, 16), "color")[:2]
    J["inversion_psnr"] = {"steps": model.config.sample.steps}
    # ddim: classic inversion; aidi: its fixed-point form; null_text: Mokady et al. as edit uses it;
    # null_text_aidi: null text at lr 1e-2 on an AIDI pivot (imgen.apps.edit.invert's doc: reconstructs best)
    for cfg in (1.0, 3.0):
        for name, kw in (("ddim", {"null_text": False}), ("aidi", {"null_text": False, "fixed_point_iters": 4}),
                         ("null_text", {"null_text": True}),
                         ("null_text_aidi", {"null_text": True, "lr": 1e-2, "fixed_point_iters": 4})):
            if cfg == 1.0 and kw["null_text"]:
                continue  # at w = 1 the null text is never evaluated: null-text inversion is plain inversion
            p = [psnr(reconstruct(model, invert(model, images[i], sources[i], cfg=cfg, **kw)),
                      images[i:i + 1]).item() for i in range(len(sources))]
            key = f"guidance_{cfg:g}_{name}"
            J["inversion_psnr"][key] = round(float(np.mean(p)), 2)
            print(key, J["inversion_psnr"][key], flush=True)
    # the ceiling: the autoencoder's own round trip (a latent model cannot reconstruct better)
    J["inversion_psnr"]["autoencoder_round_trip"] = round(float(psnr(
        _round_trip(model, images), images).mean()), 2)
    return J


def _round_trip(model, images):
    from imgen.apps.inputs import from_model_space, to_model_space
    with torch.no_grad():
        return from_model_space(model, to_model_space(model, images))


def run_textual_inversion(n: int, steps: int = 300, images: int = 16) -> dict:
    """J["textual_inversion"]: learn the word "zorp" for a magenta triangle, measure it against the base."""
    import tempfile

    from imgen.recipes.textual_inversion import finetune_tokens

    ev = load_evaluator("shapes-eval")
    _, prompts, truth = word_concept(n, seed=HELDOUT_SEED, split="heldout")
    with tempfile.TemporaryDirectory() as tmp:
        pictures, captions, _ = word_concept(images)
        folder = save_image_folder(Path(tmp) / "zorp", pictures, captions)
        t0 = time.perf_counter()
        result = finetune_tokens("shapes-latent-t2i", folder, Path(tmp) / "zorp.safetensors", ["zorp"], ["triangle"],
                                 steps=steps, progress=False)
        seconds = time.perf_counter() - t0
        model = imgen.load("shapes-latent-t2i")
        base = word_accuracy(model.generate(prompts, seed=0), truth, ev)
        model.load_tokens(result["adapter"])
        tuned = word_accuracy(model.generate(prompts, seed=0), truth, ev)
    J = {"concept": "the new word 'zorp' for a magenta triangle (a held-out pair), 16 pictures", "init": "triangle",
         "concept_accuracy": tuned["concept_accuracy"], "prompt_still_obeyed": tuned["prompt_still_obeyed"],
         "base_concept_accuracy": base["concept_accuracy"], "base_prompt_still_obeyed": base["prompt_still_obeyed"],
         "embedding_bytes": result["adapter_bytes"], "steps": steps, "images": images,
         "finetune_seconds": round(seconds, 1), "example_prompt": prompts[0]}
    print("textual_inversion", J, flush=True)
    return J


def run_sr(n: int, model_dir: str | None = None) -> dict:
    """Upsampler vs bicubic on n held-out scenes (see the module docstring)."""
    import tempfile

    from imgen.apps.upscale import bicubic, upscale
    from imgen.data.shapes import render_scenes
    from imgen.images import adapt_images
    from imgen.metrics.adherence import READ, adherence_scenes
    from imgen.presets import get_preset
    from imgen.train import train

    J: dict = {"n": n}
    if model_dir is None:
        model_dir = tempfile.mkdtemp(prefix="imgen-sr-")
        t1 = time.perf_counter()
        train(get_preset("shapes-sr"), model_dir, progress=False)
        J["train_seconds"] = round(time.perf_counter() - t1, 1)
    model = imgen.load(model_dir)
    J["model"] = "shapes-sr" if "train_seconds" in J else str(model_dir)
    J["train_steps"], J["aug_level"] = model.config.train.steps, model.method.sample_aug
    ev = load_evaluator("shapes-eval")
    a = adherence_scenes(n)
    truth = render_scenes(a, 32, offsets=a["offset"])
    low = adapt_images(truth, 3, model.net.low_res_size)  # area average, as the training pairs
    t1 = time.perf_counter()
    outs = {"diffusion": torch.cat([upscale(model, low[i:i + 16], seed=i) for i in range(0, n, 16)])}
    J["seconds_per_image"] = round((time.perf_counter() - t1) / n, 3)
    outs["bicubic"] = bicubic(low, 32)
    for name, x in outs.items():
        s = score_images(x, {k: a[k] for k in READ}, ev)
        J[name] = {"psnr": round(float(psnr(x, truth).mean()), 2), "eval_accuracy": s["shape_color"]}
        print("sr", name, J[name], flush=True)
    J["truth_eval_accuracy"] = score_images(truth, {k: a[k] for k in READ}, ev)["shape_color"]
    return J


@contextmanager
def net_calls(model):
    """Yields a list that gets one entry per forward call of model.net while the block runs (the NFE count)."""
    calls = []
    hook = model.net.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        hook.remove()


def run_few_step(n: int, cache: str | Path, teacher_dir: str | None = None, distill_steps: int = 400,
                 seeds: int = 3) -> dict:
    """J["few_step"]: consistency (Song et al. 2023) and LCM (Luo et al. 2023, guidance folded in) students of a
    class-conditional digits-flow teacher (--teacher DIR, else the preset trained into CACHE/digits-flow and reused),
    distilled into CACHE/{consistency,lcm} (reused when finished). Each row: FID[digits-eval] of n samples against the
    real digits, the mean over sampling seeds 0..seeds-1 (one seed's FID moves by ~0.1 at n=1000), over the
    teacher's at its default NFE (25 Euler steps, cfg 1) on the same seeds in this run, and SVC accuracy (seed 0);
    LCM rows also over the teacher's at LCM's guidance (guidance trades FID for accuracy: that is what LCM distils).
    An LCM samples with its default, TCD's sampler on a shifted grid; lcm_sampler_ablation has plain multistep
    consistency sampling on the uniform grid, and each change alone, at 4 NFE."""
    from imgen.digits_check import digits_quality
    from imgen.metrics.evaluate import evaluate, resolve_source, tensor_source
    from imgen.recipes.consistency import distill_consistency
    from imgen.train import train_preset

    cache = Path(cache)
    teacher = Path(teacher_dir) if teacher_dir else cache / "digits-flow"
    J: dict = {"n": n, "seeds": list(range(seeds)), "teacher": str(teacher), "distill_steps": distill_steps}
    if not teacher_dir:
        J["teacher_train_seconds"] = train_preset("digits-flow", teacher)
    students = {}
    for kind in ("consistency", "lcm"):
        out, record = cache / kind, cache / f"{kind}_seconds.json"
        if not record.is_file():
            t1 = time.perf_counter()
            distill_consistency(teacher, out, kind, train_steps=distill_steps, seed=0)
            record.write_text(json.dumps({"seconds": round(time.perf_counter() - t1, 1)}) + "\n")
        students[kind] = imgen.load(out)
        J[f"{kind}_distill_seconds"] = json.loads(record.read_text())["seconds"]
    J["lcm_guidance"] = students["lcm"].config.method.options["guidance"]
    real = resolve_source("digits")

    def row(name: str, model, steps: int, **options) -> dict:
        fids = []
        with net_calls(model) as calls:
            for seed in range(seeds):
                x = model.sample(n, labels=torch.arange(n) % 10, steps=steps, seed=seed, **options)
                fids.append(evaluate(tensor_source(x, "samples"), real, metrics=("fid",), features="digits-eval",
                                     progress=False)["metrics"]["fid[digits-eval]"])
        c = model.config.sample
        sampler = options.get("sampler", c.sampler)
        eta, shift = options.get("eta", c.eta), options.get("shift", c.shift)
        acc = digits_quality(model, n=n, sampler=sampler, steps=steps, cfg=c.cfg, seed=0)["svc_accuracy"] \
            if not options else None
        r = {"name": name, "nfe": len(calls) // seeds, "fid": round(float(np.mean(fids)), 3),
             "fid_seeds": [round(f, 3) for f in fids], "svc_accuracy": acc, "sampler": sampler}
        if sampler in ("tcd", "ddim"):
            r["eta"] = eta
        if shift != 1:
            r["shift"] = shift
        print("few_step", r, flush=True)
        return r

    teacher_model = imgen.load(teacher)
    ref = row("teacher", teacher_model, teacher_model.config.sample.steps)
    J["teacher"] = ref
    J["teacher_few_nfe"] = [row(f"teacher_euler_{k}", teacher_model, k) for k in (1, 2, 4)]  # no distillation
    lcm = students["lcm"]
    rows = [row("consistency", students["consistency"], 1), row("consistency", students["consistency"], 2),
            row("lcm", lcm, 4), row("lcm", lcm, 1), row("lcm", lcm, 2)]
    J["lcm_sampler_ablation"] = [row("lcm_consistency_uniform", lcm, 4, sampler="consistency", shift=1.0),
                                 row("lcm_consistency_shifted", lcm, 4, sampler="consistency"),
                                 row("lcm_tcd_uniform", lcm, 4, shift=1.0)]
    teacher_model.config.sample.cfg = J["lcm_guidance"]  # the distribution LCM distils: the teacher at its guidance
    J["teacher_guided"] = row(f"teacher_cfg_{J['lcm_guidance']:g}", teacher_model, teacher_model.config.sample.steps)
    for r in rows + J["teacher_few_nfe"] + J["lcm_sampler_ablation"] + [J["teacher_guided"]]:
        r["fid_ratio_to_teacher"] = round(r["fid"] / ref["fid"], 3)
        if r["name"].startswith("lcm"):
            r["fid_ratio_to_guided_teacher"] = round(r["fid"] / J["teacher_guided"]["fid"], 3)
    J["rows"] = rows
    return J


def run_few_step_t2i(n: int, cache: str | Path, distill_steps: int = 400) -> dict:
    """J["few_step_t2i"]: LCM proper (Luo et al. 2023): a latent consistency student of the shipped shapes-latent-t2i,
    its guidance (cfg 3) folded in, distilled on its latents into CACHE/lcm-t2i (reused when finished). n held-out
    prompts (one image each, seed 0): adherence read by shapes-eval and FID[shapes-eval] against the true renders of
    the same scenes, for the teacher at its default (25 Euler steps, cfg 3: one batched call of both branches per
    step), the teacher at 4 steps (no distillation) and the LCM at 4, 2 and 1 NFE at cfg 1 (its default sampler)."""
    from imgen.data.shapes import render_scenes
    from imgen.metrics.adherence import adherence_scenes
    from imgen.metrics.fid import fid
    from imgen.recipes.consistency import distill_consistency

    cache = Path(cache)
    out, record = cache / "lcm-t2i", cache / "lcm-t2i_seconds.json"
    if not record.is_file():
        t1 = time.perf_counter()
        distill_consistency("shapes-latent-t2i", out, "lcm", train_steps=distill_steps, seed=0)
        record.write_text(json.dumps({"seconds": round(time.perf_counter() - t1, 1)}) + "\n")
    student, teacher = imgen.load(out), imgen.load("shapes-latent-t2i")
    ev = load_evaluator("shapes-eval")
    a = adherence_scenes(n)
    real = ev.features(render_scenes(a, 32, a["offset"]))
    prompts, truth = adherence_prompts(n)
    J: dict = {"n": n, "distill_steps": distill_steps, "distill_seconds": json.loads(record.read_text())["seconds"],
               "guidance": student.config.method.options["method_options"]["guidance"]}

    def row(name: str, model, steps: int) -> dict:
        with net_calls(model) as calls:
            t0 = time.perf_counter()
            x = torch.cat([model.generate(prompts[i:i + 100], steps=steps, seed=i) for i in range(0, n, 100)])
            seconds = time.perf_counter() - t0
        rates = score_images(x, truth, ev)
        r = {"name": name, "nfe": len(calls) // math.ceil(n / 100), "cfg": model.config.sample.cfg,
             "sampler": model.config.sample.sampler, "fid": round(fid(ev.features(x), real, "shapes-eval"), 3),
             **{k: round(rates[k], 3) for k in ("shape", "color", "pos", "all_stated")},
             "seconds_per_image": round(seconds / n, 4)}
        print("few_step_t2i", r, flush=True)
        return r

    ref = row("teacher", teacher, teacher.config.sample.steps)
    rows = [ref, row("teacher_euler_4", teacher, 4), row("lcm", student, 4), row("lcm", student, 2),
            row("lcm", student, 1)]
    for r in rows:
        r["fid_ratio_to_teacher"] = round(r["fid"] / ref["fid"], 3)
    J["rows"] = rows
    return J


def run_control(n: int, steps: int = 700, adapter: str | None = None) -> dict:
    """J["control"]: a ControlNet-lite (imgen.recipes.controlnet) of shapes-latent-t2i trained on shapes' label maps,
    then n held-out scenes (held-out (shape, colour) pairs) whose map moves the object to ANOTHER cell than the
    scene's: follows_control (shapes-eval reads the object in the map's cell) for prompts without a position
    ("a small red circle") and, follows_control_against_prompt, for the held-out captions that name the old cell;
    the base without control on the same prompts as the reference (chance 1/9; the prompt's cell when named)."""
    import tempfile

    from imgen.data.shapes import COLOR_NAMES, COLOR_WORDS, SHAPE_WORDS, SHAPES, SIZE_WORDS, SIZES, scene_captions
    from imgen.data.translation import label_maps
    from imgen.metrics.adherence import adherence_scenes
    from imgen.nn.controlnet import read_controlnet
    from imgen.recipes.controlnet import finetune_controlnet

    ev = load_evaluator("shapes-eval")
    a = adherence_scenes(n)
    moved = (a["pos"] + 1 + np.arange(n) % 8) % 9  # never the scene's own cell
    maps = label_maps({**a, "pos": moved}, 32, a["offset"])
    free = [f"a {SIZE_WORDS[SIZES[z]][0]} {COLOR_WORDS[COLOR_NAMES[c]][0]} {SHAPE_WORDS[SHAPES[s]][0]}"
            for s, c, z in zip(a["shape"], a["color"], a["size"])]
    named = scene_captions(a)
    J: dict = {"n": n, "map": "label map (imgen.data.translation.label_maps), 32 px"}
    with tempfile.TemporaryDirectory() as tmp:
        if adapter is None:
            t0 = time.perf_counter()
            adapter = finetune_controlnet("shapes-latent-t2i", Path(tmp) / "control.safetensors", steps=steps,
                                          progress=False)["adapter"]
            J["train_seconds"] = round(time.perf_counter() - t0, 1)
        J["adapter_bytes"], J["steps"] = Path(adapter).stat().st_size, read_controlnet(adapter)[1]["steps"]
        model = imgen.load("shapes-latent-t2i")

        def read(x):
            p = {k: v.numpy() for k, v in ev.predict(x).items()}
            return {"at_map": float((p["pos"] == moved).mean()), "at_prompt": float((p["pos"] == a["pos"]).mean()),
                    "shape_color": float(((p["shape"] == a["shape"]) & (p["color"] == a["color"])).mean())}

        base_free, base_named = read(model.generate(free, seed=0)), read(model.generate(named, seed=0))
        model.load_controlnet(adapter)
        t1 = time.perf_counter()
        ctl_free = read(model.generate(free, seed=0, control=maps))
        J["seconds_per_image"] = round((time.perf_counter() - t1) / n, 3)
        ctl_named = read(model.generate(named, seed=0, control=maps))
    J.update(follows_control=ctl_free["at_map"], base_follows_control=base_free["at_map"],
             follows_control_against_prompt=ctl_named["at_map"], base_follows_control_against_prompt=base_named["at_map"],
             base_at_prompt_position=base_named["at_prompt"], shape_color=ctl_free["shape_color"],
             base_shape_color=base_free["shape_color"], shape_color_against_prompt=ctl_named["shape_color"])
    print("control", J, flush=True)
    return J


def _before_paste(model, prompts, inputs, holes, method, jump_length, resample, k: int = 8) -> float:
    """Known-region PSNR of the decoded samples before inpaint's final paste, on the first k tasks."""
    vals = [known_psnr(inpaint(model, inputs[i], holes[i], prompts[i], method=method, jump_length=jump_length,
                               resample=resample, seed=i, paste=False), inputs[i:i + 1], holes[i])
            for i in range(min(k, len(prompts)))]
    return round(float(np.mean(vals)), 2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="16 prompts instead of 64 (about a minute)")
    p.add_argument("--n", type=int, help="prompts (default 64, --quick 16)")
    p.add_argument("--method", default="repaint", choices=["repaint", "replacement"])
    p.add_argument("--jump-length", type=int, default=5)
    p.add_argument("--resample", type=int, default=5)
    p.add_argument("--out", help="JSON path (default benchmarks/results/applications[_quick].json)")
    p.add_argument("--sr-model", help="sr: an upsampler's directory (default: train the shapes-sr preset, ~4 min)")
    p.add_argument("--few-step-cache", default="runs/bench-few-step", help="few_step: where the digits-flow teacher "
                   "and the students are trained and reused")
    p.add_argument("--teacher", help="few_step: a digits-flow teacher directory (default: train the preset, ~3 min)")
    p.add_argument("--distill-steps", type=int, help="few_step: training steps per student (default 400)")
    p.add_argument("--control-adapter", help="control: a ControlNet file to measure (default: train one, ~5 min)")
    p.add_argument("--inpaint-cache", default="runs/bench-inpaint", help="inpaint: where the trained inpainting "
                   "model is fine-tuned (~4 min) and reused")
    p.add_argument("--only", choices=["inpaint", "inpaint_trained", "lora", "edit", "textual_inversion", "sr", "few_step", "control"],
                   help="run one section (inpaint: inpaint + sdedit; inpaint_trained: J['inpaint']['trained'] "
                        "alone) and keep the JSON file's other sections")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    n = args.n or (16 if args.quick else 64)
    out = Path(args.out) if args.out else RESULTS / ("applications_quick.json" if args.quick else "applications.json")
    t0 = time.perf_counter()
    J = json.loads(out.read_text()) if args.only and out.is_file() else {}
    if args.only in (None, "inpaint"):
        J.update(run(n, args.method, args.jump_length, args.resample, args.inpaint_cache))
    if args.only == "inpaint_trained":
        J.setdefault("inpaint", {})["trained"] = run_trained_inpaint(n, args.inpaint_cache)
    if args.only in (None, "lora"):
        t1 = time.perf_counter()
        J["lora"] = {**run_lora(n), "seconds": round(time.perf_counter() - t1, 1)}
    if args.only in (None, "textual_inversion"):
        t1 = time.perf_counter()
        J["textual_inversion"] = {**run_textual_inversion(n), "seconds": round(time.perf_counter() - t1, 1)}
    if args.only in (None, "edit"):
        t1 = time.perf_counter()
        J["edit"] = {**run_edit(max(4, n // 4)), "seconds": round(time.perf_counter() - t1, 1)}
    if args.only in (None, "sr"):
        t1 = time.perf_counter()
        J["sr"] = {**run_sr(4 * n, args.sr_model), "seconds": round(time.perf_counter() - t1, 1)}  # 0.15 s/image
    if args.only in (None, "few_step"):
        t1 = time.perf_counter()
        fs = run_few_step(1000, args.few_step_cache, args.teacher, args.distill_steps or 400)
        J["few_step"] = fs.pop("rows")
        J["few_step_detail"] = {**fs, "seconds": round(time.perf_counter() - t1, 1)}
        t1 = time.perf_counter()
        J["few_step_t2i"] = {**run_few_step_t2i(500, args.few_step_cache, args.distill_steps or 400),
                             "seconds": round(time.perf_counter() - t1, 1)}
    if args.only in (None, "control"):
        t1 = time.perf_counter()
        J["control"] = {**run_control(4 * n, adapter=args.control_adapter), "seconds": round(time.perf_counter() - t1, 1)}
    if args.only is None:  # the whole run's time; --only SECTION keeps the file's
        J["seconds"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(J, indent=2) + "\n")
    print(f"wrote {out} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
