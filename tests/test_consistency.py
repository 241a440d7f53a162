"""Consistency distillation (Song et al. 2023) and LCM (Luo et al. 2023): the boundary condition f(x, 0) = x, the
teacher's ODE step, the multistep consistency sampler, that the loss falls, the CLI round trip, and (slow) that a
1-step student of a 2D flow lands far closer to the data than its teacher's own 1 step."""
import json

import numpy as np
import pytest
import torch

import imgen
from conftest import assert_one_line_error, fit, run_cli, tiny_config
from imgen.analytic import GaussianMixture
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.data import load_dataset
from imgen.denoiser import FunctionDenoiser
from imgen.errors import ImgenError
from imgen.methods import build_method
from imgen.methods.consistency import ConsistencyDenoiser, consistency_coefficients, teacher_step
from imgen.metrics.toy_distances import mmd_rbf
from imgen.nn import build_net_from_config
from imgen.recipes.consistency import distill_consistency
from imgen.samplers import sample_consistency, sample_ddim, sample_heun, sample_tcd
from imgen.schedules import build_schedule
from imgen.train import resolve_config, train

MIX = GaussianMixture([0.6, 0.4], [[-1.5, 0.0], [1.5, 1.0]], [[[0.2, 0.0], [0.0, 0.2]], [[0.3, 0.1], [0.1, 0.2]]])


def _toy_config(steps: int) -> Config:
    return Config(description="tiny 8gaussians flow", data=DataConfig("8gaussians", {}, batch_size=256),
                  net=NetConfig("mlp", {"hidden": 64, "depth": 2}),
                  method=MethodConfig("flow_matching", {"cond_drop": 1.0}),
                  train=TrainConfig(steps=steps, lr=2e-3, warmup=20, ema_decay=0.99, ckpt_every=steps, log_every=50),
                  sample=SampleConfig("euler", steps=25))


def _exact(schedule):
    """The mixture's exact denoiser, for per-sample times that are all equal (the analytic one takes a scalar t)."""
    inner = MIX.denoiser(schedule)
    return FunctionDenoiser(lambda x, t, c=None: inner(x, torch.as_tensor(t).reshape(-1)[0], c), schedule)


@pytest.mark.parametrize("schedule", ["rectified_flow", "cosine", "ve"])
def test_boundary_condition_f_of_x_at_t0_is_x_exactly(schedule):
    sched = build_schedule(schedule)
    f = ConsistencyDenoiser(FunctionDenoiser(lambda x, t, c=None: torch.full_like(x, float("nan")), sched))
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(f(x, 0.0), x)  # eq. 3: f(x, eps) = x, the net is not even evaluated
    out = f(x, torch.tensor([0.0, 0.5, 0.0, 1.0, 0.2], dtype=torch.float64))
    assert torch.equal(out[[0, 2]], x[[0, 2]]) and out[[1, 3, 4]].isnan().all()
    c_skip, c_out = consistency_coefficients(torch.tensor([0.0, 1e-3, 0.1, 1.0, float("inf")]))
    assert c_skip[0] == 1 and c_out[0] == 0 and c_skip[-1] == 0 and c_out[-1] == 1
    assert (c_skip.diff() < 0).all() and (c_out.diff() > 0).all()


def test_teacher_step_is_one_ddim_or_heun_step_of_the_samplers():
    sched = build_schedule("rectified_flow")
    den = _exact(sched)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t, s = torch.full((64,), 0.7, dtype=torch.float64), torch.full((64,), 0.4, dtype=torch.float64)
    ts = torch.tensor([0.7, 0.4], dtype=torch.float64)
    torch.testing.assert_close(teacher_step(den, x, t, s, solver="ddim"), sample_ddim(den, x, ts))
    torch.testing.assert_close(teacher_step(den, x, t, s, solver="heun"), sample_heun(den, x, ts))
    # to t = 0 both are the denoiser's x0_hat (no correction at sigma = 0, Algorithm 1)
    zero = torch.zeros(64, dtype=torch.float64)
    torch.testing.assert_close(teacher_step(den, x, t, zero, solver="heun"), den(x, 0.7))


def test_consistency_sampler_renoises_the_estimate_one_evaluation_per_step():
    sched, calls = build_schedule("rectified_flow"), []
    target = torch.full((4000, 2), 0.5, dtype=torch.float64)

    def f(x, t, cond=None):
        calls.append((float(torch.as_tensor(t)), x.clone()))
        return target

    from imgen.schedules import time_grid
    x = sample_consistency(FunctionDenoiser(f, sched), torch.randn(4000, 2, dtype=torch.float64), time_grid(3),
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, target) and [t for t, _ in calls] == pytest.approx([1.0, 2 / 3, 1 / 3])
    second = calls[1][1]  # x_tau = alpha(tau) x0_hat + sigma(tau) z (Algorithm 1, line 5)
    assert abs(float(second.mean()) - 0.5 / 3) < 0.03 and abs(float(second.std()) - 2 / 3) < 0.03


def test_tcd_sampler_ddim_steps_to_u_then_renoises_and_spans_ddim_to_consistency():
    """TCD's strategic stochastic sampling (Zheng et al. 2024, eq. 15) on rectified flow from t=1 to s=2/3: eta=0 is
    DDIM's step with the student's x0; eta=1/2 goes to u = 1/3 by DDIM, then forward-noises to s; eta -> 1 tends to
    the consistency sampler's re-noise (the eta=1 special case is that limit); bad eta: one clear error."""
    sched, c = build_schedule("rectified_flow"), 0.5
    den = FunctionDenoiser(lambda x, t, cond=None: torch.full_like(x, c), sched)
    x = torch.full((20000, 2), 2.0, dtype=torch.float64)
    ts = torch.tensor([1.0, 2 / 3], dtype=torch.float64)
    torch.testing.assert_close(sample_tcd(den, x, ts, eta=0.0), sample_ddim(den, x, ts))
    # x_u = (2/3) c + (1/3) x; x_s = (a_s / a_u) x_u + sqrt(s_s^2 - (a_s s_u / a_u)^2) z = c/3 + x/6 + sqrt(15/36) z
    half = sample_tcd(den, x, ts, eta=0.5, generator=torch.Generator().manual_seed(0))
    assert abs(float(half.mean()) - (c / 3 + 2 / 6)) < 0.01 and abs(float(half.std()) - (15 / 36) ** 0.5) < 0.01
    one = sample_tcd(den, x, ts, eta=1.0, generator=torch.Generator().manual_seed(1))
    near = sample_tcd(den, x, ts, eta=1 - 1e-9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(one, near, rtol=0, atol=1e-6)
    assert torch.equal(one, sample_consistency(den, x, ts, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ImgenError, match=r"eta must be in \[0, 1\] \(TCD's gamma"):
        sample_tcd(den, x, ts, eta=1.5)


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("cd-teacher") / "model"
    train(_toy_config(300), out, progress=False)
    return out


def test_consistency_loss_falls(toy_teacher, one_thread):
    cfg = resolve_config(_toy_config(1), load_dataset("8gaussians"))
    torch.manual_seed(0)
    net = build_net_from_config(cfg)  # a fresh net, so that there is something to learn
    method = build_method("consistency_distillation", teacher=str(toy_teacher), cond_drop=1.0, steps=10)
    losses = fit(method, net, load_dataset("8gaussians"), steps=150, batch_size=128, lr=2e-3)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20]), (losses[:20], losses[-20:])


def test_student_directory_samples_through_the_cli_at_1_2_and_4_steps(tmp_path, capsys, one_thread):
    train(tiny_config(steps=6), tmp_path / "teacher", progress=False)
    code, out, err = run_cli(capsys, "distill", tmp_path / "teacher", "--out", tmp_path / "cd", "--steps", "4",
                             "--batch-size", "16", "--quiet")
    assert code == 0, err
    cfg = json.loads((tmp_path / "cd" / "config.json").read_text())
    assert cfg["sample"]["sampler"] == "consistency" and cfg["sample"]["steps"] == 1
    assert cfg["method"]["name"] == "consistency_distillation" and cfg["method"]["options"]["guidance"] == 1.0
    for steps in ("1", "2", "4"):
        code, out, err = run_cli(capsys, "sample", tmp_path / "cd", "--steps", steps, "--n", "4",
                                 "--out", tmp_path / f"s{steps}.png")
        assert code == 0 and (tmp_path / f"s{steps}.png").is_file(), err
    calls = []
    m = imgen.load(tmp_path / "cd")
    m.net.register_forward_hook(lambda *_: calls.append(1))
    x = m.sample(3, labels=[1, 2, 3])
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all() and len(calls) == 1  # 1 NFE
    code, _, err = run_cli(capsys, "distill", tmp_path / "teacher", "--out", tmp_path / "lcm", "--kind", "lcm",
                           "--steps", "2", "--batch-size", "16", "--quiet")
    assert code == 0, err
    lcm = json.loads((tmp_path / "lcm" / "config.json").read_text())
    assert lcm["method"]["options"]["guidance"] == 1.2 and lcm["sample"]["steps"] == 4 and lcm["sample"]["cfg"] == 1
    assert (lcm["sample"]["sampler"], lcm["sample"]["eta"], lcm["sample"]["shift"]) == ("tcd", 0.3, 2.0)
    calls.clear()
    m = imgen.load(tmp_path / "lcm")
    m.net.register_forward_hook(lambda *_: calls.append(1))
    assert torch.isfinite(m.sample(3, labels=[1, 2, 3])).all() and len(calls) == 4  # 4 NFE


def test_a_stopped_and_resumed_distillation_ends_byte_identical(tmp_path, one_thread):
    from safetensors.torch import load_file

    from imgen.recipes.consistency import distill_consistency

    train(tiny_config(steps=4), tmp_path / "teacher", progress=False)
    opts = {"batch_size": 16, "target_decay": 0.5}  # a short memory, so a lost target net would show
    distill_consistency(tmp_path / "teacher", tmp_path / "straight", train_steps=6, **opts)
    distill_consistency(tmp_path / "teacher", tmp_path / "resumed", train_steps=3, **opts)  # stops at step 3
    distill_consistency(tmp_path / "teacher", tmp_path / "resumed", train_steps=6, **opts)  # resumes to 6
    for name in ("model.safetensors", "ema.safetensors"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    a, b = (load_file(tmp_path / d / "train_state.safetensors") for d in ("resumed", "straight"))
    assert any(k.startswith("method.") for k in a)  # the EMA target net theta- is in the checkpoint
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lcm_of_the_shipped_latent_t2i_learns_on_its_latents_and_resumes_exactly(tmp_path, one_thread):
    """LCM proper: a latent teacher's student is a latent model on the teacher's autoencoder and scale, with the
    teacher's cfg folded in; it generates from prompts at 4 NFE, and its EMA target net (inside the latent method)
    is checkpointed, so a stopped and resumed distillation ends byte-identical."""
    from safetensors.torch import load_file

    opts = {"batch_size": 4, "target_decay": 0.5}
    distill_consistency("shapes-latent-t2i", tmp_path / "straight", "lcm", train_steps=4, **opts)
    distill_consistency("shapes-latent-t2i", tmp_path / "resumed", "lcm", train_steps=2, **opts)
    distill_consistency("shapes-latent-t2i", tmp_path / "resumed", "lcm", train_steps=4, **opts)
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cfg = json.loads((tmp_path / "straight" / "config.json").read_text())["method"]
    inner = cfg["options"]["method_options"]
    assert cfg["name"] == "latent" and cfg["options"]["method"] == "consistency_distillation"
    student, teacher = imgen.load(tmp_path / "straight"), imgen.load("shapes-latent-t2i")
    assert inner["guidance"] == teacher.config.sample.cfg and inner["base_method"] == "flow_matching"  # the teacher's
    assert student.method.scale == teacher.method.scale and student.latent
    calls = []
    student.net.register_forward_hook(lambda *_: calls.append(1))
    x = student.generate(["a big red circle in the middle", "a small blue square in the top left"])
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all() and len(calls) == 4  # 4 NFE at cfg 1


def test_bad_distill_input_is_one_line_error(tmp_path, capsys, toy_teacher):
    code, _, err = run_cli(capsys, "distill", tmp_path / "nothing", "--out", tmp_path / "s")
    assert_one_line_error(code, err, "is not a model directory")
    code, _, err = run_cli(capsys, "distill", toy_teacher, "--out", tmp_path / "s2", "--kind", "lcm")
    assert_one_line_error(code, err, "needs a conditional teacher")
    with pytest.raises(ImgenError, match="skip"):
        build_method("consistency_distillation", teacher=str(toy_teacher), steps=4, skip=5)
    with pytest.raises(ImgenError, match="guidance must be >= 1"):
        build_method("consistency_distillation", teacher=str(toy_teacher), guidance=0.5)


@pytest.mark.slow
def test_one_step_consistency_student_lands_near_the_data_where_the_teacher_does_not(tmp_path, one_thread):
    """The teacher's 1 Euler step from noise is its x0_hat at t = 1, the data mean: it collapses 8 gaussians onto
    the middle. A consistency student distilled from its 25-step ODE draws the modes in 1 step."""
    teacher = tmp_path / "teacher"
    train(_toy_config(1500), teacher, progress=False)
    student = distill_consistency(teacher, tmp_path / "cd", train_steps=400, lr=1e-3)
    real = load_dataset("8gaussians", seed=12345).get(np.arange(1000))["x"].double()
    h = float(torch.cdist(real, real).median())  # one kernel bandwidth for every row
    t, s = imgen.load(teacher), imgen.load(student)
    mmd = {name: mmd_rbf(x.double(), real, bandwidth=h, biased=True) for name, x in (
        ("teacher_1", t.sample(1000, sampler="euler", steps=1, seed=1)), ("teacher_25", t.sample(1000, seed=1)),
        ("student_1", s.sample(1000, steps=1, seed=1)), ("student_2", s.sample(1000, steps=2, seed=1)))}
    # measured (seeds 0/1, 1/2 threads): student_1 / teacher_1 = 0.007 / 0.005, student_1 / teacher_25 = 1.0 / 0.8
    assert mmd["student_1"] < 0.1 * mmd["teacher_1"] and mmd["student_1"] < 3 * mmd["teacher_25"], mmd
