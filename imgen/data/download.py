"""Downloads of the file datasets (`imgen data download NAME --to DIR`, or a loader's download=True): the official
archives, checked against the SHA-256 sums below and unpacked where imgen.data.files reads them.

A mirror replaces the official hosts: `--mirror URL` or the IMGEN_DATA_MIRROR environment variable; it serves
URL/<dataset>/<file> (e.g. http://host/mnist/train-images-idx3-ubyte.gz). Every file is written through a
.part file and renamed only once its checksum matches, so a failed or cut download leaves nothing half-written.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from imgen.errors import ImgenError

MIRROR_ENV = "IMGEN_DATA_MIRROR"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"
# dataset -> (official base URL, {file: SHA-256}); the sums are those TensorFlow Datasets and torchvision publish
ARCHIVES = {
    "mnist": (MNIST_URL, {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"}),
    "fashion-mnist": (FASHION_MNIST_URL, {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"}),
    "cifar10": (CIFAR10_URL, {
        "cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"}),
}
CIFAR10_FOLDER = "cifar-10-batches-py"  # what the archive unpacks to; imgen.data.files.cifar10 reads it


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: Path, manual: str, sha256: str | None = None, progress: bool = False) -> None:
    """Fetch `url` to `dest` via dest.part, checking its SHA-256 when given; nothing is left at `dest` unless the
    whole file arrived and matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if total is not None and f.tell() != total:
                raise OSError(f"connection closed after {f.tell()} of {total} bytes")
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise ImgenError(f"could not download {url} ({getattr(e, 'reason', e)}); without a network, {manual}") from None
    if sha256 is not None and digest.hexdigest() != sha256:
        tmp.unlink()
        raise ImgenError(f"{url} has SHA-256 {digest.hexdigest()}, not the expected {sha256}: a corrupt or wrong file "
                         f"(nothing was kept); retry, or use another mirror (--mirror / ${MIRROR_ENV})")
    tmp.replace(dest)


def _base_url(name: str, mirror: str | None) -> str:
    mirror = mirror or os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{name}/" if mirror else ARCHIVES[name][0]


def download_dataset(name: str, to: str | Path, mirror: str | None = None, files: list[str] | None = None,
                     progress: bool = True) -> Path:
    """Download dataset `name` (mnist, fashion-mnist, cifar10) into `to`, where its loader reads it (path=`to`);
    files already there with the right checksum are kept. `files`: only these of its archives. -> `to`."""
    if name not in ARCHIVES:
        raise ImgenError(f"no download for dataset {name!r}; choose one of {', '.join(ARCHIVES)}")
    root, base = Path(to).expanduser(), _base_url(name, mirror)
    manual = (f"download {', '.join(ARCHIVES[name][1])} from {ARCHIVES[name][0]} and put them in {root}"
              + (f" (the loader reads the unpacked {CIFAR10_FOLDER} folder)" if name == "cifar10" else ""))
    for file, sha in ARCHIVES[name][1].items():
        if files is not None and file not in files:
            continue
        dest = root / file
        if name == "cifar10" and (root / CIFAR10_FOLDER).is_dir():
            continue  # unpacked before
        if not (dest.is_file() and sha256_of(dest) == sha):
            fetch(base + file, dest, manual, sha, progress)
        if name == "cifar10":
            _unpack(dest, root, manual)
    return root


def _unpack(archive: Path, root: Path, manual: str) -> None:
    """Unpack the CIFAR-10 archive into a temp folder beside `root/cifar-10-batches-py`, then rename it there."""
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # "data" filter: no absolute paths, links or devices
        if not (tmp / CIFAR10_FOLDER).is_dir():
            raise ImgenError(f"{archive} holds no {CIFAR10_FOLDER} folder; delete it and {manual}")
        (tmp / CIFAR10_FOLDER).replace(root / CIFAR10_FOLDER)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ImgenError(f"{archive} is corrupt ({e}); delete it and {manual}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
