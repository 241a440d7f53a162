"""A trained model directory, rebuilt from config.json + safetensors, ready to sample.

    m = imgen.load("runs/digits")
    x = m.sample(16, labels=[3] * 16, sampler="euler", steps=25, cfg=1.0, seed=0)   # (16, C, H, W) in [-1, 1]
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from imgen.config import Config
from imgen.denoiser import ClippedDenoiser
from imgen.errors import ImgenError, check_int
from imgen.guidance import classifier_free, clip_guidance
from imgen.methods import build_method
from imgen.nn import load_net
from imgen.nn.text import check_prompts
from imgen.rerank import best_of, load_reranker
from imgen.samplers import get_sampler, initial_noise
from imgen.schedules import make_grid


class Model:
    """A network, the method that trained it, and its config. Samples with any sampler on the denoiser interface."""

    def __init__(self, config: Config, net: torch.nn.Module, device: str = "cpu", root: str | Path | None = None):
        self.config, self.net, self.device = config, net.to(device).eval(), device
        self._rerankers = {}  # reranker path -> its CLIP, loaded on the first reranked generate
        self.method = build_method(config.method.name, **config.method.options)
        if hasattr(self.method, "bind"):  # a latent model loads the autoencoder stored in its directory `root`
            self.method.bind(root)
        self.latent = hasattr(self.method, "decode")  # samples are latents, decoded to pixels at the end
        opts = config.net.options
        self.num_classes = opts.get("num_classes")
        self.is_text = config.net.name == "text2img" or getattr(net, "text_conditional", False)
        self.is_upsampler = bool(getattr(net, "low_res_channels", None))  # SR3 / cascade stage (imgen.apps.upscale)
        backbone = getattr(net, "backbone", net)  # an inpainting model reads cond["inpaint"] (imgen.apps.inpaint)
        self.is_inpainting = bool(getattr(backbone, "inpaint_channels", None))
        if config.net.name == "mlp":
            self.shape = (opts.get("dim", 2),)
        else:
            self.shape = (opts["in_channels"], opts["image_size"], opts["image_size"])

    def _labels(self, n: int, labels) -> torch.Tensor | None:
        if self.num_classes is None:
            if labels is not None and self.is_text:
                raise ImgenError("this is a text-to-image model: it takes prompts, not labels; use generate(prompts) "
                                 "(CLI: imgen generate \"a red circle\" --model DIR)")
            if labels is not None:
                raise ImgenError("this model is unconditional; sample it without labels")
            return None
        if labels is None:  # one of each class, in turn
            return torch.arange(n) % self.num_classes
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise ImgenError(f"got {labels.numel()} labels for {n} samples; give one label or one per sample")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ImgenError(f"labels must be in 0..{self.num_classes - 1}, got {labels.tolist()}")
        return labels

    @torch.no_grad()
    def sample(self, n: int, labels=None, sampler: str | None = None, steps: int | None = None,
               cfg: float | None = None, eta: float | None = None, seed: int = 0, grid: str | None = None,
               shift: float | None = None, clip_x0: bool | None = None, noise: torch.Tensor | None = None,
               progress: bool = False, callback=None, cond: dict | None = None, negative: dict | None = None,
               guide=None, temperature: float | None = None, truncation: float | None = None,
               ts: torch.Tensor | None = None, raw: bool = False, top_k: int | None = None, top_p: float | None = None,
               inpaint: torch.Tensor | None = None) -> torch.Tensor:
        """n samples (n, *shape) in [-1, 1] (points for 2D models; a latent model's are decoded to pixels).
        `steps` is the sampler's step count (NFE for first-order samplers); unset options come from the model's
        config.sample. Same seed, same machine -> same samples. `cond` is a ready condition dict (e.g. from
        `generate`), `negative` the one classifier-free guidance pushes away from (default: the learned null
        condition); `guide(denoiser) -> denoiser` adds further guidance (e.g. imgen.guidance.clip_guidance).
        `temperature` scales the prior's std for a model that has one (a normalizing flow; Glow, sec. 5);
        `truncation` psi pulls a StyleGAN's w toward its mean (Karras et al. 2019, sec. 5.1); a token prior
        (token_ar, maskgit) takes temperature, top_k and top_p, and `steps` is MaskGIT's decoding iterations.
        `shift` moves the grid toward the noisy end (make_grid's SD3 shift). `ts` is a time grid to walk instead of
        make_grid(steps, grid), with `noise` the x at ts[0] (img2img, RePaint's segments); raw=True returns the
        sampler's last x as it is: not decoded, not clipped (imgen.apps.inpaint).
        `inpaint`: an inpainting model's condition (1 or n, ...) from inpaint_condition(image, hole); without it such a
        model samples with the whole image as the hole (plain generation)."""
        defaults = self.config.sample
        sampler = sampler or defaults.sampler
        steps = defaults.steps if steps is None else steps
        cfg = defaults.cfg if cfg is None else cfg
        eta = defaults.eta if eta is None else eta
        grid = grid or defaults.grid
        shift = defaults.shift if shift is None else shift
        clip_x0 = defaults.clip_x0 if clip_x0 is None else clip_x0
        check_int(n, "n")
        extra = {}
        if temperature is not None:
            if "temperature" not in inspect.signature(getattr(self.method, "sample", lambda: None)).parameters:
                raise ImgenError(f"{self.config.method.name} models have no sampling temperature (a normalizing flow "
                                 "has one); sample without temperature")
            extra["temperature"] = temperature
        if truncation is not None:
            if "truncation" not in inspect.signature(getattr(self.method, "sample", lambda: None)).parameters:
                raise ImgenError(f"{self.config.method.name} models have no truncation (a GAN has one); sample "
                                 "without truncation")
            extra["truncation"] = truncation
        params = inspect.signature(getattr(self.method, "sample", lambda: None)).parameters
        for name, value in (("top_k", top_k), ("top_p", top_p)):
            if value is not None:
                if name not in params:
                    raise ImgenError(f"{self.config.method.name} models have no {name} (a token prior, token_ar or "
                                     f"maskgit, has one); sample without {name}")
                extra[name] = value
        if hasattr(self.method, "sample"):  # a method with its own sampler, off the Gaussian path (cold diffusion)
            if cfg != 1.0 and "cfg" not in params:
                raise ImgenError(f"{self.config.method.name} has no classifier-free guidance; use cfg=1")
            if "cfg" in params:
                extra["cfg"] = cfg
            if negative is not None:
                raise ImgenError(f"{self.config.method.name} models take no negative prompt; guidance pushes away "
                                 "from the null condition")
            label = self._labels(n, labels)
            if cond is None and label is not None:
                cond = {"label": label, "drop": torch.zeros(n, dtype=torch.bool)}
            x = self.method.sample(self.net, (n, *self.shape), cond, steps, torch.Generator().manual_seed(seed),
                                   sampler=sampler, callback=callback, progress=progress, **extra)
            return x.clamp(-1, 1)
        fn = get_sampler(sampler)
        if cfg != 1.0 and self.num_classes is None and not self.is_text:
            raise ImgenError("classifier-free guidance needs a conditional model; this one is unconditional, use cfg=1")
        gen = torch.Generator().manual_seed(seed)
        den = self.method.denoiser(self.net)
        ts = make_grid(den.schedule, steps, grid, shift=shift) if ts is None else ts
        x = initial_noise(den.schedule, (n, *self.shape), ts, gen) if noise is None else noise.clone()
        if cond is None:
            if self.is_text:
                raise ImgenError("this is a text-to-image model; use generate(prompts) (CLI: imgen generate)")
            if self.is_upsampler:
                raise ImgenError("this is a super-resolution model; use imgen.apps.upscale.upscale(model, low_res) "
                                 "(CLI: imgen upscale)")
            label = self._labels(n, labels)
            cond = None if label is None else {"label": label, "drop": torch.zeros(n, dtype=torch.bool)}
        if self.is_inpainting:  # the mask and masked image ride in every condition, CFG's null one included
            extra = {"inpaint": self._inpaint(inpaint, n)}
            cond = {**(cond or {}), **extra}
            negative = None if negative is None else {**negative, **extra}
        elif inpaint is not None:
            raise ImgenError("this is not an inpainting model; train one with `imgen finetune inpaint BASE --out DIR`, "
                             "or inpaint with this one training-free (imgen.apps.inpaint, method repaint)")
        if cond is not None:
            den = classifier_free(den, cfg, cond, n, negative)
        if guide is not None:
            den = guide(den)
        if clip_x0 and len(self.shape) == 3 and not self.latent:  # images live in [-1, 1]; latents and 2D points do not
            den = ClippedDenoiser(den)
        kwargs = {"eta": eta} if "eta" in inspect.signature(fn).parameters else {}  # ddim's eta, tcd's gamma
        x = fn(den, x.to(self.device), ts, cond, generator=gen, callback=callback, progress=progress, **kwargs)
        if self.latent:
            if raw:
                return x
            x = self.method.decode(x)  # LDM: sample the latent, decode it to pixels
        return x.clamp(-1, 1) if len(self.shape) == 3 and not raw else x


    def load_lora(self, path: str | Path, scale: float = 1.0) -> dict:
        """Apply a LoRA adapter file (imgen finetune lora) at strength `scale` (0 = off, 1 = as trained), merged
        into the weights so sampling costs what the base does. Replaces any adapter already loaded. -> its meta."""
        from imgen.nn.lora import apply_adapter, merge, remove_lora

        remove_lora(self.net)
        meta = apply_adapter(self.net, path, scale)
        merge(self.net)
        return meta

    def unload_lora(self) -> None:
        """Remove a loaded LoRA adapter: the base model's weights again."""
        from imgen.nn.lora import remove_lora

        remove_lora(self.net)

    def load_tokens(self, path: str | Path) -> dict:
        """Add the words learned by textual inversion (imgen finetune textual-inversion) to the prompt vocabulary,
        replacing any loaded before. -> the file's meta (its 'words')."""
        from imgen.nn.textual_inversion import load_tokens

        return load_tokens(self.net, path)

    def unload_tokens(self) -> None:
        """Back to the base vocabulary."""
        from imgen.nn.textual_inversion import remove_tokens

        remove_tokens(self.net)

    def load_controlnet(self, path: str | Path) -> dict:
        """Attach a ControlNet file (imgen finetune controlnet); generate(..., control=maps) then follows the maps.
        Replaces any ControlNet already attached. -> its meta."""
        from imgen.nn.controlnet import apply_controlnet

        return apply_controlnet(self.net, path)

    def unload_controlnet(self) -> None:
        from imgen.nn.controlnet import remove_controlnet

        remove_controlnet(self.net)

    def _control(self, control, count: int) -> dict:
        """cond["control"] for `count` images from maps (1 or count, C, S, S) in [-1, 1] (ControlNet)."""
        from imgen.nn.controlnet import controlnet_of

        cn = controlnet_of(self.net)
        if cn is None:
            raise ImgenError("control maps need a ControlNet; load one first (model.load_controlnet(FILE), CLI "
                             "--controlnet FILE)")
        c = torch.as_tensor(control, dtype=torch.float32)
        c = cn.check_control(c[None] if c.ndim == 3 else c)
        if len(c) not in (1, count):
            raise ImgenError(f"got {len(c)} control maps for {count} images; give one map, or one per image")
        if c.min() < -1 or c.max() > 1:
            raise ImgenError("control map values must be in [-1, 1] (imgen.images.from_uint8 converts 0..255)")
        return {"control": c.expand(count, -1, -1, -1).to(self.device)}

    @torch.no_grad()
    def inpaint_condition(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """An inpainting model's cond["inpaint"] for images (B, C, H, W) in [-1, 1] and holes (H, W) or (B, 1, H, W)
        (1 = to fill): the hole on the sampler's grid and the masked image (a latent model: its latent), as in
        training (imgen.methods.inpainting)."""
        from imgen.methods.inpainting import inpaint_condition

        image = torch.as_tensor(image, dtype=torch.float32).to(self.device)
        return inpaint_condition(image, hole, self.method.encode_mean if self.latent else None)

    def _inpaint(self, inpaint, n: int) -> torch.Tensor:
        """cond["inpaint"] for n samples: the given one (1 or n rows), else everything a hole (plain generation)."""
        if inpaint is None:
            if getattr(self, "_all_hole", None) is None:
                c, h, w = self.pixel_shape
                self._all_hole = self.inpaint_condition(torch.zeros(1, c, h, w), torch.ones(h, w))
            inpaint = self._all_hole
        want = (self.net.backbone if hasattr(self.net, "backbone") else self.net).inpaint_channels
        if inpaint.ndim != 4 or len(inpaint) not in (1, n) or inpaint.shape[1] != want:
            raise ImgenError(f"inpaint condition must be (1 or {n}, {want}, h, w) from model.inpaint_condition(image, "
                             f"hole), got {tuple(inpaint.shape)}")
        return inpaint.expand(n, -1, -1, -1).to(self.device)

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the images this model makes (a latent model's decoded size)."""
        if not self.latent:
            return self.shape
        if getattr(self, "_pixel_shape", None) is None:
            self._pixel_shape = tuple(self.method.decode(torch.zeros(1, *self.shape)).shape[1:])
        return self._pixel_shape

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density log p(x) in nats per image, (B,), for a likelihood model (a normalizing flow) of
        continuous x in [-1, 1] (dequantized data); bits/dim: imgen.metrics.bits_per_dim(-log_prob, D, bin_width)."""
        if not hasattr(self.method, "log_prob"):
            raise ImgenError(f"{self.config.method.name} models have no exact log-likelihood; a normalizing flow "
                             "(method normalizing_flow) has one")
        x = torch.as_tensor(x, dtype=torch.float32).to(self.device)
        if tuple(x.shape[1:]) != self.shape:
            raise ImgenError(f"log_prob expects images of shape (B, {', '.join(map(str, self.shape))}), "
                             f"got {tuple(x.shape)}")
        return self.method.log_prob(self.net, x)

    @torch.no_grad()
    def generate(self, prompts, n: int = 1, negative: str | None = None, unconditional: bool = False,
                 clip=None, clip_scale: float = 0.0, control=None, rerank: int | None = None,
                 reranker: str | None = None, **kwargs) -> torch.Tensor:
        """Images for text prompts: (len(prompts) * n, C, H, W) in [-1, 1], the n images of each prompt together.
        `negative` is a prompt classifier-free guidance steers away from (instead of the null text);
        `unconditional=True` ignores the prompts and samples the learned null condition. Other keyword
        arguments (sampler, steps, cfg, seed, eta, grid, ...) are those of `sample`. With a CLIP model `clip`
        and clip_scale > 0 the sampler is also CLIP-guided toward the prompts (imgen.guidance.CLIPGuidance).
        `control`: maps (1 or len(prompts) * n, C, S, S) in [-1, 1] a loaded ControlNet follows (load_controlnet).
        `rerank`: candidates drawn per image, the one the CLIP `reranker` scores best kept (DALL-E's reranking,
        imgen.rerank); defaults config.sample.rerank (1 = none) and config.sample.reranker."""
        if not self.is_text:
            raise ImgenError(f"this model ({self.config.net.name}, {self.config.data.name}) is not text-conditional; "
                             f"use sample() (CLI: imgen sample), or load a text-to-image model")
        check_int(n, "n (images per prompt)")
        if unconditional:
            count = n * (len(prompts) if isinstance(prompts, (list, tuple)) and prompts else 1)
            cond = {"drop": torch.ones(count, dtype=torch.bool), **({} if control is None else self._control(control, count))}
            return self.sample(count, cond=cond, **{**kwargs, "cfg": 1.0})
        prompts = check_prompts(prompts)
        texts = [p for p in prompts for _ in range(n)]
        k = check_int(self.config.sample.rerank if rerank is None else rerank, "rerank (candidates per image)")
        if k > 1:  # k candidates for each of the texts, then the best of each k
            if control is not None:
                raise ImgenError("rerank with a ControlNet map is not supported; generate with rerank=1")
            path = reranker or self.config.sample.reranker
            if path not in self._rerankers:
                self._rerankers[path] = load_reranker(path)
            x = self.generate(texts, n=k, negative=negative, clip=clip, clip_scale=clip_scale, rerank=1, **kwargs)
            return best_of(x, texts, self._rerankers[path], k)
        enc = self.net.encode(texts + ([negative] * len(texts) if negative is not None else []))
        enc = {k: v.to(self.device) for k, v in enc.items()}
        count = len(texts)
        cond = {k: v[:count] for k, v in enc.items()}
        cond["drop"] = torch.zeros(count, dtype=torch.bool, device=self.device)
        extra = {} if control is None else self._control(control, count)  # kept in CFG's null condition too
        cond.update(extra)
        neg = None
        if negative is not None:
            neg = {k: v[count:] for k, v in enc.items()}
            neg["drop"] = torch.zeros(count, dtype=torch.bool, device=self.device)
            neg.update(extra)
        guide = None
        if clip is not None and clip_scale > 0:
            decode = self.method.decode if self.latent else None
            guide = lambda den: clip_guidance(den, clip, texts, clip_scale, decode)  # noqa: E731
        return self.sample(count, cond=cond, negative=neg, guide=guide, **kwargs)

    # ---- autoencoders and VAEs (nets with encode/decode; methods vae and kl_autoencoder) -----------------------
    def _autoencoder_input(self, x, what: str) -> torch.Tensor:
        if not hasattr(self.net, "encode") or not hasattr(self.net, "decode"):
            raise ImgenError(f"{what} needs an autoencoder or VAE model; this is a {self.config.net.name!r} net "
                             f"(method {self.config.method.name!r})")
        x = torch.as_tensor(x, dtype=torch.float32).to(self.device)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.pixel_shape:
            raise ImgenError(f"{what} expects images shaped (B, {', '.join(map(str, self.pixel_shape))}) in [-1, 1], "
                             f"got {tuple(x.shape)}")
        return self.method.encode_mean(x) if self.latent else x  # a latent VAE: the autoencoder's latents

    @torch.no_grad()
    def encode(self, x: torch.Tensor, logvar: bool = False):
        """The posterior mean of q(z | x) for images (B, C, H, W); with logvar=True the pair (mean, logvar)."""
        if self.is_tokenizer:
            raise ImgenError("this is an image tokenizer: encode images to token ids with encode_tokens(x)")
        q = self.net.encode(self._autoencoder_input(x, "encode"))
        return (q.mean, q.logvar) if logvar else q.mean

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, *latent shape) -> images (B, C, H, W) in [-1, 1] (the decoder's mean)."""
        if not hasattr(self.net, "decode"):
            raise ImgenError(f"decode needs an autoencoder or VAE model; this is a {self.config.net.name!r} net")
        x = self.net.decode(torch.as_tensor(z, dtype=torch.float32).to(self.device))
        return (self.method.decode(x) if self.latent else x).clamp(-1, 1)  # a latent VAE: then the autoencoder's

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)): images through the posterior mean (a tokenizer: decode_tokens(encode_tokens(x)))."""
        if self.is_tokenizer:
            return self.decode_tokens(self.encode_tokens(x))
        return self.decode(self.encode(x))

    # ---- image tokenizers (VQ-VAE, VQGAN: nets with encode_tokens/decode_tokens) ------------------------------
    @property
    def is_tokenizer(self) -> bool:
        return hasattr(self.net, "encode_tokens")

    def _tokenizer(self, what: str):
        if not self.is_tokenizer:
            raise ImgenError(f"{what} needs an image tokenizer (VQ-VAE/VQGAN, e.g. `imgen train shapes-vqvae`); this "
                             f"is a {self.config.net.name!r} net (method {self.config.method.name!r})")
        return self.net

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) of the token grid of one image."""
        return self._tokenizer("token_grid").token_grid

    @property
    def token_shape(self) -> tuple[int, ...]:
        """The shape of one image's tokens: token_grid, or (h, w, levels) for residual VQ."""
        return self._tokenizer("token_shape").token_shape

    @property
    def vocab_size(self) -> int:
        """Token ids lie in [0, vocab_size) (the codebook size; per level for residual VQ)."""
        return self._tokenizer("vocab_size").codebook_size

    @torch.no_grad()
    def encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> token ids (B, *token_shape) int64 in [0, vocab_size)."""
        self._tokenizer("encode_tokens")
        return self.net.encode_tokens(self._autoencoder_input(x, "encode_tokens"))

    @torch.no_grad()
    def decode_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, *token_shape) -> images (B, C, H, W) in [-1, 1]."""
        return self._tokenizer("decode_tokens").decode_tokens(torch.as_tensor(ids).to(self.device)).clamp(-1, 1)

    def _bound(self, name: str):
        if self.latent and hasattr(getattr(self.method, "inner", None), name):
            raise ImgenError(f"{name} bounds a likelihood of the images; this VAE models an autoencoder's latents "
                             f"(method latent), a density that is no likelihood of the pixels: use a pixel VAE "
                             f"(e.g. shapes-vae) for bits/dim")
        if not hasattr(self.method, name):
            raise ImgenError(f"{name} is a VAE's likelihood bound; this model's method is {self.config.method.name!r}")
        return getattr(self.method, name)

    def elbo(self, x: torch.Tensor, seed: int = 0, samples: int = 1) -> torch.Tensor:
        """The ELBO of each image in nats, (B,) (imgen.methods.vae; bits/dim: imgen.metrics.discrete_bits_per_dim)."""
        fn = self._bound("elbo")
        return fn(self.net, self._autoencoder_input(x, "elbo"), torch.Generator().manual_seed(seed), samples)

    def iwae(self, x: torch.Tensor, k: int = 64, seed: int = 0) -> torch.Tensor:
        """The importance-weighted bound (Burda et al. 2016, eq. 8) of each image in nats, (B,), k samples."""
        fn = self._bound("iwae")
        return fn(self.net, self._autoencoder_input(x, "iwae"), k, torch.Generator().manual_seed(seed))


def load(path: str | Path, device: str = "cpu", weights: str = "ema") -> Model:
    """Load a model directory written by `imgen train` (EMA weights by default), or a shipped model by name
    (e.g. "shapes-latent-t2i", see imgen.pretrained)."""
    from imgen.pretrained import resolve_model_path

    config, net = load_net(path, weights)
    return Model(config, net, device, root=resolve_model_path(path))
