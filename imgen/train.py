"""The Trainer, imgen's one training loop: AdamW with warm-up (then constant or cosine LR), grad clipping, EMA,
progress bar, JSONL log, atomic safetensors checkpoints and exact resume.

A method needs only loss(net, batch, generator). Two optional hooks serve methods with several optimizers
(GANs: a discriminator and a generator stepped in turn):
    optimizers(net, train_config) -> {name: torch.optim.Optimizer}    default {"net": AdamW(net.parameters())}
    updates() -> [(name, loss_fn), ...]                                 default [("net", method.loss)]
Each training step runs the updates in order: loss_fn(net, batch, generator), zero_grad, backward, clip the
grads of that optimizer's parameters, step. A later update sees the parameters an earlier one just changed
(alternating D/G steps). The LR schedule scales every optimizer's own learning rates.
Two more optional hooks: set_step(step) is called before each step (a schedule inside a loss, e.g. VQGAN's
delayed discriminator start, reads the checkpointed step rather than counting calls), and log_stats() -> dict
adds its entries to each log line (e.g. a tokenizer's codebook usage and perplexity over the window). A method
that keeps tensors of its own across steps (consistency distillation's EMA target net) exposes them with
state_tensors() -> {name: tensor} and load_state_tensors(net, tensors): they go into the checkpoint.

Exact resume: every batch is a pure function of (seed, step) and every random draw comes from RNGs whose
states are checkpointed, so a run killed at any moment and restarted ends byte-identical to one that never
stopped. A checkpoint is model.safetensors + ema.safetensors (for inference) and train_state.safetensors,
the single file a resume reads (weights, EMA, optimizer, RNG states, step), each written atomically.

Several processes (torchrun, `imgen train --nproc N`; imgen.distributed): each rank trains on its slice of the
global batch, gradients are averaged per update, and rank 0 alone writes checkpoints (after gathering every
rank's RNG state), the log and the progress bar. N processes with batch B/N each train the same weights as one
process with batch B (to float rounding), and a killed job resumes byte-identically.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from imgen.checkpoint import atomic_write_text, load_tensors, read_json, save_tensors
from imgen.config import Config, apply_overrides, config_from_dict, load_config, save_config
from imgen.errors import ImgenError
from imgen.data.base import caption_corpus
from imgen.distributed import Group, global_draws, world_size_from_env
from imgen.methods import build_method
from imgen.nn import build_net_from_config
from imgen.nn.text import SPECIAL_TOKENS, Tokenizer
from imgen.nn.unet import zero_extra_inputs


EMBEDDING_METHODS = ("clip", "unclip_prior", "unclip_decoder")  # conditioned on CLIP embeddings, not class labels


def _is_temp(path: Path) -> bool:
    """A temp file of imgen.checkpoint's atomic writes (".NAME.XXXX.tmp")."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def resolve_config(config: Config, dataset) -> Config:
    """Fill the net options that follow from the data (channels, size, classes)."""
    d = config.to_dict()
    opts = d["net"]["options"]
    channels, size, method_opts = dataset.channels, dataset.image_size, d["method"]["options"]
    if config.method.name == "latent":  # the net denoises the autoencoder's latents (imgen.methods.latent)
        from imgen.methods.latent import autoencoder_shape

        channels, size = autoencoder_shape(method_opts.get("autoencoder", ""), dataset)
        method_opts = method_opts.get("method_options") or {}
    if config.net.name == "mlp":
        opts.setdefault("dim", 2)
    elif config.net.name != "prior":  # the unCLIP prior works on CLIP embeddings, not images
        opts.setdefault("in_channels", channels)
        opts.setdefault("image_size", size)
    if config.net.name == "clip" and not opts.get("vocab"):  # CLIP's tokenizer: the words of the captions
        opts["vocab"] = Tokenizer.from_corpus(caption_corpus(dataset)).itos[len(SPECIAL_TOKENS):]
    elif config.net.name in ("text2img", "text_gan"):  # conditioned on captions, not class labels
        if opts.get("encoder_init"):  # a pretrained CLIP text tower: its vocabulary and architecture
            from imgen.nn.text2img import clip_directory, clip_text_options

            opts["encoder_init"] = clip_directory(opts["encoder_init"], "encoder_init")  # a directory or "shapes-clip"
            opts.update(clip_text_options(opts["encoder_init"]))
            if opts.get("clip_discriminator"):  # a text GAN's D on the same CLIP's image tower: its architecture
                opts.setdefault("image_encoder", read_json(Path(opts["encoder_init"]) / "config.json")["image_encoder"])
        elif opts.get("encoder", "transformer") == "transformer" and not opts.get("vocab"):
            opts["vocab"] = Tokenizer.from_corpus(caption_corpus(dataset)).itos[len(SPECIAL_TOKENS):]
    elif (getattr(dataset, "num_classes", None) and method_opts.get("cond_drop", 0.1) < 1.0
          and config.net.name not in ("autoencoder", "vae", "clip", "prior", "evaluator", "realnvp", "glow", "vqvae")
          and config.method.name not in EMBEDDING_METHODS):
        opts.setdefault("num_classes", dataset.num_classes)
    if config.net.name == "stylegan" and opts.get("clip_discriminator"):  # D on a CLIP's image tower too
        from imgen.nn.text2img import clip_directory

        opts["clip_discriminator"] = clip_directory(opts["clip_discriminator"], "clip_discriminator")
        opts.setdefault("image_encoder", read_json(Path(opts["clip_discriminator"]) / "config.json")["image_encoder"])
    if config.net.name == "token_transformer":  # a prior over a frozen tokenizer's tokens (token_ar, maskgit)
        from imgen.methods.token_prior import tokenizer_net_options

        opts.update(tokenizer_net_options(method_opts, dataset, opts))
    return config_from_dict(d)


def batch_indices(n: int, batch_size: int, seed: int, step: int, infinite: bool = False) -> np.ndarray:
    """Indices of batch `step`: a fresh permutation per epoch, seeded by (seed, epoch); for an infinite
    stream simply the next `batch_size` items. Depends on nothing but its arguments (exact resume)."""
    pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    if infinite:
        return pos
    epochs, offsets = np.divmod(pos, n)
    out = np.empty_like(pos)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n)
        out[epochs == e] = perm[offsets[epochs == e]]
    return out


LR_SCHEDULES = ("constant", "cosine")


def lr_at(step: int, base_lr: float, warmup: int, total_steps: int = 0, schedule: str = "constant") -> float:
    """The learning rate of step `step` (0-based): linear warm-up over `warmup` steps, then constant or a cosine
    decay to 0 at `total_steps` (Loshchilov & Hutter 2017, SGDR eq. 5, one cycle without restarts)."""
    lr = base_lr * min(1.0, (step + 1) / warmup) if warmup > 0 else base_lr
    if schedule == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * max(step - warmup, 0) / max(total_steps - warmup, 1)))
    return lr


def _opt_keys(name: str) -> tuple[str, str]:
    """(tensor prefix, metadata key) of optimizer `name` in train_state.safetensors ("net" keeps the old names)."""
    return ("opt.", "param_groups") if name == "net" else (f"opt[{name}].", f"param_groups[{name}]")


def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str = "opt.") -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {f"{prefix}{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: list, prefix: str = "opt.") -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith(prefix):
            i, k = key[len(prefix):].split(".", 1)
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def _optimizers(method, net, t) -> dict[str, torch.optim.Optimizer]:
    if not hasattr(method, "optimizers"):
        return {"net": t.adamw(net.parameters())}
    opts = method.optimizers(net, t)
    if not opts or not all(isinstance(o, torch.optim.Optimizer) for o in opts.values()):
        raise ImgenError(f"{type(method).__name__}.optimizers must return {{name: torch.optim.Optimizer}}, got {opts!r}")
    return dict(opts)


def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


class Trainer:
    def __init__(self, config: Config, out_dir: str | Path, progress: bool = True):
        from imgen.data import load_dataset

        t = config.train
        if t.steps <= 0:
            raise ImgenError(f"train.steps must be > 0, got {t.steps}; pass e.g. --steps 1000")
        if config.data.batch_size <= 0:
            raise ImgenError(f"data.batch_size must be > 0, got {config.data.batch_size}")
        if t.lr <= 0 or not math.isfinite(t.lr):
            raise ImgenError(f"train.lr must be a positive number, got {t.lr}")
        if t.ckpt_every <= 0 or t.log_every <= 0:
            raise ImgenError("train.ckpt_every and train.log_every must be > 0")
        if t.lr_schedule not in LR_SCHEDULES:
            raise ImgenError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {t.lr_schedule!r}")
        self.group = Group() if world_size_from_env() > 1 else None  # None: one process, the plain loop
        if self.group and config.data.batch_size % self.group.world_size:
            raise ImgenError(f"data.batch_size={config.data.batch_size} does not split over {self.group.world_size} "
                             f"processes; use a batch size divisible by the process count (--set data.batch_size=...)")
        self.out, self.progress = Path(out_dir), progress and (self.group is None or self.group.is_main)
        self.dataset = load_dataset(config.data.name, **config.data.options)
        self.config = resolve_config(config, self.dataset)
        self._check_out_dir()
        torch.manual_seed(t.seed)  # net init and dropout draw from the global RNG, whose state is checkpointed
        self.net = build_net_from_config(self.config)
        self.ema = build_net_from_config(self.config)
        if t.init_from:
            self._init_from(t.init_from)
        if t.lora:  # LoRA fine-tuning (Hu et al. 2021): only the adapters train; the optimizer skips frozen weights
            from imgen.nn.lora import add_lora_from_options

            for net in (self.net, self.ema):
                add_lora_from_options(net, t.lora)
        if t.tokens:  # textual inversion (Gal et al. 2022): only the new words' embeddings train
            from imgen.nn.textual_inversion import add_tokens_from_options

            for net in (self.net, self.ema):
                add_tokens_from_options(net, t.tokens)
        if t.control:  # ControlNet (Zhang et al. 2023): a trainable encoder copy of the (init_from) base, joined by zero convs
            from imgen.nn.controlnet import add_controlnet_from_options

            for net in (self.net, self.ema):
                add_controlnet_from_options(net, t.control)
        self.ema.load_state_dict(self.net.state_dict())
        self.ema.requires_grad_(False)
        self.method = build_method(self.config.method.name, **self.config.method.options)
        self.optimizers = _optimizers(self.method, self.net, t)
        self.updates = self.method.updates() if hasattr(self.method, "updates") else [("net", self.method.loss)]
        unknown = [name for name, _ in self.updates if name not in self.optimizers]
        if unknown or not self.updates:
            raise ImgenError(f"{type(self.method).__name__}.updates names optimizers {unknown} that optimizers() does "
                             f"not return (it returns {sorted(self.optimizers)})")
        self.base_lrs = {name: [g["lr"] for g in o.param_groups] for name, o in self.optimizers.items()}
        self.gen = torch.Generator().manual_seed(t.seed)  # noise, timesteps and condition dropout (same on every rank)
        if self.group and not self.group.is_main:
            torch.manual_seed(self.group.rank_seed(t.seed, 0))  # dropout differs per rank; rank 0 keeps the seed's
        self.step = 0
        if (self.out / "train_state.safetensors").exists():
            self._resume()

    # -- directory and checkpoint handling -------------------------------------------------------
    def _check_out_dir(self):
        cfg_path = self.out / "config.json"
        if cfg_path.exists():
            try:
                saved = load_config(cfg_path)
            except ImgenError as e:
                raise ImgenError(f"--out {str(self.out)!r} holds an unreadable config.json ({e}); "
                                 "choose another --out directory") from None
            if saved.model_identity() != self.config.model_identity():
                diff = [k for k in ("data", "net", "method") if saved.model_identity()[k] != self.config.model_identity()[k]]
                raise ImgenError(f"--out {str(self.out)!r} holds a different model (its {', '.join(diff)} config differs); "
                                 "choose another --out directory, or delete it to start over")
        elif self.out.exists() and any(not _is_temp(p) for p in self.out.iterdir()):
            raise ImgenError(f"--out {str(self.out)!r} is not empty and holds no imgen model; choose an empty or new directory")

    def _init_from(self, path: str):
        """Start from another model's EMA weights (same net config), e.g. a reflow/distillation teacher; a U-Net
        widened by extra input channels (an inpainting net) gets zero weights on them (unet.zero_extra_inputs)."""
        weights = Path(path) / "ema.safetensors"
        try:
            self.net.load_state_dict(zero_extra_inputs(self.net, load_tensors(weights)))
        except RuntimeError as e:
            raise ImgenError(f"train.init_from={path!r}: its weights do not fit this net config ({e}); "
                             "use the teacher's net config") from None

    def _resume(self):
        state, meta = load_tensors(self.out / "train_state.safetensors", with_metadata=True)
        self.net.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("ema.")})
        if hasattr(self.method, "load_state_tensors"):
            self.method.load_state_tensors(self.net, {k[7:]: v for k, v in state.items() if k.startswith("method.")})
        for name, opt in self.optimizers.items():
            prefix, key = _opt_keys(name)
            _restore_optimizer(opt, state, meta[key], prefix)
        self.gen.set_state(state["rng.generator"])
        self.step = int(meta["step"])
        key = f"rng.torch.rank{self.group.rank}" if self.group and not self.group.is_main else "rng.torch"
        if key in state:
            torch.set_rng_state(state[key])
        else:  # resumed with more processes than the checkpoint was written by
            torch.manual_seed(self.group.rank_seed(self.config.train.seed, self.step))

    def _truncate_log(self, step: int):
        """Drop log lines written after the checkpoint we resume from (step 0 when a kill came before the first
        checkpoint): they will be written again. Also drops a line torn by a kill mid-write."""
        log = self.out / "log.jsonl"
        if log.exists():
            keep = []
            for line in log.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= step:
                        keep.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
            atomic_write_text(log, "".join(ln + "\n" for ln in keep))

    def save_checkpoint(self):
        rng = {"rng.generator": self.gen.get_state(), "rng.torch": torch.get_rng_state()}
        if self.group:  # every rank's global RNG; rank 0 writes, the others wait at the barrier
            states = self.group.gather(rng["rng.torch"])
            rng.update({f"rng.torch.rank{r}": s for r, s in enumerate(states) if r})
            if not self.group.is_main:
                self.group.barrier()
                return
        meta = {"step": self.step}
        save_tensors(self.net.state_dict(), self.out / "model.safetensors", meta)
        save_tensors(self.ema.state_dict(), self.out / "ema.safetensors", meta)
        state = {**{f"model.{k}": v for k, v in self.net.state_dict().items()},
                 **{f"ema.{k}": v for k, v in self.ema.state_dict().items()},
                 **rng}
        if hasattr(self.method, "state_tensors"):
            state.update({f"method.{k}": v for k, v in self.method.state_tensors().items()})
        meta = {"step": self.step}
        for name, opt in self.optimizers.items():
            prefix, key = _opt_keys(name)
            tensors, meta[key] = _flatten_optimizer(opt, prefix)
            state.update(tensors)
        save_tensors(state, self.out / "train_state.safetensors", meta)
        atomic_write_text(self.out / "train_state.json", json.dumps({"step": self.step, "total_steps": self.config.train.steps}) + "\n")
        if self.group:
            self.group.barrier()

    # -- the loop ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _update_ema(self):
        t = self.config.train
        decay = min(t.ema_decay, (1 + self.step) / (10 + self.step)) if t.ema_warmup else t.ema_decay
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p, 1 - decay)  # EMA of weights (Polyak averaging)
        for e, b in zip(self.ema.buffers(), self.net.buffers()):
            e.copy_(b)

    def fit(self) -> dict:
        t, data = self.config.train, self.config.data
        main = self.group is None or self.group.is_main
        if self.group:
            self.group.barrier()  # every rank has read the directory before rank 0 writes to it
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            for p in self.out.iterdir():  # temp files of a write that a kill interrupted
                if _is_temp(p):
                    p.unlink()
            save_config(self.config, self.out / "config.json")
        for first in (True, False) if self.group else (True,):  # ranks > 0 bind after rank 0 wrote its files
            if hasattr(self.method, "bind") and main == first:  # e.g. a latent method copies its autoencoder
                self.method.bind(self.out, self.dataset)
            if self.group and first:
                self.group.barrier()
        infinite = bool(getattr(self.dataset, "infinite", False))
        self.net.train()
        if main:
            self._truncate_log(self.step)
        log = (self.out / "log.jsonl").open("a") if main else None
        bar = tqdm(total=t.steps, initial=self.step, desc=f"train {self.out.name}", disable=not self.progress,
                   dynamic_ncols=True)
        names = [name for name, _ in self.updates]
        window_loss, window_n, tic = dict.fromkeys(names, 0.0), 0, time.perf_counter()
        losses = dict.fromkeys(names, float("nan"))
        try:
            while self.step < t.steps:
                idx = batch_indices(len(self.dataset), data.batch_size, t.seed, self.step, infinite)
                batch = self.dataset.get(self.group.split_batch(idx) if self.group else idx)
                scale = lr_at(self.step, 1.0, t.warmup, t.steps, t.lr_schedule)
                if hasattr(self.method, "set_step"):
                    self.method.set_step(self.step)
                for name, opt in self.optimizers.items():
                    for g, base in zip(opt.param_groups, self.base_lrs[name]):
                        g["lr"] = base * scale
                gnorms = {name: self._update(name, loss_fn, batch, losses) for name, loss_fn in self.updates}
                self.step += 1
                self._update_ema()
                for name in names:
                    window_loss[name] += losses[name]
                window_n += 1
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == t.steps:  # every rank drains log_stats; rank 0 writes
                    dt = time.perf_counter() - tic
                    first = names[0]
                    rec = {"step": self.step, "loss": window_loss[first] / window_n,
                           "lr": self.optimizers[first].param_groups[0]["lr"], "grad_norm": gnorms[first],
                           "images_per_s": window_n * data.batch_size / max(dt, 1e-9)}
                    if len(names) > 1:
                        rec.update({f"loss_{n}": window_loss[n] / window_n for n in names})
                        rec.update({f"grad_norm_{n}": gnorms[n] for n in names})
                    if hasattr(self.method, "log_stats"):
                        rec.update(self.method.log_stats())
                    if log:
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
                    window_loss, window_n, tic = dict.fromkeys(names, 0.0), 0, time.perf_counter()
                if self.step % t.ckpt_every == 0 or self.step == t.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            if log:
                log.close()
        out = {"step": self.step, "loss": losses[names[0]], "out": str(self.out)}
        return out if len(names) == 1 else {**out, "losses": losses}

    def _update(self, name: str, loss_fn, batch: dict, losses: dict) -> float:
        """One optimizer's update: loss, backward, grad clipping over its parameters, step. -> the grad norm.
        Several processes: the gradients (and the logged loss) are averaged over the ranks before clipping."""
        if self.group:
            n = self.config.data.batch_size // self.group.world_size
            with global_draws(self.gen, n, self.group.rank, self.group.world_size):
                loss = loss_fn(self.net, batch, self.gen)
        else:
            loss = loss_fn(self.net, batch, self.gen)
        if not self.group and not torch.isfinite(loss):
            self._fail_nonfinite("loss" if len(self.updates) == 1 else f"loss of {name!r}", loss.item())
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.group:  # the mean over ranks, known to all, so that every rank stops together on a bad value
            mean = self.group.average_grads(_params(opt), loss)
            if not math.isfinite(mean):
                self._fail_nonfinite("loss" if len(self.updates) == 1 else f"loss of {name!r}", mean)
            loss = torch.tensor(mean)
        clip = self.config.train.grad_clip
        gnorm = torch.nn.utils.clip_grad_norm_(_params(opt), clip if clip > 0 else float("inf"))
        if not torch.isfinite(gnorm):
            self._fail_nonfinite("gradient norm", gnorm.item())
        opt.step()
        losses[name] = loss.item()
        return gnorm.item()

    def _fail_nonfinite(self, what: str, value: float):
        last = json.loads((self.out / "train_state.json").read_text())["step"] if (self.out / "train_state.json").exists() else None
        kept = f"the last good checkpoint (step {last}) is kept in {str(self.out)!r}" if last is not None else "no checkpoint had been written yet"
        raise ImgenError(f"training stopped: {what} became {value} at step {self.step + 1}; {kept}. "
                         "Lower the learning rate (--set train.lr=...) or keep gradient clipping on (train.grad_clip)")


def train(config: Config, out_dir: str | Path, progress: bool = True) -> dict:
    """Train (or resume) the model described by `config` into `out_dir` (in a torchrun job: this rank's part)."""
    trainer = Trainer(config, out_dir, progress)
    try:
        return trainer.fit()
    finally:
        if trainer.group:
            trainer.group.close()


def train_preset(name: str, out: str | Path, steps: int | None = None, progress: bool = False,
                 overrides: tuple[str, ...] = ()) -> float:
    """Train preset `name` (with `steps` instead of its own budget, and `a.b=c` overrides as `imgen train --set`)
    into `out`, or resume it, or reuse it when it has finished: the training wall seconds summed over every run
    into `out` (kept in out/wall_s.json), so a benchmark that reuses a cached model still reports what it cost."""
    from imgen.presets import get_preset  # presets build configs; nothing of theirs imports the Trainer

    out = Path(out)
    cfg = apply_overrides(get_preset(name), list(overrides))
    if steps is not None:
        cfg.train.steps, cfg.train.ckpt_every = steps, min(cfg.train.ckpt_every, steps)
    if (out / "config.json").is_file() and \
            load_config(out / "config.json").model_identity()["method"] != cfg.model_identity()["method"]:
        raise ImgenError(f"{out} holds a model of another {name} config; delete it or train into another folder")
    state, record = out / "train_state.json", out / "wall_s.json"
    seconds = json.loads(record.read_text())["wall_s"] if record.is_file() and state.is_file() else 0.0
    if not (state.is_file() and json.loads(state.read_text())["step"] >= cfg.train.steps):
        tic = time.perf_counter()
        train(cfg, out, progress=progress)
        seconds += time.perf_counter() - tic
        atomic_write_text(record, json.dumps({"wall_s": seconds}) + "\n")
    return round(seconds, 1)
