"""LoRA fine-tuning (Hu et al. 2021) of a trained model on a captioned image folder, through the one Trainer.

    finetune_lora("shapes-latent-t2i", "my_concept/", "concept.safetensors", steps=300, rank=4)

The run is the base model's own config with the folder as its data, train.init_from = the base directory and
train.lora = {rank, alpha, targets}: the Trainer freezes the net and trains only the adapters (imgen.nn.lora).
It trains in ADAPTER.run/ beside the adapter (rerun the same command to resume), then writes the adapter (the
EMA's LoRA matrices, a few % of the base) to ADAPTER and its options to ADAPTER.json. Load it with
imgen.load(base).load_lora(ADAPTER, scale) or `imgen generate "..." --model BASE --lora ADAPTER[:scale]`.
"""
from __future__ import annotations

from pathlib import Path

from imgen.checkpoint import read_json
from imgen.config import config_from_dict, load_config
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.methods.latent import AE_DIR, SCALE_FILE
from imgen.nn.lora import check_lora_options, save_adapter
from imgen.pretrained import resolve_model_path
from imgen.train import Trainer


def run_dir(adapter: str | Path) -> Path:
    """Where the fine-tuning run of `adapter` trains (and resumes from): ADAPTER.run beside it."""
    return Path(adapter).with_suffix(".run")


def finetune_config(base: str | Path, data: str | Path, steps: int, lr: float, batch_size: int, seed: int,
                    **frozen_base):
    """The Trainer config of a fine-tune of model directory (or shipped name) `base` on image folder `data` that
    trains only what `frozen_base` adds to the net: lora={rank, alpha, targets} or tokens={words, init}."""
    def folder_data(d: dict) -> dict:
        if not Path(data).is_dir():
            raise ImgenError(f"--data {str(data)!r} is not a folder; give a folder of PNGs with captions.jsonl "
                             f"({{\"file\": ..., \"caption\": ...}} per line)")
        folder = {"path": str(Path(data).resolve())}
        if d["net"]["options"].get("num_classes"):  # class subfolders get the base's label ids, not their sorted order
            folder["class_names"] = base_class_names(d["data"], d["net"]["options"]["num_classes"])
        return {"name": "folder", "options": folder, "batch_size": batch_size}

    return base_finetune_config(base, folder_data, steps, lr, seed, **frozen_base)


def base_finetune_config(base: str | Path, data, steps: int, lr: float, seed: int, **frozen_base):
    """The base's own config with data = data(its config dict), train.init_from = the base and `frozen_base`
    (lora / tokens / control) telling the Trainer what alone trains."""
    base_dir = resolve_model_path(base)
    if not (Path(base_dir) / "config.json").is_file():
        raise ImgenError(f"base model {str(base)!r} is neither a shipped model nor a model directory (no "
                         f"config.json); give a directory written by `imgen train` or a shipped name")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ImgenError(f"--steps must be an integer >= 1, got {steps!r}")
    d = load_config(Path(base_dir) / "config.json").to_dict()
    d["data"] = data(d)
    if d["method"]["name"] == "latent":  # the base's own autoencoder copy and latent scale, not re-measured
        ae = Path(base_dir) / AE_DIR
        opts = d["method"]["options"]
        opts["autoencoder"] = str(ae.resolve())
        if opts.get("scale") is None:
            opts["scale"] = float(read_json(ae / SCALE_FILE)["scale"])
    d["train"].update(steps=steps, lr=lr, warmup=min(20, steps), seed=seed, init_from=str(Path(base_dir).resolve()),
                      ema_decay=0.99, ckpt_every=50, log_every=10, lr_schedule="constant", **frozen_base)
    return config_from_dict(d)


def base_class_names(data: dict, num_classes: int) -> list[str]:
    """The class names of a class-conditional base, in label order (from its dataset; digits' are "0".."9")."""
    try:
        names = load_dataset(data["name"], **data["options"]).class_names
    except ImgenError as e:
        raise ImgenError(f"the base is class-conditional and its dataset's class names are needed to label the "
                         f"folder's subfolders, but its dataset cannot be read here ({e})") from None
    return list(names) if names else [str(i) for i in range(num_classes)]


def finetune(config, data: str | Path, out: Path, progress: bool = True):
    """Train `config` (from finetune_config) in run_dir(out) -> (the Trainer after fit(), fit's summary)."""
    if (run_dir(out) / "config.json").is_file():  # a resume must train what the run trained
        old, new = load_config(run_dir(out) / "config.json").train, config.train
        keys = [k for k in ("init_from", "lora", "tokens", "control") if getattr(old, k) != getattr(new, k)]
        if keys:
            raise ImgenError(f"{str(run_dir(out))!r} holds a fine-tune with another {', '.join(keys)} "
                             f"({', '.join(f'{k}={getattr(old, k)!r}' for k in keys)}); rerun with those options, or "
                             f"choose another --out (or delete that folder to start over)")
    trainer = Trainer(config, run_dir(out), progress)
    if trainer.dataset.captions is None and trainer.config.net.name == "text2img":
        raise ImgenError(f"--data {str(data)!r} has no captions.jsonl, so a text-to-image model cannot learn from it; "
                         f"add one {{\"file\": \"x.png\", \"caption\": \"...\"}} line per image")
    return trainer, trainer.fit()


def base_name(base: str | Path) -> str:
    """What an adapter's meta calls its base: a shipped model's name, or the directory's absolute path."""
    return str(Path(base).resolve()) if Path(base).is_dir() else str(base)


def finetune_lora(base: str | Path, data: str | Path, out: str | Path, steps: int = 300, rank: int = 4,
                  alpha: float | None = None, targets=("attn", "conv"), lr: float = 1e-3, batch_size: int = 16,
                  seed: int = 0, progress: bool = True) -> dict:
    """Fine-tune a LoRA adapter of `base` on the captioned folder `data`; write it to `out`. -> a summary dict."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ImgenError(f"--out {str(out)!r} must be a .safetensors file path (the adapter); e.g. concept.safetensors")
    rank, alpha, targets = check_lora_options(rank, rank if alpha is None else alpha, targets)
    lora = {"rank": rank, "alpha": alpha, "targets": list(targets)}
    trainer, result = finetune(finetune_config(base, data, steps, lr, batch_size, seed, lora=lora), data, out,
                               progress)
    meta = {"kind": "lora", "base": base_name(base), **lora, "steps": trainer.step, "data": str(Path(data).resolve())}
    save_adapter(trainer.ema, out, meta)
    return {**result, "adapter": str(out), "adapter_bytes": out.stat().st_size, "run": str(run_dir(out))}
