"""Latent diffusion (Rombach et al. 2022, LDM): any registered diffusion/flow method trained on the latents of a
frozen KL autoencoder (imgen.methods.autoencoder) instead of on pixels; samples are decoded to pixels.

    method: {"name": "latent", "options": {"autoencoder": "runs/shapes-ae", "method": "flow_matching",
                                           "method_options": {"cond_drop": 0.1}, "scale": null}}

The inner method may also be "consistency_distillation" of a latent teacher (imgen.recipes.consistency: LCM proper,
on the teacher's autoencoder and scale), or "vae": a VAE on the frozen autoencoder's latents (LatentVAE; the
two-stage VAE of Dai & Wipf 2019, whose first stage here is the KL autoencoder), so that a vector latent of a few
dims holds what the autoencoder's conv latents make easy to learn (shape) and a spatial broadcast decoder keeps
position apart from colour (imgen.nn.autoencoder.BroadcastDecoder).

The loss encodes batch["image"] with the frozen encoder (a posterior sample, LDM sec. 3, or its mean), multiplies
by the scale factor and hands the latents to the inner method in place of the image (captions, labels pass
through). With scale null the factor is 1 / std of the latents of the first training images (LDM sec. 4.3.2 and
appendix G: "we rescale the latents by the component-wise standard deviation" so they have unit variance, as the
diffusion schedules assume). The model directory is self-contained: at train start the autoencoder is copied to
OUT/autoencoder/ together with the measured scale (scale.json), and sampling loads it from there.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from imgen.checkpoint import atomic_write_text, copy_model_files, load_tensors, read_json, save_tensors
from imgen.errors import ImgenError
from imgen.methods.autoencoder import load_autoencoder
from imgen.methods.consistency import consistency_distillation
from imgen.methods.denoising import build_denoising_method
from imgen.methods.inpainting import inpaint_condition
from imgen.methods.vae import VAEMethod
from imgen.pretrained import resolve_model_path

AE_DIR = "autoencoder"  # inside the latent model's directory
AE_FILES = ("config.json", "ema.safetensors", "model.safetensors")  # what the copy keeps (no optimizer state)
SCALE_FILE = "scale.json"
SCALE_IMAGES = 512  # images the scale factor is measured on
POSTERIORS = ("sample", "mean")


def autoencoder_shape(path: str | Path, dataset=None) -> tuple[int, int]:
    """(latent channels, latent size) of the autoencoder directory `path`, checking that it encodes `dataset`'s
    images. The Trainer builds the latent model's net with these (imgen.train.resolve_config)."""
    if not path:
        raise ImgenError("method 'latent' needs option 'autoencoder': the directory of a model trained with "
                         "`imgen train shapes-ae --out DIR` (--set method.options.autoencoder=DIR)")
    path = resolve_model_path(path)  # a directory, or a shipped autoencoder's name ("shapes-ae")
    ae = load_autoencoder(path)  # clear errors for a missing or non-autoencoder directory
    if dataset is not None and (ae.in_channels, ae.image_size) != (dataset.channels, dataset.image_size):
        raise ImgenError(f"the autoencoder in {str(path)!r} encodes {ae.in_channels}-channel "
                         f"{ae.image_size}x{ae.image_size} images but the data ({dataset.name}) has "
                         f"{dataset.channels}-channel {dataset.image_size}x{dataset.image_size} ones; train an "
                         f"autoencoder on this data (imgen train shapes-ae) or change data.options")
    return ae.latent_channels, ae.latent_size


class LatentMethod:
    """A DenoisingMethod-like method (loss, denoiser) working on scaled autoencoder latents; `decode` maps
    sampled latents to pixels. `bind(root)` attaches it to its model directory (done by Trainer and Model)."""

    def __init__(self, autoencoder: str, method: str = "flow_matching", method_options: dict | None = None,
                 scale: float | None = None, posterior: str = "sample"):
        if method in ("latent", "kl_autoencoder"):
            raise ImgenError(f"method 'latent' wraps a diffusion/flow method (e.g. flow_matching, ddpm, edm), "
                             f"not {method!r}")
        if not isinstance(autoencoder, (str, os.PathLike)) or not str(autoencoder):
            raise ImgenError("method 'latent' needs option 'autoencoder': the directory of a model trained with "
                             "`imgen train shapes-ae --out DIR`")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                  or not math.isfinite(scale) or scale <= 0):
            raise ImgenError(f"latent scale must be a positive number or null (measure 1/std on the data), got {scale!r}")
        if posterior not in POSTERIORS:
            raise ImgenError(f"latent posterior must be one of {', '.join(POSTERIORS)}, got {posterior!r}")
        if method == "consistency_distillation":  # LCM (Luo et al. 2023): a consistency student on a teacher's latents
            self.inner = consistency_distillation(**(method_options or {}))
        else:
            self.inner = build_denoising_method(method, **(method_options or {}))
        if not callable(getattr(self.inner, "denoiser", None)):
            raise ImgenError(f"method {method!r} has no denoiser, so it cannot be sampled in latent space")
        self.autoencoder_path, self.fixed_scale, self.posterior = str(autoencoder), scale, posterior
        self.root: Path | None = None
        self._ae = None
        self.scale: float | None = None

    # -- the model directory -----------------------------------------------------------------------------
    def bind(self, root: str | Path | None, dataset=None) -> None:
        """Attach to model directory `root`. Training (a dataset given): copy the autoencoder into root/autoencoder
        unless it is there already (a resume), and measure the scale once. Loading: read both from there."""
        if root is None:
            raise ImgenError("a latent model decodes with the autoencoder stored in its directory; load it with "
                             "imgen.load(MODEL_DIR) rather than building Model(...) by hand")
        self.root = Path(root)
        ae_dir = self.root / AE_DIR
        if not (ae_dir / "config.json").is_file():
            if dataset is None:
                raise ImgenError(f"latent model {str(self.root)!r} lacks its autoencoder copy {str(ae_dir)!r} "
                                 f"(written at train start); restore the directory or retrain it")
            self._copy_autoencoder(ae_dir)
        self._ae = load_autoencoder(ae_dir)
        if self.fixed_scale is not None:
            self.scale = float(self.fixed_scale)
        elif (ae_dir / SCALE_FILE).is_file():
            self.scale = float(read_json(ae_dir / SCALE_FILE)["scale"])
        elif dataset is not None:
            self.scale = self._measure_scale(dataset, ae_dir / SCALE_FILE)
        else:
            raise ImgenError(f"latent model {str(self.root)!r} has scale null but no {AE_DIR}/{SCALE_FILE}; "
                             f"retrain it, or set method.options.scale in its config.json")

    def _copy_autoencoder(self, ae_dir: Path) -> None:
        src = resolve_model_path(self.autoencoder_path)
        load_autoencoder(src)  # checks it is a trained autoencoder directory (clear error otherwise)
        copy_model_files(src, ae_dir, AE_FILES)

    @torch.no_grad()
    def _measure_scale(self, dataset, path: Path) -> float:
        n = min(len(dataset), SCALE_IMAGES)
        x = dataset.get(np.arange(n))["image"]
        z = self._encode_raw(x, torch.Generator().manual_seed(0))
        std = float(z.flatten().std())  # LDM: scale_factor = 1 / z.flatten().std()
        if not std > 0:
            raise ImgenError(f"the autoencoder's latents have std {std}; it is untrained or broken, retrain it")
        atomic_write_text(path, json.dumps({"scale": 1.0 / std, "latent_std": std, "latent_mean": float(z.mean()),
                                            "images": n, "posterior": self.posterior}, indent=2) + "\n")
        return 1.0 / std

    @property
    def autoencoder(self):
        if self._ae is None:
            raise ImgenError("this latent method is not bound to a model directory yet; train it with imgen.train "
                             "or load it with imgen.load(MODEL_DIR)")
        return self._ae

    # -- latents <-> pixels ------------------------------------------------------------------------------
    def _encode_raw(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        ae = self.autoencoder.to(x.device)
        q = ae.encode(x)
        return q.sample(generator) if self.posterior == "sample" else q.mean

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents z = scale * E(x) (LDM sec. 4.3.2)."""
        return self._encode_raw(x, generator) * self.scale

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> scale * the posterior mean of E(x): the same image always gives the same latent (LDM sec.
        4.3.2); what image-to-image applications and an inpainting model's masked image are encoded with."""
        return self.autoencoder.to(x.device).encode(x).mean * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images D(z / scale), not clipped."""
        return self.autoencoder.to(z.device).decode(z / self.scale)

    # -- the method interface ------------------------------------------------------------------------------
    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        if "mask" in batch:  # an inpainting model (imgen.methods.inpainting): mask + masked image's latent
            batch = {**batch, "inpaint": inpaint_condition(batch["image"], batch["mask"], self.encode_mean)}
        z = self.encode(batch["image"], generator)
        return self.inner.loss(net, {**batch, "image": z}, generator)  # LDM eq. 2 (eq. 3 conditioned): the inner loss on z

    def denoiser(self, net):
        return self.inner.denoiser(net)

    def state_tensors(self) -> dict:
        """The inner method's checkpointed state (a consistency student's EMA target net), for exact resume."""
        return self.inner.state_tensors() if hasattr(self.inner, "state_tensors") else {}

    def load_state_tensors(self, net, tensors: dict) -> None:
        if hasattr(self.inner, "load_state_tensors"):
            self.inner.load_state_tensors(net, tensors)


STANDARDIZE_FILE = "standardize.safetensors"  # a latent VAE's per-element latent mean and std
STANDARDIZE_IMAGES = 4096


class LatentVAE(LatentMethod):
    """A VAE (imgen.methods.vae, levels null: a Gaussian density) on the latents of a frozen autoencoder,
    standardized per element ((E(x) - mean) / std over each of the C x h x w latent entries, measured once on the
    training data and kept in autoencoder/standardize.safetensors), so that every latent entry weighs the same in
    the VAE's likelihood. With LDM's one global scale instead, shapes-latent-vae (on split "train") kept 8 of its 16
    units active and the shape of 78% of reconstructions (57% after the colour edit); standardized, 11 units and 91%
    (90%), one run each.
    imgen.Model's encode(x) / decode(z) / reconstruct(x) / sample go through both stages: pixels -> the
    autoencoder's posterior mean -> the VAE's posterior mean, and back through both decoders."""

    def __init__(self, autoencoder: str, method_options: dict | None = None, posterior: str = "mean"):
        super().__init__(autoencoder, "flow_matching", None, 1.0, posterior)  # checks the shared options
        self.inner = VAEMethod(**{"levels": None, **(method_options or {})})
        self.mean = self.std = None

    def bind(self, root, dataset=None) -> None:
        super().bind(root, dataset)
        path = self.root / AE_DIR / STANDARDIZE_FILE
        if not path.is_file():
            if dataset is None:
                raise ImgenError(f"latent VAE {str(self.root)!r} lacks {str(path)!r} (written at train start); "
                                 f"restore the directory or retrain it")
            self._measure_standardization(dataset, path)
        t = load_tensors(path)
        self.mean, self.std = t["mean"], t["std"]

    @torch.no_grad()
    def _measure_standardization(self, dataset, path: Path) -> None:
        n = min(len(dataset), STANDARDIZE_IMAGES)
        z = torch.cat([self._encode_raw(dataset.get(np.arange(i, min(i + 512, n)))["image"])
                       for i in range(0, n, 512)])
        save_tensors({"mean": z.mean(0), "std": z.std(0).clamp_min(1e-3)}, path, {"images": str(n)})

    def _standardize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean.to(z.device)) / self.std.to(z.device)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """Images -> standardized autoencoder latents (E(x) - mean) / std (posterior mean or a sample)."""
        return self._standardize(self._encode_raw(x, generator))

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self._standardize(self.autoencoder.to(x.device).encode(x).mean)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Standardized latents -> images D(z * std + mean), not clipped."""
        return self.autoencoder.to(z.device).decode(z * self.std.to(z.device) + self.mean.to(z.device))

    def set_step(self, step: int) -> None:
        self.inner.set_step(step)  # the inner VAE's KL warm-up

    @torch.no_grad()
    def sample(self, net, shape: tuple, cond: dict | None = None, steps: int | None = None, generator=None,
               **_) -> torch.Tensor:
        """shape[0] images: z ~ N(0, I), decoded by the VAE to autoencoder latents, then to pixels."""
        return self.decode(self.inner.sample(net, shape, cond, generator=generator))

    def denoiser(self, net):
        raise ImgenError("a latent VAE is not a diffusion model: it has no denoiser; sample it with "
                         "imgen.load(DIR).sample")


def latent(autoencoder: str = "", method: str = "flow_matching", method_options: dict | None = None,
           scale: float | None = None, posterior: str = "sample") -> LatentMethod:
    if method == "vae":
        if scale is not None:
            raise ImgenError("a latent VAE standardizes each latent entry itself; leave method.options.scale unset")
        return LatentVAE(autoencoder, method_options, posterior)
    return LatentMethod(autoencoder, method, method_options, scale, posterior)
