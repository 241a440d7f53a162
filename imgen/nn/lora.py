"""LoRA (Hu et al. 2021): low-rank adapters on the attention projections and convolutions of any imgen net.

    add_lora(net, rank=4, alpha=4, targets=("attn", "conv"))   # wraps the layers in place; base weights frozen
    ...train only lora_parameters(net)...
    adapter_state_dict(net)      # just the A and B matrices: a file a few % of the base model's size
    merge(net) / unmerge(net)    # fold W + (alpha / r) B A into W for sampling at base speed, and back

A wrapped layer computes h = W x + s (alpha / r) B A x (LoRA eq. 3) with B zero-initialised and A Kaiming-uniform,
so a fresh adapter leaves the net's output unchanged; s is the user's strength (`set_scale`, `--lora FILE:s`).
For a convolution A is a conv with the base's kernel, stride and padding into r channels and B a 1x1 conv back,
so B A is one (out, in, kh, kw) kernel of rank <= r. Targets: "attn" (q/k/v/output projections of the image net's
self- and cross-attention), "conv" (its convolutions) and "text" (the text encoder's attention, left frozen by
default). Adapter files: `save_adapter` / `read_adapter` (safetensors; rank, alpha, targets and the base's name in
its metadata and in a small JSON beside it).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imgen.checkpoint import atomic_write_text, load_tensors, save_tensors
from imgen.errors import ImgenError

TARGETS = ("attn", "conv", "text")
ATTN_LINEARS = ("qkv", "q", "kv", "proj")  # the projections imgen's attention layers (layers.py, text.py) own
TEXT_PREFIX = "text_encoder."  # text2img's text tower


class LoRALayer(nn.Module):
    """A frozen base layer plus a trainable low-rank update B A scaled by alpha / r (and a strength `scale`)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank  # LoRA sec. 4.1: scale delta W x by alpha / r
        self.scale, self.merged = 1.0, False

    def delta_weight(self) -> torch.Tensor:
        """s (alpha / r) B A in the base weight's shape."""
        b, a = self.lora_B.flatten(1), self.lora_A.flatten(1)  # (out, r), (r, in * kh * kw)
        return ((b @ a) * (self.scaling * self.scale)).view_as(self.base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged or self.scale == 0:
            return out
        return out + self.scaling * self.scale * self._low_rank(x)  # LoRA eq. 3: h = W0 x + B A x

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


class LoRALinear(LoRALayer):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base, rank, alpha)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # B = 0: delta W = 0 at the start
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # A: nn.Linear's own (Kaiming-uniform) init

    def _low_rank(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.lora_A), self.lora_B)


class LoRAConv2d(LoRALayer):
    def __init__(self, base: nn.Conv2d, rank: int, alpha: float):
        super().__init__(base, rank, alpha)
        kh, kw = base.kernel_size
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_channels, kh, kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_channels, rank, 1, 1))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def _low_rank(self, x: torch.Tensor) -> torch.Tensor:
        c = self.base
        h = F.conv2d(x, self.lora_A, None, c.stride, c.padding, c.dilation)
        return F.conv2d(h, self.lora_B)


def check_lora_options(rank, alpha, targets) -> tuple[int, float, tuple[str, ...]]:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ImgenError(f"LoRA rank must be an integer >= 1, got {rank!r}; e.g. --rank 4")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ImgenError(f"LoRA alpha must be a positive number, got {alpha!r}; e.g. alpha = rank")
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ImgenError(f"LoRA targets must be a non-empty list of {', '.join(TARGETS)}, got {list(targets)}")
    return rank, float(alpha), targets


def _is_target(name: str, module: nn.Module, parent: nn.Module, targets: tuple[str, ...]) -> bool:
    in_text = name.startswith(TEXT_PREFIX)
    attn = (isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in ATTN_LINEARS
            and isinstance(getattr(parent, "qkv", getattr(parent, "q", None)), (nn.Linear, LoRALinear)))
    if in_text:
        return "text" in targets and attn
    if isinstance(module, nn.Conv2d):
        return "conv" in targets and module.groups == 1
    return "attn" in targets and attn


def add_lora(net: nn.Module, rank: int = 4, alpha: float | None = None, targets=("attn", "conv")) -> list[str]:
    """Wrap the target layers of `net` in place with fresh LoRA adapters and freeze every other weight.
    -> the wrapped layers' names. alpha defaults to rank (scaling alpha / r = 1)."""
    rank, alpha, targets = check_lora_options(rank, rank if alpha is None else alpha, targets)
    if any(isinstance(m, LoRALayer) for m in net.modules()):
        raise ImgenError("this net already carries a LoRA adapter; unload it (remove_lora) before adding another")
    net.requires_grad_(False)
    modules = dict(net.named_modules())
    names = []
    for name, module in list(modules.items()):
        if not name:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = modules[parent_name]
        if _is_target(name, module, parent, targets):
            wrap = LoRALinear if isinstance(module, nn.Linear) else LoRAConv2d
            setattr(parent, attr, wrap(module, rank, alpha).to(module.weight.device))
            names.append(name)
    if not names:
        raise ImgenError(f"{type(net).__name__} has no layers LoRA can adapt for targets {list(targets)}; "
                         f"choose from {', '.join(TARGETS)}")
    return names


def lora_layers(net: nn.Module) -> dict[str, LoRALayer]:
    return {name: m for name, m in net.named_modules() if isinstance(m, LoRALayer)}


def lora_parameters(net: nn.Module) -> list[nn.Parameter]:
    return [p for m in lora_layers(net).values() for p in (m.lora_A, m.lora_B)]


def adapter_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA matrices: {"<layer>.lora_A": ..., "<layer>.lora_B": ...}."""
    return {f"{name}.{k}": getattr(m, k).detach().clone() for name, m in lora_layers(net).items()
            for k in ("lora_A", "lora_B")}


def load_adapter_state(net: nn.Module, tensors: dict[str, torch.Tensor], what: str = "the adapter") -> None:
    """Copy an adapter_state_dict into the LoRA layers of `net` (made by add_lora with the same options)."""
    own = adapter_state_dict(net)
    missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    wrong = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or extra or wrong:
        key = (wrong or missing or extra)[0]
        detail = (f"{key} is {tuple(tensors[key].shape)} there but {tuple(own[key].shape)} in this model" if wrong
                  else f"it lacks {key}" if missing else f"this model has no {key}")
        raise ImgenError(f"{what} was trained for another base model ({detail}); load it on the base it names "
                         f"(its JSON's 'base'), or fine-tune one for this model")
    layers = lora_layers(net)
    with torch.no_grad():
        for key, value in tensors.items():
            name, _, k = key.rpartition(".")
            getattr(layers[name], k).copy_(value)


def check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ImgenError(f"LoRA scale must be a finite number (1 = as trained, 0 = off), got {scale!r}")
    return float(scale)


def set_scale(net: nn.Module, scale: float) -> None:
    """The adapter's strength s in h = W x + s (alpha / r) B A x (0 = the base model, 1 = as trained)."""
    scale = check_scale(scale)
    for m in lora_layers(net).values():
        merged = m.merged
        m.unmerge()
        m.scale = scale
        if merged:
            m.merge()


def merge(net: nn.Module) -> None:
    """W <- W + s (alpha / r) B A in every LoRA layer: same outputs, no extra cost per step."""
    for m in lora_layers(net).values():
        m.merge()


def unmerge(net: nn.Module) -> None:
    """Undo merge: W <- W - s (alpha / r) B A."""
    for m in lora_layers(net).values():
        m.unmerge()


def remove_lora(net: nn.Module) -> None:
    """Put the base layers back (unmerged), dropping the adapters. Trainability of the base is not restored."""
    modules = dict(net.named_modules())
    for name, m in lora_layers(net).items():
        m.unmerge()
        parent_name, _, attr = name.rpartition(".")
        setattr(modules[parent_name], attr, m.base)


# ---- adapter files ------------------------------------------------------------------------------------------
def adapter_json_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_adapter(net: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write the adapter of `net` to `path` (safetensors, `meta` in its header) and `meta` to path.json, each
    atomically. `meta` holds base, rank, alpha, targets."""
    path = Path(path)
    save_tensors(adapter_state_dict(net), path, meta)
    atomic_write_text(adapter_json_path(path), json.dumps(meta, indent=2) + "\n")
    return path


def read_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of an adapter file written by save_adapter."""
    path = Path(path)
    if not path.is_file():
        raise ImgenError(f"LoRA adapter {str(path)!r} not found; give the .safetensors file `imgen finetune lora` "
                         f"wrote (--out)")
    tensors, meta = load_tensors(path, with_metadata=True)
    if not all(k in meta for k in ("rank", "alpha", "targets")) or not all(
            k.endswith((".lora_A", ".lora_B")) for k in tensors):
        raise ImgenError(f"{str(path)!r} is not a LoRA adapter (no rank/alpha/targets in its header); give a file "
                         f"written by `imgen finetune lora`")
    return tensors, meta


def apply_adapter(net: nn.Module, path: str | Path, scale: float = 1.0) -> dict:
    """add_lora with the options the adapter file names, load its matrices, set its strength. -> its meta."""
    tensors, meta = read_adapter(path)
    check_scale(scale)  # before touching the net
    add_lora(net, meta["rank"], meta["alpha"], meta["targets"])
    try:
        load_adapter_state(net, tensors, f"LoRA adapter {str(path)!r}")
    except ImgenError:
        remove_lora(net)
        raise
    set_scale(net, scale)
    return meta


def add_lora_from_options(net: nn.Module, options: dict) -> list[str]:
    """add_lora with a config's dict {rank, alpha?, targets?} (train.lora)."""
    unknown = sorted(set(options) - {"rank", "alpha", "targets"})
    if unknown:
        raise ImgenError(f"train.lora has unknown keys {unknown}; it takes rank, alpha and targets "
                         f"(a list of {', '.join(TARGETS)})")
    return add_lora(net, **options)
