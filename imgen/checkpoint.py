"""Atomic safetensors/JSON writes: write to a temp file in the same folder, fsync, rename.
A kill at any moment leaves either the old file or the new one, never a torn one."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from imgen.errors import ImgenError


def _default_mode(directory: bool = False) -> int:
    """The mode open() / mkdir() would give a new file / directory under the process umask (mkstemp and mkdtemp
    create theirs private, 0600 / 0700, which would leave a model unreadable by other users)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _default_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode())


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    _atomic_write_bytes(path, save(tensors, metadata=meta))


def load_tensors(path: str | Path, with_metadata: bool = False):
    """Tensors of a safetensors file (and its JSON-decoded metadata if asked)."""
    path = Path(path)
    if not path.is_file():
        raise ImgenError(f"weights file {str(path)!r} not found; is this a trained model directory?")
    try:
        tensors = load_file(path)
        if not with_metadata:
            return tensors
        with safe_open(path, "pt") as f:
            return tensors, {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ImgenError(f"weights file {str(path)!r} is corrupt ({e}); retrain or restore it") from None


def copy_model_files(src: str | Path, dst: str | Path, names=("config.json", "ema.safetensors", "model.safetensors")):
    """Copy the files `names` of model directory src (those present) into a new directory dst, atomically: they
    are copied to a temp directory beside dst, renamed at the end, so a kill leaves no half copy (a frozen
    sub-model kept inside another model's directory: a latent model's autoencoder, a token prior's tokenizer)."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in dst.parent.glob(f".{dst.name}-copy-*"):  # left by a kill mid-copy
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}-copy-"))
    try:
        tmp.chmod(_default_mode(directory=True))
        for name in names:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ImgenError(f"{str(path)!r} not found") from None
    except json.JSONDecodeError as e:
        raise ImgenError(f"{str(path)!r} is not valid JSON ({e}); restore or delete it") from None
