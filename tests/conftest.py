import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig

# The README runs each tier as `pytest -n 2 --dist loadfile` (pytest-xdist): two workers, one per core, each on one
# thread (two torch processes of two OpenMP threads each stall on 2 cores; the small nets here gain little from a
# second thread). Processes the tests start inherit the setting. A test file runs on one worker, so its module
# fixtures are built once; the session fixtures that tests of several files share are built once per run (once()).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def seeded():
    """Each test starts from the same global RNG state, whichever tests ran before it on its worker."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def tiny_config(steps: int = 6, **train) -> Config:
    """A class-conditional digits model small enough to train a few steps in about a second."""
    return Config(
        description="tiny test model",
        data=DataConfig("digits", {}, batch_size=16),
        net=NetConfig("unet", {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                               "attn_resolutions": [4], "num_heads": 2}),
        method=MethodConfig("flow_matching", {"cond_drop": 0.1}),
        train=TrainConfig(steps=steps, lr=1e-3, warmup=2, ckpt_every=2, log_every=1, **train),
        sample=SampleConfig("euler", steps=4),
    )


@pytest.fixture
def one_thread():
    """Tiny nets: one intra-op thread is as fast and immune to stalls on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config_file(tmp_path):
    def make(steps: int = 6, **train):
        path = tmp_path / "tiny.json"
        path.write_text(json.dumps(tiny_config(steps, **train).to_dict()))
        return path
    return make


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of `imgen ARGV...` run in this process."""
    from imgen.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern):
    """The CLI's contract for bad input: exit 2 and one stderr line 'imgen: error: ...' containing `pattern`."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("imgen: error: "), err
    assert pattern in lines[0], lines[0]


def fit(method, net, data, steps: int, batch_size: int, lr: float, seed: int = 0) -> list[float]:
    """A bare AdamW loop over `method.loss` (for tests of a loss alone, without the Trainer); the losses per step."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        batch = data.get(np.arange(step * batch_size, (step + 1) * batch_size) % len(data))
        loss = method.loss(net, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def overfit_eps(net, x_t, t, eps, cond=None, steps: int = 50, lr: float = 2e-3) -> list[float]:
    """Adam on the eps-prediction MSE of one fixed batch (a net's overfit check); the losses per step."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = ((net(x_t, t, cond) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _popen(cmd):
    # a session of its own: a kill reaches the whole job (torchrun and its workers)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


def processes_writing(out: Path) -> list[str]:
    """Command lines of the live processes (Linux /proc) whose arguments name the directory `out`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        if os.fsencode(str(out)) in args:
            found.append(" ".join(a.decode(errors="replace") for a in args))
    return found


def assert_no_process_left(out: Path, grace: float = 10.0) -> None:
    """After a kill -9 of a run writing `out`, no process of it may live on (a torchrun worker would otherwise wait
    in a collective for its dead peers, holding memory); the kernel's SIGKILL of orphans takes a moment."""
    deadline = time.perf_counter() + grace
    while (left := processes_writing(out)) and time.perf_counter() < deadline:
        time.sleep(0.2)
    assert not left, f"processes outlived the kill -9 of their run: {left}"


def kill9_and_rerun(cmd: list, straight: Path, killed: Path, kills: int = 3, seed: int = 0) -> int:
    """Run `cmd + [straight]` to the end; then run `cmd + [killed]`, kill -9 it `kills` times at random moments
    in the second half of a run (past start-up), with every process it started, and rerun it until it finishes.
    A run that ends before its kill (the machine got faster) starts the killed directory over with earlier kills.
    The caller compares the two directories. Returns how many kills landed."""
    tic = time.perf_counter()
    p = _popen(cmd + [str(straight)])
    assert p.wait() == 0, p.stderr.read().decode()
    duration = time.perf_counter() - tic
    rng, landed, speed = random.Random(seed), 0, 1.0
    for _ in range(4 * kills):
        if landed == kills:
            break
        p = _popen(cmd + [str(killed)])
        try:
            p.wait(timeout=rng.uniform(0.5, 0.95) * duration * speed)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the process and any it started in its group
            p.wait()
            assert_no_process_left(killed)  # torchrun's workers run in sessions of their own
            landed += 1
            continue
        assert p.returncode == 0, p.stderr.read().decode()
        shutil.rmtree(killed)  # finished before its kill: start over, killing earlier
        landed, speed = 0, 0.7 * speed
    p = _popen(cmd + [str(killed)])
    assert p.wait() == 0, p.stderr.read().decode()
    return landed


# ---- trained models shared by the slow tests (each trained once per run) ---------------------------------------
def once(tmp_path_factory, name: str, make) -> Path:
    """The directory `name` that make(directory) fills, made once per test run: the first pytest-xdist worker to
    ask makes it while the other waits on a file lock, then both use it (the workers' base temp dirs share a
    parent; without xdist, the session's own base temp dir)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "shared"
    root.mkdir(exist_ok=True)
    out, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(out, ignore_errors=True)  # what a failed attempt left
            make(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`imgen demo` run once per test run, as a user runs it (~10 min on one core): its report and its CLIP serve
    tests/test_demo.py and the CLIP zero-shot test. Returns (out_dir, its completed process)."""
    import sys

    def make(d: Path) -> None:
        proc = subprocess.run([sys.executable, "-m", "imgen", "demo", "--out", str(d / "demo")], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (d / "stdout.txt").write_text(proc.stdout)

    d = once(tmp_path_factory, "demo", make)
    return d / "demo", subprocess.CompletedProcess("imgen demo", 0, (d / "stdout.txt").read_text(), "")


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
    """trained_digits(preset, steps=None) -> the model directory of a digits preset trained once per test run
    (steps=None: the preset's own budget). The DDPM quality test and classifier guidance share one DDPM."""
    from imgen.config import apply_overrides
    from imgen.presets import get_preset
    from imgen.train import train

    def get(preset: str, steps: int | None = None) -> Path:
        config = apply_overrides(get_preset(preset), [f"train.steps={steps}"] if steps else [])
        return once(tmp_path_factory, f"{preset}-{config.train.steps}",
                    lambda out: train(config, out, progress=False))

    return get
