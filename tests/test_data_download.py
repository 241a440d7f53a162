"""`imgen data download` (issue 15) against a local HTTP mirror on 127.0.0.1 serving fixture archives built here:
checksums are checked, files land where the loaders read them, a bad or missing server leaves nothing behind,
and the mnist-flow / cifar10-ae / cifar10-ldm presets train a few steps on the result."""
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time

import numpy as np
import pytest

from imgen.cli import main
from imgen.data import download, load_dataset
from test_data import _write_cifar, _write_mnist


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A mirror folder (mnist, fashion-mnist, cifar10 fixtures) served on 127.0.0.1; the expected SHA-256 sums are
    patched to the fixtures'. Yields (base URL, the fixtures' arrays)."""
    root = tmp_path / "mirror"
    arrays = {"mnist": _write_mnist(root / "mnist", n=16), "fashion-mnist": _write_mnist(root / "fashion-mnist", n=16)}
    batches = _write_cifar(tmp_path / "c" / "cifar-10-batches-py", n=16)
    (root / "cifar10").mkdir()
    with tarfile.open(root / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "c" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    arrays["cifar10"] = batches
    for name, (url, sums) in download.ARCHIVES.items():
        monkeypatch.setitem(download.ARCHIVES, name, (url, {f: _sha(root / name / f) for f in sums}))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", arrays
    server.shutdown()
    server.server_close()


def _leftovers(folder):
    return [p.name for p in folder.rglob("*") if p.name.endswith(".part") or p.name.startswith(".unpack")]


def test_download_checks_and_unpacks_where_the_loaders_read(mirror, tmp_path, monkeypatch, capsys):
    url, arrays = mirror
    assert main(["data", "download", "mnist", "--to", str(tmp_path / "mnist"), "--mirror", url]) == 0
    assert "--data-path" in capsys.readouterr().out
    for split in ("train", "test"):
        ds = load_dataset("mnist", path=tmp_path / "mnist", split=split)
        images, labels = arrays["mnist"][split]
        assert np.array_equal(ds.images[..., 0], images) and np.array_equal(ds.labels, labels)
    monkeypatch.setenv(download.MIRROR_ENV, url)  # the environment variable names the mirror too
    assert main(["data", "download", "cifar10", "--to", str(tmp_path / "cifar")]) == 0
    ds = load_dataset("cifar10", path=tmp_path / "cifar", split="test")
    data, labels = arrays["cifar10"]["test_batch"]
    assert np.array_equal(ds.images, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert np.array_equal(ds.labels, labels)
    assert not _leftovers(tmp_path)
    # a rerun keeps the checked files: nothing is fetched again (a closed mirror does not matter)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "mnist").iterdir()}
    assert main(["data", "download", "mnist", "--to", str(tmp_path / "mnist"), "--mirror", "http://127.0.0.1:9"]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "mnist").iterdir()}


def test_a_loader_with_download_true_uses_the_same_downloader(mirror, tmp_path, monkeypatch):
    url, arrays = mirror
    monkeypatch.setenv(download.MIRROR_ENV, url)
    ds = load_dataset("fashion-mnist", path=tmp_path / "f", split="test", download=True)
    assert np.array_equal(ds.labels, arrays["fashion-mnist"]["test"][1])
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(mirror, tmp_path, monkeypatch, capsys):
    url, _ = mirror
    monkeypatch.setitem(download.ARCHIVES, "mnist", (download.MNIST_URL, {"train-images-idx3-ubyte.gz": "0" * 64}))
    assert main(["data", "download", "mnist", "--to", str(tmp_path / "m"), "--mirror", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, one line
    assert err.startswith("imgen: error:") and "SHA-256" in err and "0" * 64 in err
    assert list((tmp_path / "m").iterdir()) == []


def test_offline_fails_at_once_with_one_line(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tic = time.perf_counter()
    assert main(["data", "download", "cifar10", "--to", str(tmp_path / "c"), "--mirror", f"http://127.0.0.1:{port}"]) == 2
    assert time.perf_counter() - tic < 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("imgen: error: could not download")  # no bar: no bytes
    assert "cifar-10-python.tar.gz" in err and "put them in" in err
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_a_cut_connection_leaves_nothing_half_written(tmp_path, capsys):
    class Cut(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)  # then the connection closes

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cut)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = main(["data", "download", "mnist", "--to", str(tmp_path / "m"),
                     "--mirror", f"http://127.0.0.1:{server.server_address[1]}"])
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2 and "could not download" in capsys.readouterr().err
    assert list((tmp_path / "m").iterdir()) == []


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["data", "download", "imagenet", "--to", str(tmp_path)])
    with pytest.raises(download.ImgenError, match="choose one of mnist, fashion-mnist, cifar10"):
        download.download_dataset("imagenet", tmp_path)


@pytest.mark.slow
def test_mnist_and_cifar10_presets_train_a_few_steps_on_downloaded_data(mirror, tmp_path, one_thread):
    url, _ = mirror
    for name in ("mnist", "cifar10"):
        assert main(["data", "download", name, "--to", str(tmp_path / name), "--mirror", url]) == 0
    small = ["--steps", "2", "--quiet", "--set", "data.batch_size=8"]
    assert main(["train", "mnist-flow", "--data-path", str(tmp_path / "mnist"), "--out", str(tmp_path / "mf"), *small]) == 0
    assert main(["train", "cifar10-ae", "--data-path", str(tmp_path / "cifar10"), "--out", str(tmp_path / "ae"), *small]) == 0
    assert main(["train", "cifar10-ldm", "--data-path", str(tmp_path / "cifar10"), "--out", str(tmp_path / "ldm"), *small,
                 "--set", f"method.options.autoencoder={tmp_path / 'ae'}"]) == 0
    from imgen.model import load

    for out, shape in (("mf", (1, 28, 28)), ("ldm", (3, 32, 32))):
        x = load(tmp_path / out).sample(2, steps=2, seed=0)
        assert x.shape == (2, *shape) and bool(x.isfinite().all())
