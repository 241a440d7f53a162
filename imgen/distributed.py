"""Data-parallel training over several processes (torchrun), used by imgen.train.Trainer.

torchrun (or `imgen train --nproc N`, which launches it) starts N copies of the training command with RANK and
WORLD_SIZE set; each copy builds the same net from the same seed, takes its slice of the global batch, and
after each update's backward the gradients are averaged over the processes (gloo on CPU, nccl for CUDA tensors).

Why not torch.nn.parallel.DistributedDataParallel's wrapper: it averages gradients in hooks that it arms only in
its own forward(), but imgen methods call sub-networks directly (a GAN's net.generator and net.discriminator, an
autoencoder's net.encode), and a GAN steps two optimizers on one net, each update reaching only part of the
parameters. So the Trainer averages each update's gradients itself: one all_reduce of that optimizer's flattened
gradients (plus the loss, for the log) per update — DDP's all-reduce without its hooks. Parameters that an update
does not reach keep grad None on every rank (the same code runs on every rank), so no find_unused_parameters.

Per-sample randomness (noise, timesteps, condition dropout) must not depend on the world size, or N processes
would not train the same model as one. Every rank holds the same generator (seeded by train.seed alone), and
inside a loss every draw from it whose shape has the local batch size n in some dimension is drawn at the global
size (n * world_size, exactly the draw one process makes for the whole batch) and the rank's slice is returned
(global_draws below). The generators stay in step across ranks and every sample gets the noise it gets in a
single-process run, at the price of drawing world_size times the random numbers (cheap next to the net).
The global torch RNG (dropout) is per rank: seeded by (seed, rank), and its state is checkpointed per rank.
What no slicing can make equal: a loss that couples the samples of a batch sees the rank's share only (BatchNorm
statistics; CLIP's contrastive negatives, as OpenCLIP's local loss).
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.distributed as dist

from imgen.errors import ImgenError
from imgen.torchrun import die_with_agent


def world_size_from_env() -> int:
    """WORLD_SIZE as set by torchrun (1 outside it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ImgenError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun "
                         "or `imgen train --nproc N`") from None


class Group:
    """This process's place in a torchrun job: rank, world_size, and the collectives the Trainer needs."""

    def __init__(self):
        if not dist.is_initialized():
            die_with_agent()  # also done first thing in `python -m imgen`; here for scripts run by torchrun
            # gloo for CPU tensors, nccl for CUDA tensors (one backend per device type)
            dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0

    def split_batch(self, idx: np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of the global batch's indices."""
        n = len(idx) // self.world_size
        return idx[self.rank * n:(self.rank + 1) * n]

    def rank_seed(self, seed: int, step: int) -> int:
        """The global torch RNG seed of this rank (dropout), from (seed, rank, step)."""
        return int(np.random.SeedSequence([seed, self.rank, step]).generate_state(1)[0])

    def average_grads(self, params: list[torch.Tensor], loss: torch.Tensor) -> float:
        """Average the gradients of `params` (those that have one) and the loss over the ranks, in one
        all_reduce of a flat buffer; -> the mean loss."""
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0] if grads else loss)])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return flat[-1].item()

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """`t` from every rank (same shape on all), in rank order."""
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t)
        return out

    def barrier(self):
        dist.barrier()

    def close(self):
        if dist.is_initialized():
            dist.destroy_process_group()


def _batch_dim(size, n: int) -> int | None:
    return next((d for d, s in enumerate(size) if s == n), None)


def _size_of(args: tuple, kw: dict, first: int):
    """(size tuple, where it was) of a torch.rand/randn (first=0) or torch.randint (size is the last positional)."""
    if "size" in kw:
        return tuple(kw["size"]), "kw"
    rest = args[first:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)):
        return tuple(rest[0]), "tuple"
    return tuple(rest), "ints"


@contextlib.contextmanager
def global_draws(gen: torch.Generator, n: int, rank: int, world_size: int):
    """Within the block, torch.rand/randn/randint calls drawing from `gen` with a dimension of size `n` (the
    local batch; the first such dimension) draw n * world_size there and return this rank's slice: the same
    numbers a single process drawing for the whole batch gives these samples (module docstring)."""
    originals = {name: getattr(torch, name) for name in ("rand", "randn", "randint")}

    def wrap(name):
        fn = originals[name]

        def draw(*args, generator=None, **kw):
            if generator is not gen:
                return fn(*args, generator=generator, **kw)
            if name == "randint":  # randint(high, size) or randint(low, high, size)
                size, where = (tuple(kw["size"]), "kw") if "size" in kw else (tuple(args[-1]), "last")
            else:
                size, where = _size_of(args, kw, 0)
            d = _batch_dim(size, n)
            if d is None:
                return fn(*args, generator=generator, **kw)
            full = size[:d] + (size[d] * world_size,) + size[d + 1:]
            if where == "kw":
                kw["size"] = full
            elif where == "last":
                args = args[:-1] + (full,)
            else:
                args = (full,)
            return fn(*args, generator=generator, **kw).narrow(d, rank * n, n)
        return draw

    for name in originals:
        setattr(torch, name, wrap(name))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)
