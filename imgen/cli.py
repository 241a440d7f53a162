"""`imgen` command line: presets, train, finetune, distill, data, sample, generate, inpaint, outpaint, img2img,
upscale, edit, serve, eval, demo.

Bad input ends with one line `imgen: error: ...` naming the problem and the fix (exit code 2).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from imgen import __version__
from imgen.errors import ImgenError, check_int
from imgen.metrics.eval_cli import add_eval_arguments, run_eval
from imgen.paths import output_dir, output_file


def _config_from_args(name_or_path: str, overrides: list[str], steps: int | None, seed: int | None):
    from imgen.config import apply_overrides, load_config
    from imgen.presets import PRESETS, get_preset

    if name_or_path not in PRESETS and Path(name_or_path).is_dir():
        raise ImgenError(f"config {name_or_path!r} is a directory; give a preset name (see `imgen presets`) "
                         "or a .json/.toml config file")
    looks_like_file = Path(name_or_path).suffix in (".json", ".toml") or Path(name_or_path).is_file()
    if name_or_path in PRESETS or not looks_like_file:
        config = get_preset(name_or_path)
    else:
        config = load_config(name_or_path)
    extra = list(overrides or [])
    if steps is not None:
        extra.append(f"train.steps={steps}")
    if seed is not None:
        extra.append(f"train.seed={seed}")
    return apply_overrides(config, extra)


def cmd_presets(args) -> int:
    from imgen.presets import PRESETS, get_preset

    if args.show:
        print(json.dumps(get_preset(args.show).to_dict(), indent=2))
        return 0
    width = max(map(len, PRESETS))
    for name, make in PRESETS.items():
        print(f"{name:<{width}}  {make().description}")
    return 0


def _launch_torchrun(args, config) -> int:
    """`imgen train ... --nproc N`: run this command under torchrun with N processes on this machine."""
    import os
    import subprocess

    if args.nproc < 1:
        raise ImgenError(f"--nproc must be >= 1 (processes on this machine), got {args.nproc}")
    if config.data.batch_size % args.nproc:
        raise ImgenError(f"data.batch_size={config.data.batch_size} does not split over --nproc {args.nproc}; "
                         f"choose --nproc dividing it, or set data.batch_size (--set data.batch_size=...)")
    if "WORLD_SIZE" in os.environ:
        raise ImgenError("--nproc given inside a torchrun job; drop --nproc (torchrun already sets the processes)")
    from imgen.train import Trainer

    Trainer(config, args.out, progress=False)  # what a worker would refuse (config, --out) is refused here, once
    cmd = [sys.executable, "-m", "imgen.torchrun", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "imgen", "train", args.config, "--out", args.out]
    for flag, value in (("--steps", args.steps), ("--seed", args.seed), ("--data-path", args.data_path)):
        if value is not None:
            cmd += [flag, str(value)]
    cmd += [a for kv in args.set for a in ("--set", kv)] + (["--quiet"] if args.quiet else [])
    code = subprocess.run(cmd).returncode
    if code:
        raise ImgenError(f"training with --nproc {args.nproc} failed (exit code {code}); the first worker error "
                         "is printed above. Rerun the same command to resume from the last checkpoint")
    return 0


def cmd_train(args) -> int:
    import os

    from imgen.train import train

    output_dir(args.out)
    data_path = [f"data.options.path={args.data_path}"] if args.data_path else []
    config = _config_from_args(args.config, args.set + data_path, args.steps, args.seed)
    if args.nproc is not None and args.nproc != 1:  # --nproc 1: this process, as without --nproc
        return _launch_torchrun(args, config)
    result = train(config, args.out, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # in a torchrun job only rank 0 reports
        print(f"trained to step {result['step']} (last loss {result['loss']:.4f}); model in {result['out']}")
    return 0


def cmd_data(args) -> int:
    from imgen.data.download import download_dataset

    root = download_dataset(args.name, output_dir(args.to, "--to"), mirror=args.mirror)
    print(f"{args.name} is in {root}; train on it with `imgen train PRESET --data-path {root}`")
    return 0


def _parse_labels(text: str | None):
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ImgenError(f"--label must be an integer or a comma-separated list of integers, got {text!r}") from None


def _check_steps_apply(model, steps: int | None) -> None:
    """--steps given to a model that samples in one pass (GAN, VAE, flow, raster-order AR) would be ignored: say so."""
    if steps is not None and not getattr(model.method, "takes_steps", True):
        raise ImgenError(f"--steps does not apply to {model.config.method.name} models (they sample without a step "
                         "count); drop --steps")


def cmd_sample(args) -> int:
    from imgen.model import load

    if args.n < 1:
        raise ImgenError(f"--n must be >= 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise ImgenError(f"--steps must be >= 1, got {args.steps}")
    _check_image_out(args.out)
    lora = _parse_lora(args.lora)
    model = load(args.model_dir)
    _load_additions(model, lora, args.embedding)
    _check_steps_apply(model, args.steps)
    if len(model.shape) != 3:
        raise ImgenError("this model makes 2D points, not images; sample it from Python: imgen.load(DIR).sample(n)")
    x = model.sample(args.n, labels=_parse_labels(args.label), sampler=args.sampler, steps=args.steps,
                     cfg=args.cfg, eta=args.eta, seed=args.seed, grid=args.grid, shift=args.shift,
                     clip_x0=args.clip_x0, progress=True, temperature=args.temperature, truncation=args.truncation,
                     top_k=args.top_k, top_p=args.top_p)
    _write_images(x, args.out, args.scale, "samples")
    if model.config.method.name == "gan":  # a GAN can collapse to a few images per class (issue 12)
        from imgen.metrics.diversity import mode_collapse_warning, model_diversity_ratio

        labels = None if model.num_classes is None else model._labels(args.n, _parse_labels(args.label))
        ratio = model_diversity_ratio(model, x, labels)
        if ratio is not None and (note := mode_collapse_warning(ratio)):
            print(f"imgen: warning: {note}", file=sys.stderr)
    return 0


def _add_top_k_top_p(s) -> None:
    """A token prior's (token_ar, maskgit) sampling filters; --steps is MaskGIT's decoding iterations."""
    s.add_argument("--top-k", dest="top_k", type=int, help="a token prior's top-k filter (1 = greedy; default: none)")
    s.add_argument("--top-p", dest="top_p", type=float, help="a token prior's nucleus (top-p) filter in (0, 1]")


def _parse_lora(text: str | None) -> tuple[str, float] | None:
    """--lora ADAPTER[:SCALE] -> (path, scale); scale 1 when not given."""
    if text is None:
        return None
    path, sep, scale = text.rpartition(":")
    if not sep or "/" in scale or "\\" in scale or Path(text).is_file():
        path, scale = text, "1"
    try:
        value = float(scale)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise ImgenError(f"--lora scale must be a finite number (ADAPTER:SCALE, e.g. {path}:0.8), got {scale!r}")
    if not Path(path).is_file():
        raise ImgenError(f"--lora adapter {path!r} not found; give the .safetensors file `imgen finetune lora` wrote")
    return path, value


def _load_additions(model, lora: tuple[str, float] | None, embedding: str | None) -> None:
    """--lora and --embedding of sample/generate."""
    if lora:
        model.load_lora(*lora)
    if embedding:
        words = model.load_tokens(embedding)["words"]
        print(f"learned word(s) {', '.join(words)} from {embedding}")


def cmd_finetune(args) -> int:
    steps = (600 if args.kind == "inpaint" else 300) if args.steps is None else args.steps
    common = {"steps": steps, "batch_size": args.batch_size or (32 if args.kind == "inpaint" else 16),
              "seed": args.seed, "progress": not args.quiet}
    if args.kind == "inpaint":
        return _finetune_inpaint(args, common)
    output_file(args.out)
    if args.kind == "lora":
        from imgen.recipes.lora import finetune_lora

        result = finetune_lora(args.base, _finetune_data(args), args.out, rank=args.rank, alpha=args.alpha,
                               targets=args.targets.split(","), lr=args.lr or 1e-3, **common)
        what = "the LoRA adapter"
    elif args.kind == "controlnet":
        from imgen.recipes.controlnet import finetune_controlnet

        if args.data:
            raise ImgenError("a ControlNet trains on shapes label maps rendered on the fly (dataset shapes-control); "
                             "drop --data")
        result = finetune_controlnet(args.base, args.out, lr=args.lr or 1e-3, **common)
        what = "the ControlNet"
    else:
        from imgen.recipes.textual_inversion import finetune_tokens

        if not args.word:
            raise ImgenError("textual inversion needs --word: the new word your captions use for the concept")
        result = finetune_tokens(args.base, _finetune_data(args), args.out, [args.word], args.init_word and [args.init_word],
                                 lr=args.lr or 5e-3, **common)
        what = f"the embedding of {args.word!r}"
    print(f"trained {what} to step {result['step']} (last loss {result['loss']:.4f}); wrote {args.out} "
          f"({result['adapter_bytes'] / 1024:.1f} KiB); the run is in {result['run']} (rerun to resume)")
    return 0


def _finetune_inpaint(args, common: dict) -> int:
    from imgen.recipes.inpaint import finetune_inpaint

    output_dir(args.out)
    if args.data:
        raise ImgenError("an inpainting model trains on the base's shapes scenes with holes drawn on the fly (dataset "
                         "shapes-inpaint); drop --data")
    result = finetune_inpaint(args.base, args.out, lr=args.lr or 5e-4, **common)
    print(f"trained the inpainting model to step {result['step']} (last loss {result['loss']:.4f}); wrote the model "
          f"directory {args.out} (rerun to resume); use: imgen inpaint IMAGE --mask MASK \"prompt\" --model {args.out}")
    return 0


def _finetune_data(args) -> str:
    if not args.data:
        raise ImgenError(f"finetune {args.kind} needs --data FOLDER: PNGs with captions.jsonl")
    return args.data


def cmd_distill(args) -> int:
    output_dir(args.out)
    common = {"lr": args.lr or 5e-4, "batch_size": args.batch_size, "progress": not args.quiet}
    if args.kind == "progressive":
        from imgen.recipes.distill import distill

        out = distill(args.teacher, args.out, start_steps=args.start_steps, end_steps=args.student_steps or 4,
                      train_steps=args.steps, **common)
    else:
        from imgen.recipes.consistency import distill_consistency

        out = distill_consistency(args.teacher, args.out, args.kind, train_steps=args.steps, guidance=args.guidance,
                                  sample_steps=args.student_steps, skip=args.skip, seed=args.seed, **common)
    from imgen.model import load

    how = (f'imgen generate "a red circle" --model {out} --out image.png' if load(out).is_text
           else f"imgen sample {out} --out grid.png")
    print(f"distilled {args.kind} student in {out}; sample it with `{how}` (--steps N for another step count)")
    return 0


def _check_image_out(out: str) -> None:
    """--out of sample/generate (a .png grid or a folder of PNGs) can be written; checked before any work."""
    if Path(out).suffix.lower() == ".png":
        output_file(out)
    else:
        output_dir(out)


def _write_images(x, out: str, scale: int, what: str) -> None:
    """A .png path gets one grid of all images; any other path becomes a folder of one PNG per image."""
    from imgen.images import save_grid, save_pngs

    out = Path(out)
    if out.suffix.lower() == ".png":
        save_grid(x, out, scale=scale)
        print(f"wrote a grid of {len(x)} {what} to {out}")
    else:
        save_pngs(x, out)
        print(f"wrote {len(x)} PNGs of {what} to {out}/")


def resolve_model(name_or_dir: str | None) -> Path:
    """A model directory, or the name of a model shipped in imgen/pretrained/models."""
    from imgen.pretrained import DEFAULT_TEXT_MODEL, SHIPPED_MODELS, resolve_model_path

    name_or_dir = name_or_dir or DEFAULT_TEXT_MODEL
    path = resolve_model_path(name_or_dir)
    if not path.is_dir():
        raise ImgenError(f"--model {name_or_dir!r} is neither a shipped model ({', '.join(SHIPPED_MODELS)}) "
                         f"nor a model directory; train one with `imgen train shapes-t2i --out DIR`")
    return path


def cmd_generate(args) -> int:
    import warnings

    from imgen.model import load

    if args.n < 1:
        raise ImgenError(f"--n must be >= 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise ImgenError(f"--steps must be >= 1, got {args.steps}")
    if args.rerank is not None and args.rerank < 1:
        raise ImgenError(f"--rerank must be >= 1 (candidates per image; 1 = no reranking), got {args.rerank}")
    if not args.prompt.strip() and not args.unconditional:
        raise ImgenError("the prompt is empty; describe an image (e.g. \"a red circle in the top left\"), or pass "
                         "--unconditional to sample the model without text")
    _check_image_out(args.out)
    lora = _parse_lora(args.lora)
    if bool(args.control) != bool(args.controlnet):
        raise ImgenError("--control MAP and --controlnet FILE go together: the map and the ControlNet that reads it "
                         "(imgen finetune controlnet)")
    model = load(resolve_model(args.model))
    _load_additions(model, lora, args.embedding)
    control = _read_control(model, args.controlnet, args.control) if args.control else None
    _check_steps_apply(model, args.steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = model.generate([args.prompt or "-"], n=args.n, negative=args.negative, unconditional=args.unconditional,
                           sampler=args.sampler, steps=args.steps, cfg=args.cfg, seed=args.seed, control=control,
                           **{k: v for k in ("temperature", "top_k", "top_p", "rerank", "reranker")
                              if (v := getattr(args, k)) is not None})
    for w in caught:
        print(f"imgen: warning: {w.message}", file=sys.stderr)
    prompt = args.prompt if len(args.prompt) <= 80 else args.prompt[:77] + "..."
    _write_images(x, args.out, args.scale, f"images for {prompt!r}")
    return 0


def _read_control(model, controlnet: str, path: str):
    """--controlnet FILE and --control MAP of generate: attach the ControlNet, read the map at its size and mode."""
    from imgen.apps.inputs import read_image_file

    meta = model.load_controlnet(controlnet)
    shape = (meta["control_channels"], meta["control_size"], meta["control_size"])
    return read_image_file(path, shape, takes="the ControlNet reads", fix="draw the map")


def _app_inputs(args):
    """The model, the checked input image and the sampler options of an image-to-image verb (imgen.apps)."""
    from imgen.apps.inputs import pixel_shape, read_image
    from imgen.model import load

    if args.n < 1:
        raise ImgenError(f"--n must be >= 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise ImgenError(f"--steps must be >= 1, got {args.steps}")
    _check_image_out(args.out)
    model = load(resolve_model(args.model))
    pixel_shape(model)  # refuses a model that is not a diffusion or flow model of images
    image = read_image(args.image, model)
    opts = {"n": args.n, "seed": args.seed, "steps": args.steps, "cfg": args.cfg, "sampler": args.sampler,
            "label": None if args.label is None else _parse_labels(args.label), "progress": True}
    return model, image, opts


def cmd_inpaint(args) -> int:
    from imgen.apps.inpaint import inpaint
    from imgen.apps.inputs import read_mask

    model, image, opts = _app_inputs(args)
    mask = read_mask(args.mask, tuple(image.shape[2:]))
    method = args.method or ("trained" if model.is_inpainting else "repaint")
    x = inpaint(model, image, mask, args.prompt, method=method, jump_length=args.jump_length,
                resample=args.resample, **opts)
    _write_images(x, args.out, args.scale, f"inpainted images ({method})")
    return 0


def cmd_outpaint(args) -> int:
    from imgen.apps.inpaint import outpaint

    model, image, opts = _app_inputs(args)
    by = args.by if args.by is not None else image.shape[-1] // 4
    x, _ = outpaint(model, image, args.extend, by, args.prompt, method=args.method, jump_length=args.jump_length,
                    resample=args.resample, **opts)
    print(f"the model's canvas is fixed at {image.shape[-1]}x{image.shape[-2]}: the image was shifted {by} pixels "
          f"away from {' and '.join(args.extend)} and the uncovered band filled")
    _write_images(x, args.out, args.scale, "outpainted images")
    return 0


def cmd_img2img(args) -> int:
    from imgen.apps.img2img import img2img

    if not 0.0 <= args.strength <= 1.0:
        raise ImgenError(f"--strength must be in [0, 1] (0 keeps the input, 1 ignores it), got {args.strength}")
    model, image, opts = _app_inputs(args)
    x = img2img(model, image, args.prompt, args.strength, **opts)
    _write_images(x, args.out, args.scale, f"img2img images (strength {args.strength})")
    return 0


def cmd_upscale(args) -> int:
    from imgen.apps.upscale import low_res_shape, read_low_res, upscale
    from imgen.images import to_pil
    from imgen.model import load

    if args.steps is not None and args.steps < 1:
        raise ImgenError(f"--steps must be >= 1, got {args.steps}")
    if Path(args.out).suffix.lower() != ".png":
        raise ImgenError(f"--out must be a .png path, got {args.out!r}")
    output_file(args.out)
    model = load(resolve_model(args.model))
    low_res_shape(model)  # refuses a model that is not an upsampler
    x = upscale(model, read_low_res(args.image, model), seed=args.seed, aug_level=args.aug_level, steps=args.steps,
                sampler=args.sampler)
    to_pil(x)[0].save(args.out)
    print(f"wrote the {x.shape[-1]}x{x.shape[-2]} upscaled image to {args.out}")
    return 0


def cmd_translate(args) -> int:
    from imgen.apps.translate import read_sources, translate
    from imgen.images import save_grid, to_pil
    from imgen.model import load

    if args.scale < 1:
        raise ImgenError(f"--scale must be >= 1, got {args.scale}")
    _check_image_out(args.out)
    model = load(resolve_model(args.model))
    x = translate(model, read_sources(args.images, model), args.direction)
    out = Path(args.out)
    if out.suffix.lower() == ".png" and len(x) == 1:  # the translated image itself, at its own size
        to_pil(x)[0].save(out)
        print(f"wrote the {x.shape[-1]}x{x.shape[-2]} translated image to {out}")
        return 0
    if out.suffix.lower() == ".png":  # one grid: each translated image in the input order
        save_grid(x, out, scale=args.scale)
        print(f"wrote a grid of {len(x)} translated images to {out}")
        return 0
    stems = [Path(p).stem for p in args.images]
    names = stems if len(set(stems)) == len(stems) else [f"{i:05d}" for i in range(len(stems))]
    out.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, to_pil(x)):
        img.save(out / f"{name}.png")
    print(f"wrote {len(x)} translated PNGs to {out}/")
    return 0


def cmd_edit(args) -> int:
    from imgen.apps.edit import edit
    from imgen.apps.inputs import pixel_shape, read_image
    from imgen.model import load

    if args.steps is not None and args.steps < 1:
        raise ImgenError(f"--steps must be >= 1, got {args.steps}")
    _check_image_out(args.out)
    model = load(resolve_model(args.model))
    pixel_shape(model)
    image = read_image(args.image, model)
    x = edit(model, image, args.source, args.target, cfg=args.cfg, steps=args.steps,
             cross_replace=args.cross_replace, null_text=not args.no_null_text, keep_unchanged=not args.no_keep,
             progress=True)
    _write_images(x, args.out, args.scale, f"edited image ({args.source!r} -> {args.target!r})")
    return 0


def cmd_serve(args) -> int:
    from imgen.web.app import serve

    dirs = {}
    for name_or_dir in args.model or [None]:
        path = resolve_model(name_or_dir)
        name = name_or_dir if name_or_dir and not Path(name_or_dir).is_dir() else path.name
        while name in dirs:  # two directories of one base name
            name += "'"
        dirs[name] = path
    serve(dirs, host=args.host, port=args.port)
    return 0


def cmd_demo(args) -> int:
    from imgen.demo import run_demo

    output_dir(args.out)
    report = run_demo(args.out, steps=args.steps, seed=args.seed)
    print(f"demo report: {report}")
    return 0


def cmd_report(args) -> int:
    from imgen.model_report import write_model_report

    if args.n < 1:
        raise ImgenError(f"--n must be >= 1, got {args.n}")
    output_dir(args.out)
    path = write_model_report(resolve_model(args.model), args.out, n=min(args.n, 16), seed=args.seed)
    print(f"report: {path}")
    return 0


def cmd_latent(args) -> int:
    """imgen latent grid|interpolate|attribute: pictures of an autoencoder's / VAE's latent space (imgen.apps.latent)."""
    from imgen.apps.latent import MODES, apply_attribute, attribute_vector, interpolate, latent_grid, scenes_with
    from imgen.data import load_dataset
    from imgen.images import save_grid, to_pil
    from imgen.model import load

    if Path(args.out).suffix.lower() != ".png":
        raise ImgenError(f"--out must be a .png path, got {args.out!r}")
    output_file(args.out)
    if args.action == "grid":
        if args.n < 2:
            raise ImgenError(f"--n must be >= 2 (grid points per axis), got {args.n}")
        img = to_pil(latent_grid(load(args.model_dir), n=args.n)[None])[0]
        img.resize((img.width * args.scale, img.height * args.scale)).save(args.out)
        print(f"wrote the {args.n}x{args.n} latent grid to {args.out}")
        return 0
    if args.action == "attribute":
        import torch

        from imgen.data.shapes import COLOR_NAMES

        for flag, name in (("--source", args.source), ("--target", args.target)):
            if name not in COLOR_NAMES:
                raise ImgenError(f"{flag} must be a shapes colour ({', '.join(COLOR_NAMES)}), got {name!r}")
        check_int(args.n, "--n")
        check_int(args.examples, "--examples")
        model = load(args.model_dir)
        data = load_dataset(model.config.data.name, **model.config.data.options)
        if not hasattr(data, "attributes") or "color" not in data.attributes([0]):
            raise ImgenError(f"imgen latent attribute needs a model trained on shapes (ground-truth colours); "
                             f"{args.model_dir} was trained on {model.config.data.name!r}")
        half = len(data) // 2  # the vector from the first half, the edited scenes from the second
        try:
            with_, without = (scenes_with(data, "color", COLOR_NAMES.index(c), args.examples, stop=half)["image"]
                              for c in (args.target, args.source))
        except ImgenError as e:
            raise ImgenError(f"{e} (--examples)") from None
        shown = scenes_with(data, "color", COLOR_NAMES.index(args.source), args.n, start=half)
        v = attribute_vector(model, with_, without)  # White 2016, sec. 2.4 (Model.encode/decode run without grad)
        edited = apply_attribute(model, shown["image"], v, scale=args.strength)
        save_grid(torch.cat([shown["image"], edited.clamp(-1, 1)]), args.out, nrow=args.n, scale=args.scale)
        print(f"wrote {args.n} {args.source} scenes (top) and their edits by the {args.target}-minus-{args.source} "
              f"vector x {args.strength} (bottom) to {args.out}")
        return 0
    if args.mode not in MODES:
        raise ImgenError(f"--mode must be one of {', '.join(MODES)}, got {args.mode!r}")
    if args.steps < 2:
        raise ImgenError(f"--steps must be >= 2, got {args.steps}")
    model = load(args.model_dir)
    data = load_dataset(model.config.data.name, **model.config.data.options)
    for name, i in (("--a", args.a), ("--b", args.b)):
        if not 0 <= i < len(data):
            raise ImgenError(f"{name} must be an image index in 0..{len(data) - 1} of the model's dataset, got {i}")
    x = data.get([args.a, args.b])["image"]
    frames = interpolate(model, x[:1], x[1:], steps=args.steps, mode=args.mode)
    save_grid(frames, args.out, nrow=args.steps, scale=args.scale)
    print(f"wrote {args.steps} {args.mode} interpolation frames to {args.out}")
    return 0


GENERATE_SAMPLERS_HELP = ("ddpm, ddim, euler, heun, edm, dpmpp_2m, midpoint; tcd or consistency for an LCM student "
                          "(default: the model's)")  # --sampler of generate and of the image-to-image verbs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imgen", description="Train, sample and evaluate image generators on a CPU.")
    p.add_argument("--version", action="version", version=f"imgen {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("presets", help="list ready-to-train configs")
    s.add_argument("--show", metavar="NAME", help="print one preset's full config as JSON")
    s.set_defaults(fn=cmd_presets)

    s = sub.add_parser("train", help="train a model (rerun on the same --out to resume)")
    s.add_argument("config", help="a preset name (see `imgen presets`) or a .json/.toml config file")
    s.add_argument("--out", required=True, help="model directory to write (and resume from)")
    s.add_argument("--steps", type=int, help="total training steps (overrides train.steps)")
    s.add_argument("--seed", type=int, help="overrides train.seed")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.lr=1e-3")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--data-path", metavar="DIR", help="the dataset's folder, e.g. from `imgen data download` "
                                                      "(sets data.options.path)")
    s.add_argument("--nproc", type=int, help="train with N processes on this machine (launches torchrun; the "
                                             "batch is split over them)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("data", help="datasets: download mnist, fashion-mnist or cifar10")
    s.add_argument("action", choices=["download"])
    s.add_argument("name", choices=["mnist", "fashion-mnist", "cifar10"])
    s.add_argument("--to", required=True, metavar="DIR", help="folder to put it in (pass it to --data-path)")
    s.add_argument("--mirror", metavar="URL", help="serves URL/NAME/FILE instead of the official hosts "
                                                  "(default: $IMGEN_DATA_MIRROR, else the official hosts)")
    s.set_defaults(fn=cmd_data)

    s = sub.add_parser("finetune", help="teach a trained model a concept from a captioned image folder (LoRA, "
                                        "textual inversion), or to follow layout maps (ControlNet)")
    s.add_argument("kind", choices=["lora", "textual-inversion", "controlnet", "inpaint"],
                   help="lora: low-rank adapters (Hu et al. 2021); textual-inversion: a new word's embedding "
                        "(Gal et al. 2022); controlnet: ControlNet-lite on shapes label maps (Zhang et al. 2023); "
                        "inpaint: an inpainting model (mask + masked image as input channels, as Stable Diffusion's)")
    s.add_argument("base", help="the base model: a shipped model name or a model directory")
    s.add_argument("--data", metavar="FOLDER", help="lora, textual-inversion: PNGs with captions.jsonl "
                                                    "({\"file\": ..., \"caption\": ...} per line)")
    s.add_argument("--out", required=True, metavar="ADAPTER", help="the adapter to write, a .safetensors path "
                                                                   "(trains in ADAPTER.run/; rerun to resume); "
                                                                   "inpaint: the model directory")
    s.add_argument("--steps", type=int, help="training steps (default 300, inpaint 600; a rerun with more resumes)")
    s.add_argument("--rank", type=int, default=4, help="LoRA rank r")
    s.add_argument("--alpha", type=float, help="LoRA alpha (update scaled by alpha / r; default: r)")
    s.add_argument("--targets", default="attn,conv", help="LoRA: comma-separated attn, conv, text (default attn,conv)")
    s.add_argument("--word", help="textual inversion: the new word the captions use for the concept, e.g. zorp")
    s.add_argument("--init-word", help="textual inversion: a known word to start from, e.g. triangle")
    s.add_argument("--lr", type=float, help="learning rate (default: 1e-3 LoRA and ControlNet, 5e-3 textual inversion, "
                                            "5e-4 inpaint)")
    s.add_argument("--batch-size", type=int, help="default 16 (inpaint: 32)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_finetune)

    s = sub.add_parser("distill", help="a few-step student of a diffusion/flow teacher: consistency distillation, "
                                       "LCM (guidance folded in) or progressive distillation")
    s.add_argument("teacher", help="the teacher's model directory (a diffusion or flow model)")
    s.add_argument("--out", required=True, help="the student's model directory (rerun to resume)")
    s.add_argument("--kind", choices=["consistency", "lcm", "progressive"], default="consistency",
                   help="consistency: Song et al. 2023 (1-2 steps); lcm: Luo et al. 2023, classifier-free guidance "
                        "folded in (4 TCD steps); progressive: Salimans & Ho 2022 (halving rounds)")
    s.add_argument("--steps", type=int, default=400, help="training steps (progressive: per round)")
    s.add_argument("--student-steps", type=int, help="the student's sampling steps (default: consistency 1, lcm 4, "
                                                     "progressive 4)")
    s.add_argument("--guidance", type=float, help="lcm: the cfg scale folded into the student (default 1.2)")
    s.add_argument("--skip", type=int, default=1, help="consistency/lcm: LCM's skipping step k on the teacher grid")
    s.add_argument("--start-steps", type=int, default=32, help="progressive: the teacher's steps (a power-of-two "
                                                               "multiple of --student-steps)")
    s.add_argument("--lr", type=float, help="learning rate (default 5e-4)")
    s.add_argument("--batch-size", type=int, help="default: the teacher's")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_distill)

    s = sub.add_parser("sample", help="sample a trained model to a PNG grid or a folder of PNGs")
    s.add_argument("model_dir")
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--out", required=True, help="a .png path for a grid, or a folder for one PNG per sample")
    s.add_argument("--sampler", help="ddpm, ddim, euler, heun, edm, dpmpp_2m, midpoint, langevin, consistency "
                                        "or tcd (default: the model's)")
    s.add_argument("--grid", help="time grid: uniform, karras or logsnr (default: the model's)")
    s.add_argument("--shift", type=float, help="move the grid's times toward the noise, SD3's shift > 0 (1 = none; "
                   "default: the model's)")
    s.add_argument("--steps", type=int, help="sampling steps (network evaluations)")
    s.add_argument("--cfg", type=float, help="classifier-free guidance scale (1 = none)")
    s.add_argument("--eta", type=float, help="DDIM eta in [0, 1]; TCD's gamma for --sampler tcd")
    s.add_argument("--temperature", type=float, help="prior std of a normalizing flow (e.g. 0.7), or a token prior's "
                   "softmax temperature (default: the model's)")
    _add_top_k_top_p(s)
    s.add_argument("--truncation", type=float, metavar="PSI",
                   help="a StyleGAN's truncation psi in [0, 1]: lower is more typical, less varied (default: 1, none)")
    s.add_argument("--label", help="class label, or comma-separated labels, one per sample")
    s.add_argument("--no-clip-x0", dest="clip_x0", action="store_false", default=None,
                   help="do not clip the predicted x0 to [-1, 1] at each step")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=int, default=4, help="pixel enlargement of the grid PNG")
    s.add_argument("--lora", metavar="ADAPTER[:SCALE]", help="apply a LoRA adapter (imgen finetune lora) at SCALE "
                                                             "(default 1)")
    s.add_argument("--embedding", metavar="FILE", help="words learned by `imgen finetune textual-inversion`")
    s.set_defaults(fn=cmd_sample)

    s = sub.add_parser("generate", help="images from a text prompt with a text-to-image model")
    s.add_argument("prompt", help='what to draw, e.g. "a red circle in the top left"')
    s.add_argument("--model", help="a shipped model name or a model directory (default: the shipped shapes model)")
    s.add_argument("--out", required=True, help="a .png path (grid of the --n images) or a folder for one PNG each")
    s.add_argument("--n", type=int, default=1, help="number of images")
    s.add_argument("--cfg", type=float, help="classifier-free guidance scale (1 = none; default: the model's)")
    s.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    s.add_argument("--sampler", help=GENERATE_SAMPLERS_HELP)
    s.add_argument("--temperature", type=float, help="a token prior's softmax temperature (default: 1)")
    _add_top_k_top_p(s)
    s.add_argument("--rerank", type=int, metavar="K", help="draw K candidates per image and keep the one the model's "
                                                           "reranker CLIP scores best (default: the model's; 1 = off)")
    s.add_argument("--reranker", metavar="CLIP", help="the CLIP that scores --rerank's candidates: a directory or a "
                                                      "shipped name, e.g. shapes-scenes-clip (default: the model's)")
    s.add_argument("--negative", help="a negative prompt: guidance steers away from it instead of from no text")
    s.add_argument("--unconditional", action="store_true", help="ignore the prompt; sample without text")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=int, default=4, help="pixel enlargement of the grid PNG")
    s.add_argument("--lora", metavar="ADAPTER[:SCALE]", help="apply a LoRA adapter (imgen finetune lora) at SCALE "
                                                             "(default 1)")
    s.add_argument("--embedding", metavar="FILE", help="words learned by `imgen finetune textual-inversion`")
    s.add_argument("--controlnet", metavar="FILE", help="a ControlNet (imgen finetune controlnet) that reads --control")
    s.add_argument("--control", metavar="MAP", help="a control map PNG (a shapes label map, RGB at the image size) "
                                                    "the ControlNet makes the layout follow")
    s.set_defaults(fn=cmd_generate)

    for verb, help_ in (("inpaint", "fill the white part of --mask in an image (RePaint or replacement)"),
                        ("outpaint", "extend an image past its edges (shifted within the model's fixed canvas)"),
                        ("img2img", "redraw an image under a prompt from noise level --strength (SDEdit)")):
        s = sub.add_parser(verb, help=help_)
        s.add_argument("image", help="the input PNG, at the model's image size")
        s.add_argument("prompt", help='what to draw with a text-to-image model; "" for a model without text')
        s.add_argument("--model", help="a shipped model name or a model directory (default: the shipped shapes model)")
        s.add_argument("--out", required=True, help="a .png path (grid of the --n images) or a folder for one PNG each")
        s.add_argument("--n", type=int, default=1, help="number of images")
        s.add_argument("--label", help="class label of a class-conditional model")
        s.add_argument("--cfg", type=float, help="classifier-free guidance scale (default: the model's)")
        s.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
        s.add_argument("--sampler", help=GENERATE_SAMPLERS_HELP)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--scale", type=int, default=4, help="pixel enlargement of the grid PNG")
        if verb == "inpaint":
            s.add_argument("--mask", required=True, help="a black-and-white PNG of the image's size: white = fill")
        if verb == "outpaint":
            s.add_argument("--extend", action="append", required=True, choices=["left", "right", "top", "bottom"],
                           help="side to extend; repeat for two (one per axis)")
            s.add_argument("--by", type=int, help="pixels to extend (default: a quarter of the width)")
        if verb in ("inpaint", "outpaint"):
            s.add_argument("--method", choices=["repaint", "replacement", "trained"],
                           help="default: trained for an inpainting model (imgen finetune inpaint), else repaint")
            s.add_argument("--jump-length", type=int, default=5, help="RePaint: sampler steps between jumps back")
            s.add_argument("--resample", type=int, default=5, help="RePaint: times each segment is run")
        else:
            s.add_argument("--strength", type=float, default=0.6, help="noise level to start from, in [0, 1]")
        s.set_defaults(fn={"inpaint": cmd_inpaint, "outpaint": cmd_outpaint, "img2img": cmd_img2img}[verb])

    s = sub.add_parser("upscale", help="enlarge a low-res image with a super-resolution model (SR3: imgen train "
                       "shapes-sr; SRGAN: shapes-srgan)")
    s.add_argument("image", help="the low-res PNG, at the upsampler's input size (8x8 for shapes-sr)")
    s.add_argument("--model", required=True, help="an upsampler's model directory (imgen train shapes-sr|shapes-srgan "
                   "--out DIR)")
    s.add_argument("--out", required=True, help="a .png path")
    s.add_argument("--steps", type=int, help="sampling steps (default: the model's; SR3 only, not SRGAN)")
    s.add_argument("--sampler", help="ddpm, ddim, euler, heun, edm, dpmpp_2m, midpoint (default: the model's; SR3 only)")
    s.add_argument("--aug-level", type=float, help="noise-conditioning augmentation level in [0, 1] (default: the "
                   "model's sample_aug; SR3 only)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_upscale)

    s = sub.add_parser("translate", help="translate images with an image-to-image model (pix2pix: shapes label "
                       "maps -> images; CycleGAN: black <-> gray backgrounds)")
    s.add_argument("model", help="a translation model's directory (imgen train shapes-pix2pix|shapes-cyclegan "
                   "--out DIR)")
    s.add_argument("images", nargs="+", help="source PNGs at the model's size (32x32 RGB label maps for "
                   "shapes-pix2pix)")
    s.add_argument("--direction", default="ab", choices=["ab", "ba"], help="CycleGAN: ab = domain A -> B (default), "
                   "ba = B -> A; pix2pix translates ab only")
    s.add_argument("--out", required=True, help="a .png path (the image for one input, a grid for several) or a "
                   "folder (one PNG per input, named after it)")
    s.add_argument("--scale", type=int, default=4, help="pixel enlargement of the grid PNG")
    s.set_defaults(fn=cmd_translate)

    s = sub.add_parser("edit", help="change one word of an image's prompt (null-text inversion + prompt-to-prompt)")
    s.add_argument("image", help="the input PNG, at the model's image size")
    s.add_argument("--from", dest="source", required=True, help='the prompt that describes the image, e.g. "a red '
                   'circle on the left"')
    s.add_argument("--to", dest="target", required=True, help='the same prompt with words swapped, e.g. "a blue '
                   'circle on the left"')
    s.add_argument("--model", help="a shipped model name or a model directory (default: the shipped shapes model)")
    s.add_argument("--out", required=True, help="a .png path")
    s.add_argument("--cfg", type=float, help="classifier-free guidance scale (default: the model's)")
    s.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    s.add_argument("--cross-replace", type=float, default=0.8,
                   help="fraction of steps that use the source prompt's cross-attention maps")
    s.add_argument("--no-null-text", action="store_true", help="plain DDIM inversion (faster, less faithful at cfg > 1)")
    s.add_argument("--no-keep", action="store_true", help="return the edited sample as drawn, without keeping the "
                   "input's pixels where the edit changed little")
    s.add_argument("--scale", type=int, default=4, help="pixel enlargement of the PNG")
    s.set_defaults(fn=cmd_edit)

    s = sub.add_parser("serve", help="a web page to sample models in the browser (needs `pip install 'imgen[web]'`)")
    s.add_argument("--model", action="append", metavar="NAME_OR_DIR",
                   help="a shipped model name or a model directory; repeat for several (default: the shipped "
                        "text-to-image model)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=7860)
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("demo", help="train a small model on built-in data and write a report")
    s.add_argument("--out", default="imgen-demo", help="folder for the model and the report")
    s.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("report", help="an HTML page of a trained model's pictures, chosen by its family (samples, "
                                      "reconstructions, interpolations, truncation, translations, upscales ...)")
    s.add_argument("model", help="a trained model directory (config.json + safetensors) or a shipped model's name")
    s.add_argument("--out", default="imgen-report", help="folder for report.html and its PNGs")
    s.add_argument("--n", type=int, default=8, help="images per row (at most 16)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("latent", help="latent-space pictures of an autoencoder or VAE: grid, interpolate, attribute")
    s.add_argument("action", choices=["grid", "interpolate", "attribute"],
                   help="grid: decode a grid of a 2-D latent; interpolate: between two images of the model's data; "
                        "attribute: add the mean latent of --target-coloured shapes scenes minus that of --source "
                        "ones to --source scenes")
    s.add_argument("model_dir")
    s.add_argument("--out", required=True, help="a .png path")
    s.add_argument("--n", type=int, default=15, help="grid: points per axis; attribute: scenes edited")
    s.add_argument("--source", default="blue", help="attribute: the colour of the edited scenes")
    s.add_argument("--target", default="red", help="attribute: the colour the vector points to")
    s.add_argument("--examples", type=int, default=300, help="attribute: scenes of each colour averaged")
    s.add_argument("--strength", type=float, default=1.0, help="attribute: multiple of the vector added")
    s.add_argument("--a", type=int, default=0, help="interpolate: index of the first image in the model's dataset")
    s.add_argument("--b", type=int, default=1, help="interpolate: index of the second image")
    s.add_argument("--steps", type=int, default=8, help="interpolate: frames, both ends included")
    s.add_argument("--mode", default="linear", help="interpolate: linear or slerp")
    s.add_argument("--scale", type=int, default=4, help="pixel enlargement of the PNG")
    s.set_defaults(fn=cmd_latent)

    s = sub.add_parser("eval", help="FID, KID, IS, precision/recall ... of generated images against a reference")
    add_eval_arguments(s)
    s.set_defaults(fn=run_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ImgenError as e:
        print(f"imgen: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the checks above could not foresee (disk full, removed mid-run): still one line
        if e.filename is None:
            raise
        print(f"imgen: error: cannot use {str(e.filename)!r}: {e.strerror}; check the path, its permissions and "
              "the free disk space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imgen: interrupted; the last checkpoint is kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
