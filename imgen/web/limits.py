"""What one request to `imgen serve` may ask for, checked before any work: the count of images, sampling steps,
prompt length, and the size, dimensions and mode of an uploaded image. Plain Python (no gradio): every check
raises ImgenError naming the limit and the fix; the app shows it in the page as a gr.Error."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imgen.errors import ImgenError
from imgen.images import adapt_images, from_uint8


@dataclass(frozen=True)
class Limits:
    max_n: int = 8                    # images per request
    max_steps: int = 100              # sampler steps per request
    max_prompt_chars: int = 200       # prompt and negative prompt, each
    max_upload_bytes: int = 4 << 20   # one uploaded image file
    max_upload_side: int = 2048       # width and height of an uploaded image, in pixels
    concurrency: int = 1              # requests sampled at once; the rest wait in the queue
    queue_size: int = 64              # requests waiting at most; more are refused with a message

    @property
    def max_file_size(self) -> str:  # gradio's launch(max_file_size=...) form
        return f"{self.max_upload_bytes}b"


def check_count(value, name: str, maximum: int) -> int:
    """A whole number in 1..maximum (gradio Number fields send floats such as 4.0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ImgenError(f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer() or not 1 <= number <= maximum:
        raise ImgenError(f"{name} must be a whole number from 1 to {maximum}, got {value!r}; lower it")
    return int(number)


def check_seed(value) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ImgenError(f"seed must be a whole number, got {value!r}") from None
    if not number.is_integer() or not 0 <= number < 2 ** 63:
        raise ImgenError(f"seed must be a whole number from 0 to 2**63 - 1, got {value!r}")
    return int(number)


def check_prompt(text, name: str, limits: Limits, required: bool = True) -> str | None:
    """A prompt of at most max_prompt_chars; None when optional and blank."""
    text = "" if text is None else str(text)
    if not text.strip():
        if required:
            raise ImgenError(f"the {name} is empty; describe an image, e.g. \"a red circle in the top left\"")
        return None
    if len(text) > limits.max_prompt_chars:
        raise ImgenError(f"the {name} has {len(text)} characters, more than this server's limit of "
                         f"{limits.max_prompt_chars}; shorten it")
    return text


def read_upload(path, limits: Limits, channels: int, size: int, name: str = "image") -> torch.Tensor:
    """An uploaded image file -> (1, channels, size, size) in [-1, 1]. The file size and the pixel dimensions are
    checked before decoding (the header alone), so a huge or decompression-bomb upload is refused cheaply; any
    mode (RGBA, palette, CMYK, 16-bit grey ...) becomes RGB or L; a corrupt or non-image file is refused."""
    if path is None:
        raise ImgenError(f"no {name} uploaded; drop a PNG or JPEG on the {name} field")
    path = Path(path)
    nbytes = path.stat().st_size
    if nbytes > limits.max_upload_bytes:
        raise ImgenError(f"the {name} file is {nbytes / 2**20:.1f} MiB, more than this server's limit of "
                         f"{limits.max_upload_bytes / 2**20:.1f} MiB; upload a smaller image")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if max(w, h) > limits.max_upload_side:
                raise ImgenError(f"the {name} is {w}x{h} pixels, more than this server's limit of "
                                 f"{limits.max_upload_side} per side; downscale it")
            img.load()  # decode now: a truncated file fails here
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits before converting
                img = Image.fromarray((np.asarray(img, dtype=np.float64) / max(1, np.asarray(img).max()) * 255)
                                      .astype(np.uint8))
            img = img.convert("L" if channels == 1 else "RGB")
    except ImgenError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        kind = "not an image" if isinstance(e, UnidentifiedImageError) else "a corrupt or truncated image"
        raise ImgenError(f"the {name} file is {kind} ({type(e).__name__}); upload a PNG or JPEG") from None
    return adapt_images(from_uint8(np.array(img)[None]), channels, size)
