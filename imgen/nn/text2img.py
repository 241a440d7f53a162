"""A text-to-image denoiser: a backbone (U-Net or DiT built with context_dim) plus the text encoder that feeds it.

    net(x, t, {"caption": ["a red circle in the top left", ...], "drop": (B,) bool})

encodes the captions (imgen's word Tokenizer + a TextTransformer trained jointly with the backbone, or the frozen
pretrained MiniLM sentence encoder) into per-token features, mask and a pooled vector, and hands them to the
backbone as cond["text"], cond["text_mask"], cond["text_pooled"] (cross-attention on the tokens, the pooled vector
in the time embedding / adaLN). With phrases=True the cross-attention also reads one token per object phrase
(`imgen.nn.text.split_phrases`: "a red circle on the left and a blue star at the top" -> two phrases), each phrase
encoded on its own, so that a two-object prompt's attributes reach the net already bound to their object. Rows
with drop=True get the backbone's learned null text (classifier-free guidance). `encode(prompts)` returns that
dict once, so a sampler does not re-encode the prompt at every step. The tokenizer's vocabulary is part of the
net's options (saved in config.json), so a model directory is complete.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from imgen.errors import ImgenError
from imgen.nn.dit import DiT
from imgen.nn.layers import ConfigMixin, check_kwargs
from imgen.nn.text import MiniLMEncoder, TextTransformer, Tokenizer, check_prompts, encode_prompts, split_phrases
from imgen.nn.unet import UNet
from imgen.checkpoint import load_tensors, read_json

BACKBONES = {"unet": UNet, "dit": DiT}


def clip_directory(value: str, option: str) -> str:
    """The absolute path of the CLIP directory that net option `option` names (a path, or a shipped model's name
    such as "shapes-clip"), or one clear error when it names none."""
    from imgen.pretrained import resolve_model_path

    path = Path(resolve_model_path(value))
    if not (path / "config.json").is_file():
        raise ImgenError(f"net.options.{option}={value!r} is not a CLIP directory; give one written by CLIP.save "
                         f"(e.g. from imgen.recipes.clip.train_clip) or the shipped shapes-clip")
    return str(path.resolve())


def clip_text_options(clip_dir: str | Path) -> dict:
    """The text2img options that rebuild a CLIP's text tower (saved by imgen.methods.clip.CLIP.save): the
    vocabulary, encoder_options and max_len. With encoder_init=clip_dir its trained weights are loaded (CLIP's
    text tower as the text encoder, as unCLIP and Imagen use a frozen pretrained text encoder)."""
    cfg = read_json(Path(clip_dir) / "config.json")
    if cfg.get("kind") != "clip":
        raise ImgenError(f"encoder_init={str(clip_dir)!r} is not a CLIP directory (config.json kind="
                         f"{cfg.get('kind')!r}); give a directory written by CLIP.save")
    te = cfg["text_encoder"]
    return {"vocab": Tokenizer.from_dict(cfg["tokenizer"]).itos[4:], "max_len": te["max_len"],
            "encoder_options": {k: te[k] for k in ("dim", "depth", "heads", "pool") if k in te}}


def load_clip_text_tower(encoder: TextTransformer, clip_dir: str | Path) -> None:
    state = load_tensors(Path(clip_dir) / "model.safetensors")
    tower = {k[len("text_encoder."):]: v for k, v in state.items() if k.startswith("text_encoder.")}
    try:
        encoder.load_state_dict(tower)
    except RuntimeError as e:
        raise ImgenError(f"the text tower of the CLIP in {str(clip_dir)!r} does not fit this text encoder ({e}); "
                         f"take vocab/encoder_options/max_len from it (imgen.nn.text2img.clip_text_options)") from None


def build_text_transformer(vocab: list | None, encoder_options: dict | None, max_len: int, encoder_init: str = "",
                           freeze: bool = False, what: str = "text2img") -> tuple[Tokenizer, TextTransformer]:
    """(Tokenizer, TextTransformer) over `vocab`; with encoder_init a CLIP directory, its text tower's trained
    weights (at load time the model's own state dict brings them); `freeze` stops its gradients."""
    if not vocab:
        raise ImgenError(f"{what} with encoder='transformer' needs a vocabulary (net option 'vocab'); training fills "
                         "it from the dataset's captions (or from encoder_init's CLIP) — train on a captioned dataset")
    tokenizer = Tokenizer(vocab)
    opts = dict(encoder_options or {})
    check_kwargs(TextTransformer, {"vocab_size": 0, **opts}, f"{what} encoder_options")
    encoder = TextTransformer(tokenizer.vocab_size, max_len=max_len, **opts)
    if encoder_init and Path(encoder_init).is_dir():
        load_clip_text_tower(encoder, encoder_init)
    if freeze:
        encoder.requires_grad_(False)
    return tokenizer, encoder


ENCODERS = ("transformer", "minilm")


class TextToImageNet(ConfigMixin, nn.Module):
    name = "text2img"

    def __init__(self, in_channels: int, image_size: int, vocab: list | None = None, backbone: str = "unet",
                 backbone_options: dict | None = None, encoder: str = "transformer",
                 encoder_options: dict | None = None, max_len: int = 32, encoder_init: str = "",
                 freeze_encoder: bool = False, phrases: bool = False):
        super().__init__()
        self.save_config(locals())
        if backbone not in BACKBONES:
            raise ImgenError(f"unknown text2img backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
        if encoder not in ENCODERS:
            raise ImgenError(f"unknown text encoder {encoder!r}; valid: {', '.join(ENCODERS)}")
        enc_opts = dict(encoder_options or {})
        if encoder == "transformer":
            self.tokenizer, self.text_encoder = build_text_transformer(vocab, enc_opts, max_len, encoder_init,
                                                                       freeze_encoder)
            context_dim = self.text_encoder.dim
        else:
            if enc_opts:
                raise ImgenError(f"the frozen minilm encoder takes no encoder_options, got {enc_opts}")
            self.tokenizer = None
            # frozen and rebuilt from its package: kept out of the state dict (not a registered submodule)
            self.__dict__["text_encoder"] = MiniLMEncoder(max_len)
            context_dim = MiniLMEncoder.dim
        opts = {"in_channels": in_channels, "image_size": image_size, **(backbone_options or {}),
                "context_dim": context_dim}
        check_kwargs(BACKBONES[backbone], opts, f"text2img backbone {backbone!r}")
        self.backbone = BACKBONES[backbone](**opts)
        self.in_channels, self.image_size, self.max_len = in_channels, image_size, max_len
        # object-level tokens: each object phrase encoded on its own, so its shape, colour, size and position
        # arrive bound in one vector (noun-phrase encoding, Structured Diffusion Guidance, Feng et al. 2023)
        self.phrase_emb = nn.Parameter(torch.zeros(context_dim)) if phrases else None

    def encode(self, prompts) -> dict:
        """{"text": (B, L, D), "text_mask": (B, L) bool, "text_pooled": (B, D)} of the prompts. With phrases=True
        the tokens are [one pooled vector per object phrase (split_phrases), then the prompt's word tokens]."""
        prompts = check_prompts(prompts)
        tokens, mask, pooled = encode_prompts(prompts, self.text_encoder, self.tokenizer)
        if self.phrase_emb is None:
            return {"text": tokens, "text_mask": mask, "text_pooled": pooled}
        split = [split_phrases(p) for p in prompts]
        with warnings.catch_warnings():  # a prompt too long was already warned about once, above
            warnings.simplefilter("ignore")
            _, _, flat = encode_prompts([p for ps in split for p in ps], self.text_encoder, self.tokenizer)
        counts = torch.tensor([len(ps) for ps in split], device=mask.device)
        phr = pad_sequence(list((flat + self.phrase_emb).split(counts.tolist())), batch_first=True)  # (B, K, D)
        phr_mask = torch.arange(phr.shape[1], device=mask.device) < counts[:, None]  # (B, K): real phrases
        return {"text": torch.cat([phr, tokens], 1), "text_mask": torch.cat([phr_mask, mask], 1),
                "text_pooled": pooled}

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        cond = dict(cond or {})
        cond.pop("label", None)  # a captioned dataset's class label is not this net's condition
        captions = cond.pop("caption", None)
        if captions is not None:
            if len(captions) != x.shape[0]:
                raise ImgenError(f"got {len(captions)} captions for a batch of {x.shape[0]}; give one per image")
            cond.update(self.encode(list(captions)))
        elif cond.get("text") is None and not bool(torch.as_tensor(cond.get("drop", True)).all()):
            raise ImgenError("this text-to-image net needs cond['caption'] (strings) or the dict net.encode(prompts) "
                             "returns; for unconditional samples set cond['drop'] to True")
        return self.backbone(x, t, cond)
