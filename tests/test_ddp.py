"""Training on several processes (imgen.distributed, issue 15): N processes with batch B/N train the weights one
process trains with batch B, a kill -9 of the whole torchrun job resumes byte-identically, bad --nproc is refused."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import kill9_and_rerun
from imgen.checkpoint import load_tensors
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.distributed import global_draws
from imgen.torchrun import AGENT_PID
from imgen.train import train


def mlp_config(steps: int, batch_size: int = 64, ckpt_every: int = 5) -> Config:
    """Flow matching of an MLP on two moons: normalization-free, so every parameter has a real gradient (a bias
    before a GroupNorm has a true gradient of 0, and Adam scales its float-rounding noise, which differs between
    one batch of B and two of B/2, up to lr-sized steps: no 1e-5 agreement to expect there)."""
    return Config(description="ddp test", data=DataConfig("moons", {}, batch_size=batch_size),
                  net=NetConfig("mlp", {"hidden": 64, "depth": 2}), method=MethodConfig("flow_matching", {"cond_drop": 1.0}),
                  train=TrainConfig(steps=steps, lr=1e-3, warmup=2, ckpt_every=ckpt_every, log_every=1),
                  sample=SampleConfig("euler", steps=4))


def imgen_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "imgen", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_rank_draws_its_slice_of_the_global_batchs_random_numbers():
    """The noise a sample gets does not depend on the world size: rank r's draws are rows r*n.. of one draw."""
    full = torch.Generator().manual_seed(3)
    want = [torch.randn(8, 3, generator=full), torch.rand(8, generator=full),
            torch.randint(0, 10, (2, 8), generator=full), torch.randn(5, generator=full)]
    for rank in range(2):
        gen, other = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        with global_draws(gen, 4, rank, 2):
            got = [torch.randn(4, 3, generator=gen), torch.rand((4,), generator=gen),
                   torch.randint(0, 10, size=(2, 4), generator=gen), torch.randn(5, generator=gen)]
            untouched = torch.randn(4, 3, generator=other)  # another generator: drawn as asked
        rows = slice(4 * rank, 4 * rank + 4)
        assert torch.equal(got[0], want[0][rows]) and torch.equal(got[1], want[1][rows])
        assert torch.equal(got[2], want[2][:, rows])  # the batch dimension need not be the first
        assert torch.equal(got[3], want[3])  # no batch-sized dimension: the same draw on every rank
        assert untouched.shape == (4, 3) and torch.equal(untouched, torch.randn(4, 3, generator=torch.Generator().manual_seed(3)))
        assert torch.equal(gen.get_state(), full.get_state())  # the ranks' generators stay in step
    assert torch.randn(3).shape == (3,)  # torch's functions are restored


@pytest.mark.parametrize("nproc", ["0", "3", "two"])
def test_bad_nproc_is_refused_with_one_line(tmp_path, nproc):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(mlp_config(4).to_dict()))
    r = imgen_cli("train", cfg, "--out", tmp_path / "m", "--nproc", nproc, timeout=60)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    if nproc == "two":
        assert "--nproc: invalid int value" in line
    elif nproc == "3":  # 64 does not split over 3
        assert line.startswith("imgen: error:") and "batch_size=64" in line and "--nproc 3" in line
    else:
        assert line.startswith("imgen: error: --nproc must be >= 1") and nproc in line
    assert not (tmp_path / "m").exists()


def test_what_a_worker_would_refuse_is_refused_before_torchrun_starts(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("x")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(mlp_config(4).to_dict()))
    r = imgen_cli("train", cfg, "--out", tmp_path / "m", "--nproc", 2, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"imgen: error: --out {str(tmp_path / 'm')!r} is not empty and holds no imgen model; choose an empty or new directory"]


WORKER = ("from imgen.torchrun import die_with_agent; die_with_agent(); print('armed', flush=True); "
          "import time; time.sleep(60)")


def alive(pid: int) -> bool:
    """pid runs (a zombie, killed but not yet reaped by whoever adopted it, does not)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl PR_SET_PDEATHSIG is Linux's")
def test_a_torchrun_worker_dies_with_its_agent_even_when_the_agent_died_first():
    """A kill -9 of a torchrun job misses its workers (sessions of their own); each must die with the agent."""
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test"}
    # the agent (named in the env) is gone by the time the worker asks: its parent is someone else
    late = subprocess.run([sys.executable, "-c", WORKER], env={**env, AGENT_PID: str(os.getpid() + 1)},
                          capture_output=True, text=True, timeout=20)
    assert late.returncode == -signal.SIGKILL and "armed" not in late.stdout
    # the agent lives while the worker asks, then is killed: the kernel kills the worker
    agent = subprocess.Popen([sys.executable, "-c", f"import os, subprocess, sys, time; os.environ[{AGENT_PID!r}] = "
                              f"str(os.getpid()); w = subprocess.Popen([sys.executable, '-c', {WORKER!r}], "
                              "start_new_session=True); print(w.pid, flush=True); time.sleep(60)"],
                             env=env, stdout=subprocess.PIPE, text=True)
    try:
        pid, armed = int(agent.stdout.readline()), agent.stdout.readline().strip()
        assert armed == "armed" and alive(pid)
    finally:
        agent.kill()
        agent.wait()
    deadline = time.perf_counter() + 10
    while alive(pid) and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the worker outlived its torchrun agent"


@pytest.mark.slow
def test_two_processes_with_half_batches_train_the_weights_of_one_process_with_the_whole_batch(tmp_path):
    steps = 20
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(mlp_config(steps).to_dict()))
    train(mlp_config(steps), tmp_path / "one", progress=False)
    r = imgen_cli("train", cfg, "--out", tmp_path / "two", "--nproc", 2, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("trained to step 20") == 1  # rank 0 alone reports
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    assert diff < 1e-5, diff
    init = train(mlp_config(1), tmp_path / "init", progress=False)  # the weights moved far more than the tolerance
    first = load_file(tmp_path / "init" / "model.safetensors")
    assert init["step"] == 1 and max((first[k] - one[k]).abs().max().item() for k in one) > 1e-2
    logs = [[json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("one", "two")]
    assert len(logs[1]) == steps  # one log, written by rank 0: the losses of the whole batch, as one process logs
    assert all(abs(a["loss"] - b["loss"]) < 1e-5 for a, b in zip(*logs))
    state = load_file(tmp_path / "two" / "train_state.safetensors")
    assert not torch.equal(state["rng.torch"], state["rng.torch.rank1"])  # each rank's own RNG, checkpointed


@pytest.mark.slow
def test_kill_9_of_the_whole_torchrun_job_and_rerun_is_byte_identical(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(mlp_config(300, ckpt_every=20).to_dict()))
    cmd = [sys.executable, "-m", "imgen", "train", str(cfg), "--nproc", "2", "--quiet", "--out"]
    out = tmp_path / "killed"
    assert kill9_and_rerun(cmd, tmp_path / "straight", out, kills=2) >= 1
    assert json.loads((out / "train_state.json").read_text())["step"] == 300
    for name in ("model.safetensors", "ema.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    # train_state: safetensors writes its metadata keys in a per-process hash order, so compare the contents
    (a, meta_a), (b, meta_b) = (load_tensors(d / "train_state.safetensors", with_metadata=True) for d in (out, tmp_path / "straight"))
    assert meta_a == meta_b and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "rng.torch.rank1" in a  # rank 1's RNG state resumed too


@pytest.mark.slow
def test_a_gan_with_two_optimizers_trains_alike_on_two_processes(tmp_path):
    """Two optimizers on one net (imgen.methods.gan): each update reaches only D's or only G's parameters, and the
    critic's gradient penalty draws interpolation weights per sample. BatchNorm-free (g_norm, d_norm none): batch
    statistics would be per process. Tolerance 1e-4: Adam turns float rounding of the generator's smallest
    gradients into larger steps (at lr 1e-3 measured 9e-7; per-step losses agree to 1e-5)."""
    opts = ["--steps", 8, "--quiet", "--set", "train.log_every=1", "--set", "train.lr=1e-3", "--set",
            "data.batch_size=32", "--set", "net.options.g_norm=none", "--set", "net.options.d_norm=none",
            "--set", "method.options.n_critic=2"]
    for out, extra in (("one", []), ("two", ["--nproc", 2])):
        r = imgen_cli("train", "digits-wgan-gp", "--out", tmp_path / out, *opts, *extra)
        assert r.returncode == 0, r.stderr[-3000:]
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-4
    logs = [[json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("one", "two")]
    for a, b in zip(*logs):
        assert abs(a["loss_discriminator"] - b["loss_discriminator"]) < 1e-5
        assert abs(a["loss_generator"] - b["loss_generator"]) < 1e-5
        assert abs(a["grad_norm_generator"] - b["grad_norm_generator"]) < 1e-4 * max(1.0, a["grad_norm_generator"])
