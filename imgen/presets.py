"""Named, ready-to-train configs. Each trains in minutes on a 2-core CPU."""
from __future__ import annotations

from typing import Callable

from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.errors import ImgenError

_DIGITS_UNET = {"base_channels": 32, "channel_mults": [1, 2], "num_res_blocks": 2, "attn_resolutions": [4],
                "num_heads": 4}


def digits_flow() -> Config:
    """Class-conditional flow matching on sklearn's 8x8 digits: ~3 minutes on 2 cores."""
    return Config(
        description="class-conditional flow matching (rectified flow) on 8x8 digits, U-Net",
        data=DataConfig("digits", {"split": "all"}, batch_size=128),
        net=NetConfig("unet", dict(_DIGITS_UNET)),
        method=MethodConfig("flow_matching", {"cond_drop": 0.1}),
        train=TrainConfig(steps=1500, lr=2e-3, warmup=100, ema_decay=0.995, ckpt_every=250),
        sample=SampleConfig("euler", steps=25),
    )


def digits_ddpm() -> Config:
    """Class-conditional DDPM (cosine schedule, eps-prediction) on 8x8 digits."""
    c = digits_flow()
    c.description = "class-conditional DDPM (cosine, eps) on 8x8 digits, U-Net"
    c.method = MethodConfig("ddpm", {"schedule": "cosine", "prediction": "eps", "cond_drop": 0.1})
    c.sample = SampleConfig("ddim", steps=25)
    return c


def _toy(name: str, method: MethodConfig, sampler: str) -> Callable[[], Config]:
    def make() -> Config:
        return Config(
            description=f"{method.name} on the 2D '{name}' toy, MLP denoiser",
            data=DataConfig(name, {}, batch_size=256),
            net=NetConfig("mlp", {"hidden": 256, "depth": 4}),
            method=method,
            train=TrainConfig(steps=3000, lr=1e-3, warmup=100, ema_decay=0.995, ckpt_every=500, log_every=50),
            sample=SampleConfig(sampler, steps=50),
        )
    make.__doc__ = f"{method.name} on the 2D {name} toy (MLP), about a minute on 2 cores."
    return make


PRESETS: dict[str, Callable[[], Config]] = {
    "digits-flow": digits_flow,
    "digits-ddpm": digits_ddpm,
    "moons-flow": _toy("moons", MethodConfig("flow_matching", {"cond_drop": 1.0}), "euler"),
    "8gaussians-flow": _toy("8gaussians", MethodConfig("flow_matching", {"cond_drop": 1.0}), "euler"),
    "swissroll-ddpm": _toy("swissroll", MethodConfig("ddpm", {"schedule": "linear", "cond_drop": 1.0}), "ddim"),
    "checkerboard-flow": _toy("checkerboard", MethodConfig("flow_matching", {"cond_drop": 1.0}), "euler"),
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ImgenError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)} (or give a .json/.toml config file)")
    return PRESETS[name]()
