"""unCLIP (Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP Latents", DALL-E 2):
a caption y becomes an image in two stages over a frozen CLIP,

    P(x | y) = P(x | z_i) P(z_i | y)            (sec. 2, eq. 1, without the decoder's optional caption input)

- the *prior* P(z_i | y): a diffusion model over CLIP image embeddings z_i (B, E), conditioned on the CLIP text
  embedding z_t and the encoded text tokens (imgen.nn.prior.PriorTransformer). As in sec. 2.1 it predicts the
  unnoised z_i directly (x0-prediction) with the MSE of eq. 2 on a cosine schedule, drops the text 10% of the time
  for classifier-free guidance, and at sampling time keeps the better of `best_of` draws by z_i . z_t.
- the *decoder* P(x | z_i): a U-Net (any imgen net built with context_dim = E) reading z_i as one context token
  for cross-attention (the paper projects it into four extra tokens) and as the pooled vector added to the time
  embedding (sec. 2.1: "projecting and adding CLIP embeddings to the existing timestep embedding"); z_i is
  replaced by the learned null embedding 10% of the time for classifier-free guidance.
- *variations* of an image (sec. 3.1): decode its CLIP image embedding from fresh noise, which keeps what CLIP
  sees (shape, colour) and redraws what it does not.

Both stages are DenoisingMethods, so imgen's samplers and guidance run them through the denoiser interface.
Methods unclip_prior / unclip_decoder train them with the Trainer (imgen.recipes.unclip.train_prior, train_decoder).
UnCLIP(clip, prior, decoder) is the pipeline: generate(prompts), variations(images), save/load as a directory of
safetensors + JSON.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imgen.checkpoint import atomic_write_text, load_tensors, read_json, save_tensors
from imgen.denoiser import ClippedDenoiser
from imgen.errors import ImgenError, check_int
from imgen.guidance import classifier_free
from imgen.methods.diffusion import DenoisingMethod
from imgen.nn import build_net
from imgen.nn.clip import CLIP
from imgen.nn.prior import PriorTransformer
from imgen.nn.text import check_prompts, encode_prompts
from imgen.samplers import get_sampler, initial_noise
from imgen.schedules import build_schedule, make_grid

PRIOR_METHOD = {"schedule": "cosine", "prediction": "x0", "cond_drop": 0.1}  # sec. 2.1 and Appendix C
DECODER_METHOD = {"schedule": "rectified_flow", "prediction": "velocity",  # the paper: GLIDE-style diffusion;
                  "cond_drop": 0.1}  # any (schedule, prediction) runs here. 10% null z_i: sec. 2.1
PRIOR_CFG, DECODER_CFG = 1.0, 3.0  # default guidance scales (the prior needs none: best_of picks among its draws)


class CondDenoising(DenoisingMethod):
    """A DenoisingMethod whose condition is a ready cond dict in batch["cond"] (text or image embeddings),
    replaced by the null condition with probability cond_drop (Ho & Salimans 2022, Algorithm 1)."""

    def condition(self, batch: dict, generator=None) -> dict:
        cond = batch.get("cond")
        if cond is None or cond.get("text_pooled") is None:
            raise ImgenError("unCLIP stages train on batches with 'cond' = text_condition(...) or "
                             "image_condition(...); build them with prior_batch / decoder_batch")
        drop = torch.rand(len(cond["text_pooled"]), generator=generator) < self.cond_drop
        return {**cond, "drop": drop.to(cond["text_pooled"].device)}


class UnCLIPStage(CondDenoising):
    """An unCLIP stage as the Trainer trains it: a captioned image batch becomes prior_batch (stage "prior") or
    decoder_batch ("decoder") under the frozen CLIP in directory `clip` (CLIP.save), then the CondDenoising loss."""

    def __init__(self, stage: str, clip: str, schedule: str, prediction: str, cond_drop: float = 0.1):
        if not clip:
            raise ImgenError(f"method unclip_{stage} needs option 'clip': a CLIP directory written by CLIP.save")
        super().__init__(build_schedule(schedule), prediction, cond_drop=cond_drop)
        self.stage, self.clip_path, self._clip = stage, str(clip), None

    def frozen_clip(self) -> CLIP:
        if self._clip is None:
            self._clip = CLIP.load(self.clip_path).requires_grad_(False)
        return self._clip

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        to_batch = prior_batch if self.stage == "prior" else decoder_batch
        return super().loss(net, to_batch(self.frozen_clip(), batch), generator)


def unclip_prior(clip: str = "", schedule: str = PRIOR_METHOD["schedule"], prediction: str = PRIOR_METHOD["prediction"],
                 cond_drop: float = PRIOR_METHOD["cond_drop"]) -> UnCLIPStage:
    return UnCLIPStage("prior", clip, schedule, prediction, cond_drop)


def unclip_decoder(clip: str = "", schedule: str = DECODER_METHOD["schedule"],
                   prediction: str = DECODER_METHOD["prediction"],
                   cond_drop: float = DECODER_METHOD["cond_drop"]) -> UnCLIPStage:
    return UnCLIPStage("decoder", clip, schedule, prediction, cond_drop)


def build_stage_method(spec: dict) -> CondDenoising:
    """A stage's method from its JSON spec {"schedule", "prediction", "cond_drop"} (PRIOR_METHOD, DECODER_METHOD)."""
    unknown = set(spec) - {"schedule", "prediction", "cond_drop"}
    if unknown:
        raise ImgenError(f"unknown unCLIP method option(s) {sorted(unknown)}; valid: schedule, prediction, cond_drop")
    return CondDenoising(build_schedule(spec["schedule"]), spec["prediction"], cond_drop=spec.get("cond_drop", 0.1))


# ---- conditions ----
@torch.no_grad()
def text_condition(clip: CLIP, prompts) -> dict:
    """The prior's condition for `prompts`: CLIP's text tokens projected into the joint space "text" (B, L, E),
    their mask (B, L), and the CLIP text embedding z_t "text_pooled" (B, E) (unit norm, = clip.encode_text)."""
    tokens, mask, pooled = encode_prompts(check_prompts(prompts), clip.text_encoder, clip.tokenizer)
    length = int(mask.sum(1).max())  # drop the all-padding columns: the prior's sequence is only as long as needed
    return {"text": clip.text_proj(tokens[:, :length]), "text_mask": mask[:, :length],
            "text_pooled": F.normalize(clip.text_proj(pooled), dim=-1)}


def image_condition(image_emb: torch.Tensor) -> dict:
    """The decoder's condition: z_i (B, E) as one context token "text" (B, 1, E) and as "text_pooled" (B, E)."""
    if image_emb.ndim != 2:
        raise ImgenError(f"image embeddings must be (B, E), got {tuple(image_emb.shape)}")
    return {"text": image_emb[:, None, :], "text_pooled": image_emb}


def embedding_scale(embed_dim: int) -> float:
    """The prior diffuses sqrt(E) * z_i: a unit-norm E-vector has coordinates of std 1/sqrt(E), and the Gaussian
    path expects unit-variance data (the same rescaling as lucidrains/DALLE2-pytorch's image_embed_scale)."""
    return math.sqrt(embed_dim)


@torch.no_grad()
def prior_batch(clip: CLIP, batch: dict) -> dict:
    """{"x": sqrt(E) z_i (B, E), "cond": text_condition(captions)} of a captioned batch, for the prior's loss."""
    z_i = clip.encode_image(batch["image"])
    return {"x": embedding_scale(clip.embed_dim) * z_i, "cond": text_condition(clip, list(batch["caption"]))}


@torch.no_grad()
def decoder_batch(clip: CLIP, batch: dict) -> dict:
    """{"image": (B, C, H, W), "cond": image_condition(z_i)} of an image batch, for the decoder's loss."""
    image = batch["image"].to(clip.logit_scale.device)
    return {"image": image, "cond": image_condition(clip.encode_image(image))}


def decoder_options(clip: CLIP, **options) -> dict:
    """U-Net options of the default decoder: a small U-Net at CLIP's image size whose context is the E-dim image
    embedding (no class labels)."""
    size = clip.image_encoder.image_size
    return {"in_channels": 3, "image_size": size, "base_channels": 32, "channel_mults": [1, 2, 2],
            "num_res_blocks": 1, "attn_resolutions": [size // 4], **options, "context_dim": clip.embed_dim}


def decoder_net(clip: CLIP, **options) -> nn.Module:
    """The default decoder (decoder_options) as a module."""
    return build_net("unet", **decoder_options(clip, **options))


# ---- the pipeline ----
@torch.no_grad()
def _sample(method: DenoisingMethod, net: nn.Module, shape: tuple, cond: dict, steps: int, sampler: str,
            cfg: float, generator: torch.Generator, clip_x0: bool = False) -> torch.Tensor:
    """Any imgen sampler on method.denoiser(net), classifier-free guided by `cfg` (1 = none)."""
    cond = {"drop": torch.zeros(shape[0], dtype=torch.bool, device=cond["text_pooled"].device), **cond}
    den = classifier_free(method.denoiser(net), cfg, cond, shape[0])
    if clip_x0:
        den = ClippedDenoiser(den)
    fn = get_sampler(sampler)
    ts = make_grid(den.schedule, check_int(steps, "steps"))
    x = initial_noise(den.schedule, shape, ts, generator).to(cond["text_pooled"].device)
    return fn(den, x, ts, cond, generator=generator)


class UnCLIP:
    """A frozen CLIP, a prior (text -> z_i) and a decoder (z_i -> image). `prior_method` / `decoder_method` are
    the JSON specs of each stage's DenoisingMethod (PRIOR_METHOD and DECODER_METHOD by default)."""

    def __init__(self, clip: CLIP, prior: nn.Module, decoder: nn.Module, prior_method: dict | None = None,
                 decoder_method: dict | None = None):
        e = clip.embed_dim
        if getattr(prior, "embed_dim", None) != e:
            raise ImgenError(f"the prior works on {getattr(prior, 'embed_dim', '?')}-dim embeddings but CLIP's "
                             f"embed_dim is {e}; build it with PriorTransformer(embed_dim={e})")
        text_cond = getattr(decoder, "text_cond", None)
        if text_cond is None or text_cond.context_dim != e:
            raise ImgenError(f"the decoder must read the {e}-dim CLIP image embedding; build it with "
                             f"context_dim={e} (decoder_net(clip) does)")
        self.clip, self.prior, self.decoder = clip.eval(), prior.eval(), decoder.eval()
        self.prior_spec = dict(prior_method or PRIOR_METHOD)
        self.decoder_spec = dict(decoder_method or DECODER_METHOD)
        self.prior_method = build_stage_method(self.prior_spec)
        self.decoder_method = build_stage_method(self.decoder_spec)
        self.image_size = decoder.image_size
        self.channels = decoder.in_channels

    @torch.no_grad()
    def image_embeddings(self, prompts, n: int = 1, steps: int = 25, sampler: str = "ddim", cfg: float | None = None,
                         best_of: int = 2, seed: int = 0) -> torch.Tensor:
        """Prior samples z_i (len(prompts) * n, E), unit norm, the n of each prompt together. Of `best_of`
        draws per image the one with the higher dot product with z_t is kept (sec. 2.1). cfg None = PRIOR_CFG."""
        cfg = PRIOR_CFG if cfg is None else cfg
        prompts = check_prompts(prompts)
        n, best_of = check_int(n, "n"), check_int(best_of, "best_of")
        texts = [p for p in prompts for _ in range(n)]
        cond = text_condition(self.clip, texts * best_of)  # (best_of * B, ...), draw k in rows k*B .. (k+1)*B-1
        gen = torch.Generator().manual_seed(seed)
        x = _sample(self.prior_method, self.prior, (len(texts) * best_of, self.clip.embed_dim), cond, steps, sampler,
                    cfg, gen)
        z_i = F.normalize(x, dim=-1).view(best_of, len(texts), -1)
        z_t = cond["text_pooled"][: len(texts)]
        best = (z_i * z_t).sum(-1).argmax(0)  # (B,)
        return z_i[best, torch.arange(len(texts))]

    @torch.no_grad()
    def decode(self, image_emb: torch.Tensor, steps: int = 25, sampler: str = "heun", cfg: float | None = None,
               seed: int = 0) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] from image embeddings z_i (B, E); cfg None = DECODER_CFG."""
        cfg = DECODER_CFG if cfg is None else cfg
        e = self.clip.embed_dim
        if not torch.is_tensor(image_emb) or image_emb.ndim != 2 or image_emb.shape[1] != e:
            got = tuple(image_emb.shape) if torch.is_tensor(image_emb) else type(image_emb).__name__
            raise ImgenError(f"decode needs image embeddings of shape (B, {e}) such as clip.encode_image(images), "
                             f"got {got}")
        gen = torch.Generator().manual_seed(seed)
        cond = image_condition(image_emb.float().to(self.clip.logit_scale.device))
        shape = (len(image_emb), self.channels, self.image_size, self.image_size)
        x = _sample(self.decoder_method, self.decoder, shape, cond, steps, sampler, cfg, gen, clip_x0=True)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def generate(self, prompts, n: int = 1, prior_steps: int = 25, prior_sampler: str = "ddim",
                 prior_cfg: float | None = None,
                 best_of: int = 2, steps: int = 25, sampler: str = "heun", cfg: float | None = None,
                 seed: int = 0) -> torch.Tensor:
        """Text -> prior -> decoder: images (len(prompts) * n, C, H, W) in [-1, 1], the n of each prompt together.
        prior_* options drive the prior's sampling, steps/sampler/cfg the decoder's."""
        z_i = self.image_embeddings(prompts, n, prior_steps, prior_sampler, prior_cfg, best_of, seed)
        return self.decode(z_i, steps, sampler, cfg, seed + 1)

    @torch.no_grad()
    def variations(self, images: torch.Tensor, n: int = 4, steps: int = 25, sampler: str = "heun",
                   cfg: float | None = None,
                   seed: int = 0) -> torch.Tensor:
        """n variations of each image (N, C, H, W) in [-1, 1]: its CLIP image embedding decoded from fresh noise
        (sec. 3.1). Returns (N * n, C, H, W), the n of each image together."""
        size = self.clip.image_encoder.image_size
        if not torch.is_tensor(images) or images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ImgenError(f"variations needs images of shape (N, 3, {size}, {size}) in [-1, 1] (CLIP's input), "
                             f"got {got}; resize them with imgen.images")
        z_i = self.clip.encode_image(images.float())
        return self.decode(z_i.repeat_interleave(check_int(n, "n"), dim=0), steps, sampler, cfg, seed)

    # ---- save / load: clip/ (CLIP.save), prior.safetensors, decoder.safetensors, config.json ----
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.clip.save(directory / "clip")
        save_tensors(self.prior.state_dict(), directory / "prior.safetensors")
        save_tensors(self.decoder.state_dict(), directory / "decoder.safetensors")
        config = {"kind": "unclip",
                  "prior": {"net": self.prior.config(), "method": self.prior_spec},
                  "decoder": {"net": self.decoder.name, "options": self.decoder.config(), "method": self.decoder_spec}}
        atomic_write_text(directory / "config.json", json.dumps(config, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "UnCLIP":
        directory = Path(directory)
        config = read_json(directory / "config.json")
        if config.get("kind") != "unclip":
            raise ImgenError(f"{directory} does not hold an unCLIP model (config.json kind={config.get('kind')!r}); "
                             f"give the directory UnCLIP.save wrote")
        prior = PriorTransformer.from_config(config["prior"]["net"])
        decoder = build_net(config["decoder"]["net"], **config["decoder"]["options"])
        for net, name in ((prior, "prior"), (decoder, "decoder")):
            try:
                net.load_state_dict(load_tensors(directory / f"{name}.safetensors"))
            except RuntimeError as e:
                raise ImgenError(f"{directory / (name + '.safetensors')} does not match config.json ({e}); "
                                 f"save the model again with UnCLIP.save") from None
        return cls(CLIP.load(directory / "clip"), prior, decoder, config["prior"]["method"],
                   config["decoder"]["method"])
