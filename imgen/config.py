"""Dataclass configs: everything needed to rebuild and retrain a model, saved as config.json beside it.

Load from JSON or TOML, override with `--set section.key=value`; unknown keys and wrong types are
rejected with a message that names the key and the fix.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from imgen.errors import ImgenError


@dataclass
class DataConfig:
    name: str = "digits"  # a name from `imgen.data.list_datasets()`
    options: dict = field(default_factory=dict)  # passed to imgen.data.load_dataset
    batch_size: int = 128


@dataclass
class NetConfig:
    name: str = "unet"  # a name from imgen.nn.NETS
    options: dict = field(default_factory=dict)  # constructor kwargs; in_channels/image_size/num_classes come from data


@dataclass
class MethodConfig:
    name: str = "flow_matching"  # a name from imgen.methods.METHODS
    options: dict = field(default_factory=dict)  # e.g. {"schedule": "cosine", "prediction": "v", "cond_drop": 0.1}


@dataclass
class TrainConfig:
    steps: int = 2000
    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.99])
    warmup: int = 100  # linear LR warm-up steps, then lr_schedule
    lr_schedule: str = "constant"  # after warm-up: "constant", or "cosine" (decay to 0 at the last step)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + step) / (10 + step)) early on
    seed: int = 0
    ckpt_every: int = 250
    log_every: int = 10
    init_from: str = ""  # a model directory whose EMA weights initialise net and EMA (reflow, distillation); "" = random
    lora: dict = field(default_factory=dict)  # {rank, alpha, targets}: freeze the net, train LoRA adapters (imgen.nn.lora)
    tokens: dict = field(default_factory=dict)  # {words, init}: freeze the net, learn new words (textual inversion)
    control: dict = field(default_factory=dict)  # {control_channels, control_size}: freeze the net, train a ControlNet

    def adamw(self, params, lr: float | None = None):
        """The AdamW this config describes (betas, weight decay, eps) over `params`, at `lr` (default: self.lr)."""
        import torch

        return torch.optim.AdamW(params, lr=self.lr if lr is None else lr, betas=tuple(self.betas),
                                 weight_decay=self.weight_decay, eps=self.adam_eps)


@dataclass
class SampleConfig:
    sampler: str = "euler"  # a name from imgen.samplers.SAMPLERS
    steps: int = 25
    grid: str = "uniform"  # time grid: uniform, karras or logsnr (imgen.schedules.make_grid)
    cfg: float = 1.0  # classifier-free guidance scale; 1 = none
    eta: float = 0.0  # ddim's eta; tcd's gamma (imgen.samplers.sample_tcd)
    shift: float = 1.0  # grid time shift, SD3 eq. 23 (imgen.schedules.make_grid); 1 = none
    clip_x0: bool = True  # images: clip the denoiser's x0_hat to [-1, 1] at every step
    rerank: int = 1  # text-to-image: candidates drawn per image, the one `reranker` scores best kept (imgen.rerank)
    reranker: str = ""  # the CLIP that scores them: a model directory or a shipped name; "" = no reranking


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    description: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_identity(self) -> dict:
        """The parts that define *which* model this is (a resume must not change them)."""
        d = self.to_dict()
        return {k: d[k] for k in ("data", "net", "method")}


def _check_type(value: Any, typ: Any, where: str) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool), float: lambda v: isinstance(v, float),
          str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool), dict: lambda v: isinstance(v, dict),
          list: lambda v: isinstance(v, list)}[typ]
    if not ok(value):
        raise ImgenError(f"config key {where!r} must be {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def _from_dict(cls, d: dict, prefix: str = ""):
    if not isinstance(d, dict):
        raise ImgenError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a table/object, got {d!r}")
    hints, kwargs = get_type_hints(cls), {}
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in d.items():
        if key not in names:
            raise ImgenError(f"unknown config key {prefix + key!r}; valid keys here: {', '.join(names)}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _from_dict(typ, value, prefix + key + ".")
        else:
            kwargs[key] = _check_type(value, typ, prefix + key)
    return cls(**kwargs)


def config_from_dict(d: dict) -> Config:
    return _from_dict(Config, d)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ImgenError(f"config file {str(path)!r} not found; give a preset name (see `imgen presets`) or a .json/.toml path")
    text = path.read_text()
    try:
        d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ImgenError(f"config file {str(path)!r} is not valid {path.suffix[1:] or 'JSON'}: {e}") from None
    return config_from_dict(d)


def save_config(config: Config, path: str | Path) -> None:
    from imgen.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def parse_value(text: str) -> Any:
    """`--set` values are JSON when they parse as JSON (numbers, true/false, lists, objects), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `a.b=c` overrides; keys under an `options` table are free-form (checked by the builder)."""
    d = config.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ImgenError(f"override {item!r} must look like section.key=value, e.g. train.lr=1e-3")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node, dict) or p not in node:
                if isinstance(node, dict) and i > 0 and parts[i - 1] == "options":
                    node[p] = {}
                else:
                    raise ImgenError(f"unknown config key {'.'.join(parts[:i + 1])!r} in override {item!r}; "
                                     f"see `imgen presets --show NAME` for the keys")
            node = node[p]
        if not isinstance(node, dict):
            raise ImgenError(f"cannot set {key!r}: {'.'.join(parts[:-1])!r} is not a table")
        in_options = len(parts) >= 2 and "options" in parts[:-1]
        if parts[-1] not in node and not in_options:
            raise ImgenError(f"unknown config key {key!r} in override {item!r}; valid keys here: {', '.join(node)}")
        node[parts[-1]] = parse_value(text)
    return config_from_dict(d)
