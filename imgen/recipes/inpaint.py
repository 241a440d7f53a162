"""A trained inpainting model (Stable Diffusion's inpainting model; Rombach et al. 2022) fine-tuned from a trained
text-to-image (or class-conditional / unconditional) U-Net model, through the one Trainer.

    finetune_inpaint("shapes-latent-t2i", "runs/shapes-inpaint")          # 600 steps, ~2 CPU-minutes
    m = imgen.load("runs/shapes-inpaint"); imgen.apps.inpaint.inpaint(m, image, hole, "a red star")

The run is the base's own config with three changes: the U-Net takes 1 + C more input channels
(backbone_options.inpaint_channels: the hole mask and the masked image's latent, imgen.methods.inpainting), the data
is the base's shapes stream with a random hole per item (dataset shapes-inpaint: boxes, the object's square, outpaint
bands, and whole-image holes so it still generates; imgen.data.masks), and train.init_from = the base: conv_in's
new input channels start at zero (imgen.nn.unet.zero_extra_inputs), so the untrained model is exactly the base, and
the whole net fine-tunes on the base's own loss. OUT is an ordinary model directory (config.json, ema.safetensors,
the autoencoder copy; rerun to resume): imgen.load(OUT), `imgen inpaint IMAGE --mask MASK "prompt" --model OUT`.
"""
from __future__ import annotations

from pathlib import Path

from imgen.errors import ImgenError
from imgen.recipes.lora import base_finetune_config
from imgen.train import train

WARMUP = 20  # linear LR warm-up steps
INPAINT_DATA = ("shapes", "shapes-inpaint", "shapes-control")  # streams whose scenes shapes-inpaint redraws


def inpaint_config(base: str | Path, steps: int = 600, lr: float = 5e-4, batch_size: int = 32, seed: int = 0):
    """The Trainer config of an inpainting fine-tune of model directory (or shipped name) `base`."""
    def inpaint_data(d: dict) -> dict:
        if d["data"]["name"] not in INPAINT_DATA:
            raise ImgenError(f"the inpainting fine-tune draws holes on the shapes stream, but the base was trained on "
                             f"{d['data']['name']!r}; give a shapes model (e.g. shapes-latent-t2i)")
        keep = ("n", "image_size", "seed", "max_objects", "templates", "supersample", "bg_captions")
        options = {k: v for k, v in d["data"]["options"].items() if k in keep}
        return {"name": "shapes-inpaint", "options": {**options, "split": "train"}, "batch_size": batch_size}

    config = base_finetune_config(base, inpaint_data, steps, lr, seed)
    config.train.warmup = WARMUP  # not min(20, steps): a rerun with more steps resumes the same schedule exactly
    net = config.net
    opts = net.options.setdefault("backbone_options", {}) if net.name == "text2img" else net.options
    if net.name not in ("text2img", "unet") or (net.name == "text2img" and net.options.get("backbone") != "unet"):
        raise ImgenError(f"an inpainting model widens a U-Net's input; the base's net is {net.name!r} "
                         f"(backbone {net.options.get('backbone')!r}); give a U-Net model such as shapes-latent-t2i")
    if opts.get("inpaint_channels"):
        raise ImgenError(f"{str(base)!r} is an inpainting model already; fine-tune from its text-to-image base")
    opts["inpaint_channels"] = 1 + net.options["in_channels"]  # the hole + the masked image (its latent)
    config.description = f"inpainting model (mask + masked image as input channels) fine-tuned from {base}"
    return config


def finetune_inpaint(base: str | Path, out: str | Path, steps: int = 600, lr: float = 5e-4, batch_size: int = 32,
                     seed: int = 0, progress: bool = True) -> dict:
    """Fine-tune an inpainting model of `base` into model directory `out` (a rerun resumes). -> fit's summary."""
    return train(inpaint_config(base, steps, lr, batch_size, seed), out, progress)
