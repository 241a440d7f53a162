"""Datasets read from files: MNIST / Fashion-MNIST (IDX), CIFAR-10 (python batches), image folders.

Nothing is downloaded unless `download=True` is passed (or `imgen data download NAME --to DIR` is run); then
imgen.data.download fetches the official archives and checks their SHA-256, and without a network the error
says which files to put where.
"""
from __future__ import annotations

import gzip
import json
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgen.checkpoint import atomic_write_text
from imgen.data.base import ArrayDataset, check_choice, check_image_size
from imgen.data.download import CIFAR10_FOLDER, CIFAR10_URL, FASHION_MNIST_URL, MNIST_URL, download_dataset
from imgen.errors import ImgenError
from imgen.images import save_pngs


def _resolve_root(path, name: str) -> Path:
    return Path(path).expanduser() if path is not None else Path("data") / name


# ---- MNIST / Fashion-MNIST: IDX files ----
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path, fix: str) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut .gz raises EOFError
        raise ImgenError(f"{path} is truncated or corrupt ({e}); {fix}") from None


def read_idx(path: str | Path, fix: str = "replace the file with a fresh copy") -> np.ndarray:
    """Parse one IDX file (raw or .gz): 2 zero bytes, a dtype code, ndim, big-endian uint32 dims, then data."""
    path = Path(path)
    raw = _read_bytes(path, fix)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ImgenError(f"{path} is not an IDX file (bad magic header {raw[:4].hex()}); {fix}")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ImgenError(f"{path} is truncated (header cut short); {fix}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ImgenError(f"{path} is truncated or corrupt: dims {dims} need {expected} data bytes, "
                         f"found {len(raw) - header}; {fix}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "raw"):
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _idx_dataset(name: str, url: str, class_names, path, split: str, image_size, download: bool) -> ArrayDataset:
    check_choice(split, ("train", "test"), "split", name)
    image_size = check_image_size(image_size, name)
    root = _resolve_root(path, name)
    stems = IDX_FILES[split]
    manual = (f"download {', '.join(s + '.gz' for s in stems)} from {url} and put them in {root} "
              f"(then pass path={str(root)!r})")
    files = [_find_idx(root, s) for s in stems]
    if None in files and download:
        download_dataset(name, root, files=[s + ".gz" for s, found in zip(stems, files) if found is None])
        files = [_find_idx(root, s) for s in stems]
    if None in files:
        missing = stems[files.index(None)]
        raise ImgenError(f"{name}: {missing} (or {missing}.gz) not found in {root}; {manual}, or pass download=True")
    fix = f"delete it and {manual}"
    images, labels = read_idx(files[0], fix), read_idx(files[1], fix)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ImgenError(f"{files[0]} holds {images.dtype} data of shape {images.shape}, not (N, H, W) uint8 images; "
                         f"check that the images and labels files are not swapped")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ImgenError(f"{files[1]} holds labels of shape {labels.shape} for {len(images)} images in {files[0]}; "
                         f"use the labels file that belongs to these images ({fix})")
    if labels.size and labels.max() >= len(class_names):
        raise ImgenError(f"{files[1]} has label {labels.max()} but {name} has {len(class_names)} classes; {fix}")
    return ArrayDataset(name, images[..., None], labels, class_names=class_names, image_size=image_size)


def mnist(path: str | None = None, split: str = "train", image_size: int | None = None,
          download: bool = False) -> ArrayDataset:
    """MNIST from its four IDX files (raw or .gz, standard names) in `path` or `path/raw`."""
    return _idx_dataset("mnist", MNIST_URL, [str(d) for d in range(10)], path, split, image_size, download)


def fashion_mnist(path: str | None = None, split: str = "train", image_size: int | None = None,
                  download: bool = False) -> ArrayDataset:
    """Fashion-MNIST from its four IDX files (same names and format as MNIST) in `path` or `path/raw`."""
    return _idx_dataset("fashion-mnist", FASHION_MNIST_URL, FASHION_CLASSES, path, split, image_size, download)


# ---- CIFAR-10: python batches ----
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """The CIFAR batches are pickles, and unpickling runs any callable the file names, so a tampered file
    could execute code. This unpickler resolves only what a dict of lists, bytes and numpy arrays needs
    (ndarray reconstruction, dtype, and latin-1 bytes from Python 3 protocol-2 pickles); any other global
    is refused."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"): np.ndarray(0).__reduce__()[0],
                ("numpy._core.multiarray", "_reconstruct"): np.ndarray(0).__reduce__()[0],
                ("numpy.core.numeric", "_frombuffer"): np.ndarray(0).__reduce_ex__(5)[0],
                ("numpy._core.numeric", "_frombuffer"): np.ndarray(0).__reduce_ex__(5)[0],
                ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                ("_codecs", "encode"): lambda text, encoding="utf-8": str(text).encode(encoding)}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return self._ALLOWED[(module, name)]


def read_cifar_batch(path: str | Path, fix: str = "replace it with a fresh copy") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (N, 32, 32, 3) uint8 images, (N,) int64 labels."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as e:
        raise ImgenError(f"{path} is not a readable CIFAR-10 batch (truncated, corrupt or unsafe pickle: {e}); "
                         f"{fix}") from None
    if not isinstance(batch, dict):
        raise ImgenError(f"{path} does not hold a CIFAR-10 batch dict; {fix}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ImgenError(f"{path}: 'data' is not an (N, 3072) uint8 array; {fix}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or (labels.size and not 0 <= labels.min() <= labels.max() < 10):
        raise ImgenError(f"{path}: 'labels' must be {len(data)} ints in 0..9; {fix}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # channel-first rows -> (N, H, W, C)


def _cifar_folder(root: Path) -> Path:
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / "test_batch").is_file() or (folder / "data_batch_1").is_file():
            return folder
    return root


def cifar10(path: str | None = None, split: str = "train", image_size: int | None = None,
            download: bool = False) -> ArrayDataset:
    """CIFAR-10 from the python batches (data_batch_1..5, test_batch) in `path` or `path/cifar-10-batches-py`."""
    check_choice(split, ("train", "test"), "split", "cifar10")
    image_size = check_image_size(image_size, "cifar10")
    root = _resolve_root(path, "cifar10")
    manual = (f"download {CIFAR10_URL}cifar-10-python.tar.gz, extract it and pass path= pointing at its "
              f"{CIFAR10_FOLDER} folder (e.g. put it in {root})")
    folder = _cifar_folder(root)
    if download and not all((folder / b).is_file() for b in CIFAR10_BATCHES[split]):
        download_dataset("cifar10", root)
        folder = _cifar_folder(root)
    parts = []
    for batch in CIFAR10_BATCHES[split]:
        if not (folder / batch).is_file():
            raise ImgenError(f"cifar10: {batch} not found in {folder}; {manual}, or pass download=True")
        parts.append(read_cifar_batch(folder / batch, f"delete it and {manual}"))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ArrayDataset("cifar10", images, labels, class_names=CIFAR10_CLASSES, image_size=image_size)


# ---- image folders ----
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_GRAY_MODES = ("1", "L", "LA")


def _read_captions(file: Path) -> dict[str, str]:
    captions = {}
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key, caption = entry["file"], entry["caption"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ImgenError(f"{file} line {n} is not a JSON object with 'file' and 'caption': {line[:80]!r}; "
                             'write one {"file": "relative/path.png", "caption": "..."} per line') from None
        if not isinstance(key, str) or not isinstance(caption, str):
            raise ImgenError(f"{file} line {n}: 'file' and 'caption' must be strings; fix that line")
        captions[Path(key).as_posix()] = caption
    return captions


def _open_image(file: Path) -> Image.Image:
    try:
        img = Image.open(file)
        img.load()  # decode now, so a truncated file fails here, named
        return img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        kind = "not a readable image" if isinstance(e, UnidentifiedImageError) else "truncated or corrupt"
        raise ImgenError(f"{file} is {kind} ({e}); re-export it or remove it from the folder") from None


def image_folder(path: str | None = None, image_size: int | None = None, download: bool = False,
                 class_names: list | None = None) -> ArrayDataset:
    """All .png/.jpg/.jpeg images under `path` (recursive, sorted, hidden files and non-images skipped).

    Labels come from the first-level subfolder names when every image is in one: their index in the sorted names,
    or in `class_names` when given (a model's classes, e.g. to fine-tune it on a few). `captions.jsonl` at the top
    ({"file": relative path, "caption": ...} per line) gives captions. All images become RGB (or L if every
    image is greyscale), with a warning when any is converted. Sizes must match unless `image_size` is given,
    then every image is resized to image_size x image_size. (`download` exists for a uniform CLI; it must be False.)
    """
    image_size = check_image_size(image_size, "folder")
    if download:
        raise ImgenError("folder: an image folder cannot be downloaded; put your images in a folder and pass path=")
    if path is None:
        raise ImgenError("folder: no path given; pass path='my/images' (a folder of .png/.jpg files)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ImgenError(f"folder: {root} is not a directory; pass path= pointing at a folder of .png/.jpg images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ImgenError(f"folder: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}; "
                         f"put images there or point path= at the folder that holds them")
    rel = [p.relative_to(root).as_posix() for p in files]

    images = [_open_image(p) for p in files]
    modes = sorted({im.mode for im in images})
    target = "L" if all(m in _GRAY_MODES for m in modes) else "RGB"
    converted = [m for m in modes if m != target]
    if converted:
        warnings.warn(f"folder {root}: images have modes {modes}; converted all to {target}", stacklevel=3)
    sizes = {}
    for r, im in zip(rel, images):
        sizes.setdefault(im.size, r)
    if len(sizes) > 1 and image_size is None:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise ImgenError(f"folder {root}: images have different sizes ({s1[0]}x{s1[1]} e.g. {f1}, "
                         f"{s2[0]}x{s2[1]} e.g. {f2}); pass image_size=N to resize all to N x N, or resize the files")
    arrays = []
    for im in images:
        if im.mode == "P":
            im = im.convert("RGBA")  # palette transparency needs RGBA before RGB
        im = im.convert(target)
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(im, np.uint8))
    stacked = np.stack(arrays)
    if stacked.ndim == 3:
        stacked = stacked[..., None]

    labels = None
    in_subfolder = [len(Path(r).parts) > 1 for r in rel]
    if all(in_subfolder):
        found = sorted({Path(r).parts[0] for r in rel})
        unknown = [c for c in found if class_names is not None and c not in class_names]
        if unknown:
            raise ImgenError(f"folder {root}: subfolder {unknown[0]!r} is not one of the classes "
                             f"{', '.join(map(str, class_names))}; name each subfolder after one of them")
        class_names = found if class_names is None else list(class_names)
        index = {c: i for i, c in enumerate(class_names)}
        labels = np.array([index[Path(r).parts[0]] for r in rel], np.int64)
    else:
        class_names = None
        if any(in_subfolder):
            warnings.warn(f"folder {root}: some images are at the top level and some in subfolders, so no class "
                          f"labels; move every image into a class subfolder to get labels", stacklevel=3)

    captions = None
    if (root / "captions.jsonl").is_file():
        table = _read_captions(root / "captions.jsonl")
        missing = [r for r in rel if r not in table]
        if missing:
            raise ImgenError(f"{root / 'captions.jsonl'} has no caption for {len(missing)} image(s), e.g. "
                             f"{missing[0]}; add a line {{\"file\": \"{missing[0]}\", \"caption\": \"...\"}}")
        unknown = sorted(set(table) - set(rel))
        if unknown:
            warnings.warn(f"{root / 'captions.jsonl'} names {len(unknown)} file(s) that are not images here, "
                          f"e.g. {unknown[0]}; they are ignored", stacklevel=3)
        captions = [table[r] for r in rel]
    ds = ArrayDataset("folder", stacked, labels, captions, class_names)
    ds.files = rel
    return ds


def save_image_folder(folder: str | Path, images, captions: list[str]) -> Path:
    """Write images (N, C, H, W) in [-1, 1] as NNNNN.png and their captions as captions.jsonl: the captioned
    folder `image_folder` reads (e.g. the few pictures of a concept for `imgen finetune lora`)."""
    if len(images) != len(captions):
        raise ImgenError(f"got {len(captions)} captions for {len(images)} images; give one caption per image")
    folder = Path(folder)
    paths = save_pngs(images, folder)
    lines = [json.dumps({"file": p.name, "caption": c}) for p, c in zip(paths, captions)]
    atomic_write_text(folder / "captions.jsonl", "".join(line + "\n" for line in lines))
    return folder
