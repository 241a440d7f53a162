"""The FID InceptionV3: the TensorFlow 2015-12-05 graph as ported by pytorch-fid / torch-fidelity, with its
exact preprocessing, loaded from a local weights file. It never downloads unless asked (`download=True`).

Differences from torchvision's InceptionV3 that the TF graph has (and FID numbers depend on):
  * input: uint8 values resized to 299x299 with TensorFlow 1.x bilinear resizing (align_corners=False,
    no antialias), then (x - 128) / 128;
  * average pools inside blocks ignore padding (count_include_pad=False);
  * the last block (Mixed_7c) max-pools its pool branch;
  * 1008 logits (1000 classes + 8 unused); IS uses the logits without the fc bias ("logits_unbiased").
Module names equal the pt_inception-2015-12-05 state dict's keys, so the file loads as is.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from imgen.errors import ImgenError

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILENAME}"
WEIGHTS_ENV = "IMGEN_INCEPTION_WEIGHTS"
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):  # TF's average pool does not count the zero padding
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg_pool(x)),
        ], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b pools with a padding-free average; Mixed_7c (pool="max") with a max, as in the TF graph."""

    def __init__(self, cin, pool: str = "avg"):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.pool == "max" else _avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], 1)


def resize_bilinear_tf1(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """TensorFlow 1.x resize_bilinear(align_corners=False): source = dest * in/out, no half-pixel shift,
    no antialias; the same gather-and-lerp arithmetic as torch-fidelity, so the result is bit-identical."""
    h, w = x.shape[-2:]

    def grid(n_in):
        src = torch.arange(size, dtype=x.dtype) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = src.long()
        return lo, (lo + 1).clamp_max(n_in - 1), src - lo.float()

    y_lo, y_hi, dy = grid(h)
    x_lo, x_hi, dx = grid(w)
    top, bottom = x[:, :, y_lo, :], x[:, :, y_hi, :]
    top = top[..., x_lo] + (top[..., x_hi] - top[..., x_lo]) * dx
    bottom = bottom[..., x_lo] + (bottom[..., x_hi] - bottom[..., x_lo]) * dx
    return top + (bottom - top) * dy.view(-1, 1)


class FIDInceptionV3(nn.Module):
    """forward(x) with x float (N, 3, H, W) holding uint8 values 0..255 -> (pool features (N, 2048),
    logits without bias (N, 1008))."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = resize_bilinear_tf1(x.float(), INPUT_SIZE)
        x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool = x.mean((2, 3))  # (N, 2048)
        return pool, pool @ self.fc.weight.T  # IS uses the logits without bias (torch-fidelity "logits_unbiased")


# pytorch-fid's InceptionV3 wrapper saves its layers as blocks.<i>.<j>; map them back to the graph names.
_PYTORCH_FID_BLOCKS = [
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", None],
    ["Conv2d_3b_1x1", "Conv2d_4a_3x3", None],
    ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"],
    ["Mixed_7a", "Mixed_7b", "Mixed_7c", None],
]


def convert_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a foreign InceptionV3 state dict (pt_inception-2015-12-05 / torch-fidelity / torchvision-style names,
    a DataParallel "module." prefix, or pytorch-fid's blocks.i.j wrapper) onto FIDInceptionV3's names."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        if key.startswith("AuxLogits.") or key.endswith("num_batches_tracked"):
            continue
        if key.startswith("blocks."):
            _, i, j, rest = key.split(".", 3)
            key = f"{_PYTORCH_FID_BLOCKS[int(i)][int(j)]}.{rest}"
        out[key] = value
    return out


def default_weights_path() -> Path:
    cache = Path(os.environ.get("IMGEN_CACHE", Path.home() / ".cache" / "imgen"))
    return cache / "weights" / WEIGHTS_FILENAME


def find_weights(path: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The weights file: `path`, else $IMGEN_INCEPTION_WEIGHTS, else the cache location. Downloads only if asked."""
    if path is None:
        path = os.environ.get(WEIGHTS_ENV) or default_weights_path()
        source = f"${WEIGHTS_ENV}" if os.environ.get(WEIGHTS_ENV) else "the default location"
    else:
        source = "the path given"
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if download:
        return download_weights(path)
    raise ImgenError(
        f"InceptionV3 FID weights not found at {path} ({source}). imgen never downloads on its own: put "
        f"{WEIGHTS_FILENAME} (from {WEIGHTS_URL}) there, or set {WEIGHTS_ENV}=/path/to/{WEIGHTS_FILENAME}, "
        "or run with --download to fetch it once; or use offline features (--features digits-eval|shapes-eval)")


def download_weights(path: Path) -> Path:
    """Fetch the pytorch-fid weights file to `path` (only called when the user asked with --download)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    try:
        torch.hub.download_url_to_file(WEIGHTS_URL, str(tmp), hash_prefix="6726825d", progress=True)
    except Exception as e:  # network errors come in many types; report one clear message
        raise ImgenError(f"could not download {WEIGHTS_URL} ({e}); download it by hand and put it at {path}") from e
    tmp.replace(path)
    return path


def load_inception(path: str | os.PathLike | None = None, download: bool = False) -> FIDInceptionV3:
    """FIDInceptionV3 in eval mode with weights from a .pth (read with weights_only=True) or .safetensors file."""
    path = find_weights(path, download)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ImgenError(f"could not read InceptionV3 weights {path}: {e}. Re-download {WEIGHTS_FILENAME}") from e
    net = FIDInceptionV3()
    missing, unexpected = net.load_state_dict(convert_state_dict(sd), strict=False)
    if missing or unexpected:
        raise ImgenError(f"{path} is not an FID InceptionV3 state dict (missing {missing[:3]}..., unexpected "
                         f"{unexpected[:3]}...); use {WEIGHTS_FILENAME} from {WEIGHTS_URL}")
    return net.eval().requires_grad_(False)


def file_fingerprint(path: str | os.PathLike) -> str:
    """Short sha256 of a file, for cache keys."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
