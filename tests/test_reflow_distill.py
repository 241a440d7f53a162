"""Reflow (2-rectified flow) and progressive distillation: the pair dataset, the losses' targets, and that both
make a trained 2D flow sample well in a few steps."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import imgen
from imgen.analytic import GaussianMixture
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.data import load_dataset
from imgen.denoiser import FunctionDenoiser
from imgen.errors import ImgenError
from imgen.methods import build_method
from imgen.methods.distill import ddim_step, distillation_target
from imgen.recipes.distill import distill
from imgen.recipes.reflow import make_reflow_pairs, train_reflow
from imgen.samplers import sample_ddim
from imgen.schedules import build_schedule
from imgen.train import Trainer, train


def _toy_config(steps: int) -> Config:
    return Config(description="tiny 8gaussians flow", data=DataConfig("8gaussians", {}, batch_size=256),
                  net=NetConfig("mlp", {"hidden": 64, "depth": 2}),
                  method=MethodConfig("flow_matching", {"cond_drop": 1.0}),
                  train=TrainConfig(steps=steps, lr=2e-3, warmup=20, ema_decay=0.99, ckpt_every=steps, log_every=50),
                  sample=SampleConfig("euler", steps=50))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "model"
    train(_toy_config(600), out, progress=False)
    return out


def _euler_error(model, steps: int, noise: torch.Tensor) -> float:
    """Mean distance of `steps`-step Euler samples from the 100-step dpmpp_2m ODE solution of the same noise."""
    ref = model.sample(len(noise), sampler="dpmpp_2m", steps=100, noise=noise)
    return float((model.sample(len(noise), sampler="euler", steps=steps, noise=noise) - ref).norm(dim=1).mean())


# ---- pairs dataset ---------------------------------------------------------------------------------------------
def test_pairs_are_deterministic_ode_couplings_and_round_trip(teacher_dir, tmp_path):
    model = imgen.load(teacher_dir)
    a = make_reflow_pairs(model, 64, steps=20, sampler="heun", seed=3, batch=25, path=tmp_path / "p.safetensors")
    b = make_reflow_pairs(model, 64, steps=20, sampler="heun", seed=3, batch=64)
    assert torch.equal(a.noise, b.noise)  # batching does not change the pairs (up to float matmul, whose
    torch.testing.assert_close(a.sample, b.sample, rtol=1e-5, atol=1e-5)  # result may depend on the batch size)
    c = make_reflow_pairs(model, 64, steps=20, sampler="heun", seed=4)
    assert not torch.equal(a.noise, c.noise)
    # each sample is the ODE solution of its own noise
    one = model.sample(1, sampler="heun", steps=20, noise=a.noise[10:11])
    torch.testing.assert_close(a.sample[10:11], one)
    ds = load_dataset("pairs", path=str(tmp_path / "p.safetensors"))
    assert len(ds) == 64 and ds.channels == 2 and ds.num_classes is None and not ds.infinite
    batch = ds.get(np.array([5, 0, 5]))
    assert set(batch) == {"x", "noise"} and batch["x"].dtype == torch.float32 and batch["x"].shape == (3, 2)
    torch.testing.assert_close(batch["noise"][0], a.noise[5])
    assert torch.equal(batch["x"][0], batch["x"][2]) and torch.equal(batch["x"][0], a.sample[5])
    torch.testing.assert_close(batch["x"][1], a.sample[0])


def test_pairs_errors(teacher_dir, tmp_path):
    model = imgen.load(teacher_dir)
    with pytest.raises(ImgenError, match="deterministic ODE sampler"):
        make_reflow_pairs(model, 8, steps=4, sampler="ddpm")
    ds = make_reflow_pairs(model, 8, steps=4)
    with pytest.raises(ImgenError, match="out of range"):
        ds.get(np.array([8]))
    from imgen.checkpoint import save_tensors

    save_tensors({"x": torch.zeros(3, 2)}, tmp_path / "bad.safetensors")
    with pytest.raises(ImgenError, match="not a reflow pair file"):
        load_dataset("pairs", path=str(tmp_path / "bad.safetensors"))


def test_pairs_carry_labels_of_a_conditional_teacher(tmp_path):
    cfg = _toy_config(2)
    cfg.method.options["cond_drop"] = 0.1  # 8gaussians has component labels: a class-conditional toy model
    train(cfg, tmp_path / "cond", progress=False)
    ds = make_reflow_pairs(imgen.load(tmp_path / "cond"), 20, steps=2, path=tmp_path / "p.safetensors")
    loaded = load_dataset("pairs", path=str(tmp_path / "p.safetensors"))
    assert loaded.num_classes == 8 and torch.equal(loaded.get(np.arange(20))["label"], torch.arange(20) % 8)
    assert torch.equal(ds.label, loaded.label)


# ---- the losses' targets ---------------------------------------------------------------------------------------
class _Recorder(torch.nn.Module):
    """A 'net' that records its inputs and predicts a fixed velocity."""

    def __init__(self, out):
        super().__init__()
        self.out, self.seen = out, []

    def forward(self, x, t, cond=None):
        self.seen.append((x.clone(), t.clone()))
        return self.out


def test_reflow_loss_regresses_the_straight_line_between_the_pair():
    g = torch.Generator().manual_seed(0)
    x1, z = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g)
    net = _Recorder(torch.zeros(32, 2))
    loss = build_method("reflow", cond_drop=1.0).loss(net, {"x": x1, "noise": z}, torch.Generator().manual_seed(1))
    x_t, t = net.seen[0]
    tb = t[:, None]
    torch.testing.assert_close(x_t, (1 - tb) * x1 + tb * z)  # on the segment from the sample to ITS noise
    torch.testing.assert_close(loss, ((z - x1) ** 2).mean())  # target: the constant velocity z - x1
    perfect = _Recorder(z - x1)
    assert build_method("reflow", cond_drop=1.0).loss(perfect, {"x": x1, "noise": z}).item() == 0.0
    with pytest.raises(ImgenError, match="pairs"):
        build_method("reflow").loss(net, {"x": x1})


@pytest.mark.parametrize("schedule", ["rectified_flow", "cosine"])
def test_distillation_target_matches_two_teacher_ddim_steps(schedule):
    sched = build_schedule(schedule)
    mix = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], torch.stack([0.1 * torch.eye(2), 0.2 * torch.eye(2)]))
    exact = mix.denoiser(sched)
    teacher = FunctionDenoiser(lambda x, t, c=None: exact(x, torch.as_tensor(t).reshape(-1)[0], c), sched)
    x_t = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for n, t in [(4, 1.0), (4, 0.5), (8, 0.25), (2, 0.5)]:
        tb = torch.full((64,), t, dtype=torch.float64)
        x0_tilde = distillation_target(teacher, x_t, tb, n)
        two_steps = sample_ddim(teacher, x_t, torch.tensor([t, t - 0.5 / n, t - 1.0 / n], dtype=torch.float64))
        student = FunctionDenoiser(lambda x, t_, c=None: x0_tilde, sched)  # a student that predicts the target
        torch.testing.assert_close(ddim_step(student, x_t, tb, tb - 1.0 / n), two_steps)


def test_few_step_methods_reject_bad_options(teacher_dir, tmp_path):
    with pytest.raises(ImgenError, match="student_steps"):
        build_method("progressive_distillation", teacher=str(teacher_dir), student_steps=0)
    with pytest.raises(ImgenError, match="power of two"):
        distill(teacher_dir, tmp_path / "pd", start_steps=12, end_steps=4)
    ddpm_cfg = _toy_config(2)
    ddpm_cfg.method = MethodConfig("ddpm", {"cond_drop": 1.0})
    train(ddpm_cfg, tmp_path / "ddpm", progress=False)
    with pytest.raises(ImgenError, match="rectified-flow teacher"):
        train_reflow(tmp_path / "ddpm", tmp_path / "rf")


def test_init_from_starts_the_student_at_the_teachers_weights(teacher_dir, tmp_path):
    cfg = _toy_config(5)
    cfg.train.init_from = str(teacher_dir)
    trainer = Trainer(cfg, tmp_path / "student", progress=False)
    teacher = imgen.load(teacher_dir).net.state_dict()
    for k, v in trainer.net.state_dict().items():
        assert torch.equal(v, teacher[k]) and torch.equal(trainer.ema.state_dict()[k], teacher[k])
    cfg.net.options["hidden"] = 32
    with pytest.raises(ImgenError, match="init_from"):
        Trainer(cfg, tmp_path / "other", progress=False)


# ---- end to end on a 2D toy -------------------------------------------------------------------------------------
def test_reflow_straightens_the_flow(teacher_dir, tmp_path):
    out = train_reflow(teacher_dir, tmp_path / "reflow", n_pairs=1500, pair_steps=50, train_steps=300, lr=1e-3)
    teacher, student = imgen.load(teacher_dir), imgen.load(out)
    noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(7))
    before, after = _euler_error(teacher, 1, noise), _euler_error(student, 1, noise)
    assert after < 0.3 * before, (before, after)  # 1-step Euler error against the model's own 100-step ODE


def test_progressive_distillation_gives_a_normal_few_step_model(teacher_dir, tmp_path):
    out = distill(teacher_dir, tmp_path / "pd", start_steps=8, end_steps=4, train_steps=200, lr=1e-3)
    student, teacher = imgen.load(out), imgen.load(teacher_dir)
    assert student.config.sample.steps == 4 and student.config.method.name == "progressive_distillation"
    noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(7))
    ref = teacher.sample(500, sampler="dpmpp_2m", steps=100, noise=noise)
    err = {name: float((m.sample(500, sampler="euler", steps=4, noise=noise) - ref).norm(dim=1).mean())
           for name, m in (("teacher", teacher), ("student", student))}
    assert err["student"] < 0.6 * err["teacher"], err  # 4 student steps track the teacher's ODE better than 4 of its own
    for sampler in ("heun", "dpmpp_2m", "ddim"):  # any sampler runs the distilled model
        assert torch.isfinite(student.sample(8, sampler=sampler, steps=4)).all()


# ---- slow: few-step quality ---------------------------------------------------------------------------------------
def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "nfe_quality.py"
    spec = importlib.util.spec_from_file_location("nfe_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reflowed_8gaussians_at_4_nfe_is_as_good_as_the_teacher_at_100(tmp_path):
    cfg = _toy_config(1500)
    cfg.net.options = {"hidden": 128, "depth": 3}
    train(cfg, tmp_path / "teacher", progress=False)
    out = train_reflow(tmp_path / "teacher", tmp_path / "reflow", n_pairs=4000, pair_steps=100, train_steps=1000, lr=1e-3)
    real = load_dataset("8gaussians", seed=123).get(np.arange(2000))["x"]
    mmd = _bench().mmd_rbf
    teacher_100 = mmd(imgen.load(tmp_path / "teacher").sample(2000, sampler="dpmpp_2m", steps=100, seed=1), real)
    reflow_4 = mmd(imgen.load(out).sample(2000, sampler="euler", steps=4, seed=1), real)
    teacher_4 = mmd(imgen.load(tmp_path / "teacher").sample(2000, sampler="euler", steps=4, seed=1), real)
    # stated margin: within 25% (+ 0.002 for the estimator's noise at n = 2000) of the teacher's 100-NFE MMD
    assert reflow_4 <= 1.25 * teacher_100 + 0.002, (reflow_4, teacher_100)
    assert reflow_4 < 0.5 * teacher_4, (reflow_4, teacher_4)  # and far better than the teacher at 4 NFE


@pytest.mark.parametrize("name,imgen_sampler", [("diffusers_ddim", "ddim"), ("diffusers_dpmpp_2m", "dpmpp_2m")])
def test_diffusers_schedulers_on_a_flow_denoiser_are_exact_conversions(name, imgen_sampler):
    """The benchmark's bridge gives diffusers' scheduler the flow model's x0 prediction at the flow time with the
    same noise level; on the same times it must then be imgen's own sampler, step for step."""
    from imgen.samplers import SAMPLERS

    bench = _bench()
    sched = build_schedule("rectified_flow")
    mix = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], torch.stack([0.1 * torch.eye(2), 0.2 * torch.eye(2)]))
    exact = mix.denoiser(sched)
    den = FunctionDenoiser(lambda x, t, c=None: exact(x, torch.as_tensor(t).reshape(-1)[0], c), sched)
    noise = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    for steps in (4, 8):  # 1000 // steps divides 999 - 1: DDIM's prev timestep is the next one it evaluates
        ours_via_diffusers = bench.sample_diffusers(name, den, noise, steps)
        peer = bench._diffusers_scheduler(name)
        peer.set_timesteps(steps)
        ab = peer.alphas_cumprod[peer.timesteps.long()].double()  # the scheduler's noise levels, then x0 (t = 0)
        ts = torch.cat([sched.t_from_edm_sigma(((1 - ab) / ab).sqrt()), torch.zeros(1, dtype=torch.float64)])
        ours = SAMPLERS[imgen_sampler](den, noise * float(sched.alpha(ts[0]) / ab[0].sqrt()), ts)
        torch.testing.assert_close(ours_via_diffusers, ours, atol=2e-4, rtol=1e-4)
