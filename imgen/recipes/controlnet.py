"""ControlNet-lite training (Zhang et al. 2023) of a frozen text-to-image U-Net on shapes layouts, through the one Trainer.

    finetune_controlnet("shapes-latent-t2i", "layout.safetensors", steps=400)

The run is the base's config with data = shapes-control (each scene's caption, image and label map, rendered
exactly; imgen.data.translation), train.init_from = the base and train.control = {control_channels, control_size}:
the Trainer freezes the base and trains only the ControlNet (imgen.nn.controlnet) on the base's own loss (with half
the prompts dropped, as the paper), in
ADAPTER.run/ (a rerun resumes). The EMA's ControlNet goes to ADAPTER, its options and base to ADAPTER.json. Use:
model.load_controlnet(ADAPTER); model.generate(prompts, control=maps), or
`imgen generate "a red circle" --controlnet ADAPTER --control MAP.png`.
"""
from __future__ import annotations

from pathlib import Path

from imgen.errors import ImgenError
from imgen.nn.controlnet import save_controlnet
from imgen.recipes.lora import base_finetune_config, base_name, finetune, run_dir


PROMPT_DROP = 0.5  # ControlNet sec. 3.3: half the prompts are emptied, so the layout must come from the map
WRONG_POSITIONS = 0.5  # and half the others name another cell: the map wins where the prompt disagrees


def finetune_controlnet(base: str | Path, out: str | Path, steps: int = 700, lr: float = 2e-3, batch_size: int = 16,
                        seed: int = 0, progress: bool = True) -> dict:
    """Train a ControlNet of `base` that reads shapes' label maps; write it to `out`. -> a summary dict."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ImgenError(f"--out {str(out)!r} must be a .safetensors file path (the ControlNet); e.g. "
                         f"layout.safetensors")

    def control_data(d: dict) -> dict:
        if d["data"]["name"] not in ("shapes", "shapes-control"):
            raise ImgenError(f"ControlNet training renders shapes layouts, but the base was trained on "
                             f"{d['data']['name']!r}; give a shapes text-to-image model (e.g. shapes-latent-t2i)")
        options = {**d["data"]["options"], "split": "train", "wrong_positions": WRONG_POSITIONS}
        return {"name": "shapes-control", "options": options, "batch_size": batch_size}

    config = base_finetune_config(base, control_data, steps, lr, seed, control={"control_channels": 3})
    config.train.control["control_size"] = config.data.options.get("image_size", 32)  # the map at pixel size
    opts = config.method.options
    inner = opts.setdefault("method_options", {}) if config.method.name == "latent" else opts
    inner["cond_drop"] = PROMPT_DROP
    trainer, result = finetune(config, "shapes-control", out, progress)
    meta = {"base": base_name(base), "steps": trainer.step, "data": "shapes-control", "map": "label_map"}
    save_controlnet(trainer.ema, out, meta)
    return {**result, "adapter": str(out), "adapter_bytes": out.stat().st_size, "run": str(run_dir(out))}
