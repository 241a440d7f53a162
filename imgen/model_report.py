"""`imgen report DIR`: one HTML page of pictures for any trained model directory, the ones its family is taught
with: samples (a row per class), flow samples at several temperatures, a StyleGAN's truncation strip and style
mixing, an autoencoder's reconstructions, interpolations, colour attribute edit and 2-D latent map, a tokenizer's
reconstructions, a translator's before/after, an upsampler's low-res / bicubic / upscaled / truth, a text
model's prompts beside their images (a text GAN's: several per prompt, and a caption interpolation). Inputs are
items the model was not trained on (the test split, or another seed of a generated dataset). Beside them: the config, the loss curve and the model's metrics.json.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import torch

from imgen.data import DATASETS, load_dataset
from imgen.errors import ImgenError
from imgen.images import adapt_images
from imgen.report import Report, loss_curve

TEMPERATURES = (0.5, 0.7, 0.85, 1.0)
PSIS = (1.0, 0.7, 0.5, 0.3)
TEST_SPLIT = ("digits", "mnist", "fashion-mnist", "cifar10")  # datasets with a held-out test split


def held_out(model, n: int) -> dict:
    """n items of the model's dataset it was not trained on: the test split where there is one, else the same
    generated stream at another seed (an image folder has neither: its first images)."""
    name, opts = model.config.data.name, dict(model.config.data.options)
    params = inspect.signature(DATASETS[name.lower().replace("_", "-")]).parameters
    if name in TEST_SPLIT:
        opts["split"] = "test"
    elif "seed" in params:
        opts["seed"] = int(opts.get("seed", 0)) + 7919  # scenes drawn from another seed: never seen in training
    ds = load_dataset(name, **opts)
    return ds.get(np.arange(min(n, len(ds))))


def _interleave(*rows: torch.Tensor) -> torch.Tensor:
    """Rows (B, C, H, W) each -> (len(rows) * B, C, H, W) stacked row after row (one grid row per tensor)."""
    return torch.cat([r.float().clamp(-1, 1) for r in rows])


def _family(model) -> str:
    method = model.config.method.name
    if model.is_inpainting:
        return "inpaint"
    if model.is_text:
        return "text"
    if model.is_upsampler or hasattr(model.method, "upscale"):
        return "upscale"
    if method in ("pix2pix", "cyclegan"):
        return "translation"
    if model.is_tokenizer:
        return "tokenizer"
    latent_vae = model.latent and model.config.method.options.get("method") == "vae"  # encodes pixels in two stages
    if len(model.shape) == 3 and hasattr(model.net, "encode") and hasattr(model.net, "decode") and (
            latent_vae or not model.latent):
        return "autoencoder"
    return "sampler"


def _samples(rep: Report, model, n: int, seed: int):
    classes = model.num_classes
    if classes:
        per = max(1, n // 2)  # rows
        labels = torch.arange(classes).repeat_interleave(per)
        x = model.sample(len(labels), labels=labels.tolist(), seed=seed)
        rep.grid(x.view(classes, per, *x.shape[1:]).transpose(0, 1).flatten(0, 1), "samples.png",
                 f"samples, one column per class (0..{classes - 1}), seed {seed}", nrow=classes)
    else:
        rep.grid(model.sample(n, seed=seed), "samples.png", f"{n} samples, seed {seed}")


def _flow_temperatures(rep: Report, model, n: int, seed: int):
    rows = [model.sample(n, seed=seed, temperature=t) for t in TEMPERATURES]
    rep.grid(_interleave(*rows), "temperatures.png", "the same z at temperature " + ", ".join(map(str, TEMPERATURES))
             + " (one row each; Glow sec. 5: a lower temperature trades diversity for cleaner samples)", nrow=n)


def _stylegan(rep: Report, model, seed: int):
    from imgen.plots import style_mixing_grid, truncation_strip

    rep.figure(truncation_strip(model, PSIS, seed=seed), "truncation.png",
               "truncation trick: the same z with w pulled toward the mean w (StyleGAN sec. 5.1)")
    rep.figure(style_mixing_grid(model, seed=seed), "style_mixing.png",
               "style mixing: coarse styles from the top row, fine styles from the left column (StyleGAN fig. 3)")


def _autoencoder(rep: Report, model, batch: dict, n: int):
    from imgen.apps.latent import apply_attribute, attribute_vector, interpolate, latent_grid

    x = batch["image"]
    rep.grid(_interleave(x[:n], model.reconstruct(x[:n])), "reconstructions.png",
             "held-out images (top) and their reconstructions (bottom)", nrow=n)
    k = min(4, len(x) // 2)
    if k:
        rep.grid(interpolate(model, x[:k], x[k:2 * k], steps=8, mode="slerp"), "interpolations.png",
                 "decoded spherical interpolations between the latents of two held-out images, one pair a row", nrow=8)
    if tuple(getattr(model.net, "latent_shape", ())) == (2,):
        rep.grid(latent_grid(model, n=15)[None], "latent_map.png",
                 "the 2-D latent space: decoded at the N(0, 1) quantiles of a 15 x 15 grid (Kingma & Welling fig. 4)")
    attrs = batch.get("attrs")
    if attrs is not None and "color" in attrs:
        from imgen.data.shapes import COLORS

        names = list(COLORS)
        color = torch.as_tensor(attrs["color"])
        red, blue = x[color == names.index("red")], x[color == names.index("blue")]
        if len(red) and len(blue):
            v = attribute_vector(model, red, blue)
            shown = blue[:n]
            rep.grid(_interleave(shown, apply_attribute(model, shown, v)), "attribute_edit.png",
                     f"the colour attribute vector (mean latent of {len(red)} red scenes minus {len(blue)} blue) "
                     "added to blue scenes: before (top), after (bottom)", nrow=len(shown))


def _tokenizer(rep: Report, model, x: torch.Tensor, n: int):
    ids = model.encode_tokens(x[:n])
    rep.grid(_interleave(x[:n], model.decode_tokens(ids)), "reconstructions.png",
             f"held-out images (top) and their decoding from {tuple(ids.shape[1:])} tokens of a "
             f"{model.vocab_size}-code book (bottom)", nrow=n)


def _translation(rep: Report, model, batch: dict, n: int):
    from imgen.apps.translate import translate

    if "source" in batch:  # pix2pix: paired
        src = batch["source"][:n]
        rows = [adapt_images(src, batch["image"].shape[1], src.shape[-1]), translate(model, src), batch["image"][:n]]
        rep.grid(_interleave(*rows), "translation.png", "label map (top), translated (middle), the real image "
                 "(bottom), held-out scenes", nrow=n)
        return
    a, b = batch["image"][:n], batch["image_b"][:n]
    rep.grid(_interleave(a, translate(model, a, "ab")), "translation_ab.png", "domain A (top) -> B (bottom)", nrow=n)
    rep.grid(_interleave(b, translate(model, b, "ba")), "translation_ba.png", "domain B (top) -> A (bottom)", nrow=n)


def _upscale(rep: Report, model, batch: dict, n: int, seed: int):
    from imgen.apps.upscale import bicubic, low_res_shape, upscale

    _, h, _ = low_res_shape(model)
    truth = batch["image"][:n]
    low = batch["low_res"][:n] if "low_res" in batch else adapt_images(truth, truth.shape[1], h)
    size = truth.shape[-1]
    nearest = torch.nn.functional.interpolate(low, size=size, mode="nearest")
    kwargs = {} if hasattr(model.method, "upscale") else {"seed": seed}
    rows = [nearest, bicubic(low, size), upscale(model, low, **kwargs), truth]
    rep.grid(_interleave(*rows), "upscale.png", f"{h} px input (top), bicubic, upscaled, the {size} px truth "
             "(bottom), held-out scenes", nrow=n)


def _inpaint(rep: Report, model, batch: dict, n: int, seed: int):
    from imgen.apps.inpaint import inpaint

    x, prompts = batch["image"][:n], list(batch.get("caption") or [None] * n)[:n]
    holes = batch["mask"][:n, 0].bool() if "mask" in batch else torch.ones(len(x), *x.shape[2:], dtype=torch.bool)
    filled = torch.cat([inpaint(model, x[i], holes[i], prompts[i], seed=seed + i) for i in range(len(x))])
    shown = torch.where(holes[:, None].expand_as(x), torch.zeros_like(x), x)  # the hole in mid-grey
    mask = holes[:, None].float().expand_as(x) * 2 - 1
    rep.grid(_interleave(shown, mask, filled), "inpaint.png", "held-out scenes with a hole (top; the training "
             "mix: boxes, the object's square, outpaint bands, everything), the mask (middle, white = fill) and "
             "the trained model's fill under each scene's own caption (bottom; known pixels pasted exactly)", nrow=n)
    if prompts[0] is not None:
        rep.table([{"#": i, "prompt": p} for i, p in enumerate(prompts)], "prompts")


def _text(rep: Report, model, batch: dict, n: int, seed: int):
    prompts = list(batch.get("caption") or [])[:n]
    if not prompts:
        return
    if model.config.method.name == "gan":  # one pass per image: several samples per prompt cost little
        _text_gan(rep, model, prompts, n, seed)
        return
    x = model.generate(prompts, seed=seed)
    rep.grid(x, "prompts.png", "one image per held-out prompt, in the order of the table below", nrow=min(n, 8))
    rep.table([{"#": i, "prompt": p} for i, p in enumerate(prompts)], "prompts")


def _text_gan(rep: Report, model, prompts: list[str], n: int, seed: int):
    from imgen.plots import text_interpolation_strip

    x = model.generate(prompts, n=n, seed=seed)  # the n images of each prompt together: one row per prompt
    rep.grid(x, "prompts.png", f"{n} samples (different z) per held-out prompt, one row per prompt in the order of "
             "the table below", nrow=n)
    rep.table([{"row": i, "prompt": p} for i, p in enumerate(prompts)], "prompts")
    a, b = prompts[0], next((p for p in prompts[1:] if p != prompts[0]), prompts[0])
    rep.figure(text_interpolation_strip(model, a, b, seed=seed), "text_interpolation.png",
               "GAN-INT: the same z drawn from text features interpolated between two prompts' (Reed et al. 2016)")


def write_model_report(model_dir: str | Path, out: str | Path, n: int = 8, seed: int = 0) -> Path:
    """Write OUT/report.html with the pictures of the model's family (PNGs beside it); its path."""
    from imgen.model import load

    model_dir = Path(model_dir)
    model = load(model_dir)
    if len(model.shape) != 3:
        raise ImgenError("imgen report draws image models; this one makes 2D points (plot them with "
                         "imgen.plots.data_vs_samples)")
    cfg = model.config
    rep = Report(Path(out), f"imgen report: {model_dir.name} ({cfg.method.name}, {cfg.net.name})")
    rep.text(cfg.description or "")
    params = sum(p.numel() for p in model.net.parameters())
    rep.table([{"method": cfg.method.name, "net": cfg.net.name, "data": cfg.data.name, "parameters": params,
                "train steps": cfg.train.steps,
                "shape": "x".join(map(str, model.shape)) + (" (latent)" if model.latent else "")}])
    family = _family(model)
    batch = held_out(model, max(n, 256 if family == "autoencoder" else n))
    rep.heading("pictures")
    if family == "inpaint":
        _inpaint(rep, model, batch, n, seed)
    elif family == "text":
        _text(rep, model, batch, n, seed)
    elif family == "upscale":
        _upscale(rep, model, batch, n, seed)
    elif family == "translation":
        _translation(rep, model, batch, n)
    elif family == "tokenizer":
        _tokenizer(rep, model, batch["image"], n)
    else:
        if family == "autoencoder":
            _autoencoder(rep, model, batch, n)
        if family == "sampler" or hasattr(model.method, "sample"):  # a plain autoencoder has no prior to sample
            _samples(rep, model, n, seed)
        if "temperature" in inspect.signature(getattr(model.method, "sample", lambda: None)).parameters:
            _flow_temperatures(rep, model, n, seed)
        if hasattr(getattr(model.net, "generator", None), "mapping"):
            _stylegan(rep, model, seed)
    log = model_dir / "log.jsonl"
    if log.exists():
        rep.heading("training")
        rep.figure(loss_curve(log), "loss.png", "training loss")
    metrics = model_dir / "metrics.json"
    if metrics.exists():
        rep.heading("metrics (metrics.json)")
        rep.code(json.dumps(json.loads(metrics.read_text()), indent=2))
    rep.heading("config")
    rep.code((model_dir / "config.json").read_text())
    return rep.write()
