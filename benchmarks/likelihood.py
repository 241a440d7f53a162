"""Bits/dim on held-out digits: imgen's normalizing flows against baselines and a peer flow fitted in the same run.

Models are trained on sklearn's digits split="train" and scored on split="test" (17 grey levels, n_bins=17):
  realnvp, glow     the presets digits-realnvp / digits-glow (imgen.methods.normalizing_flow), EMA weights;
                    -(log p(x + u) + D log(2/17)) / (D ln 2) averaged over DEQUANT_DRAWS uniform dequantizations u
                    (an upper bound on the discrete model's bits/dim, Theis et al. 2016)
  independent       per-pixel categorical over the 17 levels with Laplace (+1) smoothing: exact discrete bits/dim
  gaussian          full-covariance Gaussian fitted (maximum likelihood) to the dequantized train digits, scored
                    like the flows (its density on the same bins of width 2/17, dequantized)
  peer_flow         zuko's neural spline flow (NSF, Durkan et al. 2019) on the 64-dim flattened dequantized digits,
                    the same steps, batch size and learning rate as digits-realnvp (only if zuko is installed)
  vae_elbo, vae_iwae  only if a preset "digits-vae" is in the registry at run time: its ELBO and IWAE (k=64) bounds,
                    discrete bits/dim (imgen.methods.vae)
checks: inverse_max_abs_err = max |f^-1(f(x)) - x| of both trained flows on the test digits (float32);
logdet_max_abs_err = max |logdet - slogdet(dz/dx)| on 4 test digits, float64 copies, Jacobian by autograd.

    OMP_NUM_THREADS=1 python benchmarks/likelihood.py            # preset step budgets; writes benchmarks/results/
    OMP_NUM_THREADS=1 python benchmarks/likelihood.py --quick    # 150 steps each

Trained models are cached in OUT/<name> (--quick: OUT/quick/<name>); a rerun only evaluates.
Time on this 2-core machine (OMP_NUM_THREADS=1, shared with other jobs):
  --quick   measured 52 s from scratch (150 steps each: RealNVP 17 s, Glow 10 s, digits-vae 9 s, zuko NSF ~10 s).
  full      measured 4 min 26 s from scratch (RealNVP 2000 steps 83 s, Glow 1000 steps 76 s, digits-vae 52 s, zuko
            NSF 2000 steps and the evaluations the rest); benchmarks/results/likelihood.json: that run (test bits/dim
            RealNVP 2.199, Glow 2.256, zuko NSF 2.192, independent 2.391, Gaussian 2.947, VAE ELBO 2.150 / IWAE 2.097).
            Glow's test bits/dim moves with the training seed: 2.256 / 2.320 / 2.250 / 2.291 at seeds 0-3.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

import imgen
from imgen.data import load_dataset
from imgen.metrics.bits import bits_per_dim, discrete_bits_per_dim
from imgen.nn.flow import dequantization_bin_width, dequantize_uniform
from imgen.presets import PRESETS, get_preset
from imgen.train import train_preset

N_BINS, DEQUANT_DRAWS, QUICK_STEPS = 17, 4, 150
RESULTS = Path(__file__).resolve().parent / "results" / "likelihood.json"


def digits(split: str) -> torch.Tensor:
    data = load_dataset("digits", split=split)
    return data.get(list(range(len(data))))["image"]  # (N, 1, 8, 8) in [-1, 1]


def levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round((x + 1) / 2 * (N_BINS - 1)).long().flatten(1)  # (N, 64) in 0..16


def independent_bpd(train_x: torch.Tensor, test_x: torch.Tensor) -> float:
    """Per-pixel categorical with Laplace smoothing: p_i(k) = (count_i(k) + 1) / (N + 17), exact bits/dim."""
    a, b = levels(train_x), levels(test_x)
    counts = torch.zeros(a.shape[1], N_BINS, dtype=torch.float64)
    counts.scatter_add_(1, a.T, torch.ones(a.T.shape, dtype=torch.float64))
    p = (counts + 1) / (counts.sum(1, keepdim=True) + N_BINS)
    return discrete_bits_per_dim(torch.log(p.gather(1, b.T)).T.sum(1), b.shape[1]).mean().item()


def gaussian_bpd(train_x: torch.Tensor, test_x: torch.Tensor, seed: int = 0) -> float:
    """Full-covariance Gaussian fitted to dequantized train digits, scored on dequantized test digits."""
    gen = torch.Generator().manual_seed(seed)
    x = dequantize_uniform(train_x, N_BINS, gen).flatten(1).double()
    dist = torch.distributions.MultivariateNormal(x.mean(0), covariance_matrix=torch.cov(x.T))
    scores = [bits_per_dim(-dist.log_prob(dequantize_uniform(test_x, N_BINS, gen).flatten(1).double()), x.shape[1],
                           dequantization_bin_width(N_BINS)).mean() for _ in range(DEQUANT_DRAWS)]
    return torch.stack(scores).mean().item()


def flow_bpd(m, test_x: torch.Tensor, seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        draws = [m.method.bits_per_dim(m.net, test_x, gen).mean() for _ in range(DEQUANT_DRAWS)]
    return torch.stack(draws).mean().item()


def flow_checks(m, test_x: torch.Tensor) -> tuple[float, float]:
    """(max |f^-1(f(x)) - x|, max |logdet - autograd slogdet|) of a trained flow."""
    with torch.no_grad():
        zs, _ = m.net(test_x)
        inverse_err = (m.net.inverse(zs) - test_x).abs().max().item()
    net = copy.deepcopy(m.net).double().eval()
    errs = []
    for x in test_x[:4].double():
        x = x[None]
        shapes = [z.shape for z in net(x)[0]]
        sizes = [math.prod(s[1:]) for s in shapes]

        def f(flat):
            return torch.cat([z.flatten(1) for z in net(flat.reshape(x.shape))[0]], 1)[0]

        jac = torch.autograd.functional.jacobian(f, x.flatten())  # (D, D)
        _, logabsdet = torch.linalg.slogdet(jac)
        assert sum(sizes) == jac.shape[0]
        errs.append(abs(net(x)[1].item() - logabsdet.item()))
    return inverse_err, max(errs)


def peer_flow_bpd(train_x: torch.Tensor, test_x: torch.Tensor, steps: int, batch_size: int, lr: float,
                  seed: int = 0) -> float | None:
    """zuko's NSF on flattened dequantized digits, the same budget as the imgen flow presets; None without zuko."""
    try:
        import zuko
    except ImportError:
        return None
    torch.manual_seed(seed)
    flow = zuko.flows.NSF(features=64, transforms=3, hidden_features=(128, 128))
    opt = torch.optim.AdamW(flow.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    D, width = 64, dequantization_bin_width(N_BINS)
    for step in range(steps):
        idx = torch.randint(len(train_x), (batch_size,), generator=gen)
        x = dequantize_uniform(train_x[idx], N_BINS, gen).flatten(1)
        loss = bits_per_dim(-flow().log_prob(x), D, width).mean().float()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
    with torch.no_grad():
        scores = [bits_per_dim(-flow().log_prob(dequantize_uniform(test_x, N_BINS, gen).flatten(1)), D, width).mean()
                  for _ in range(DEQUANT_DRAWS)]
    return torch.stack(scores).mean().item()


def trained(name: str, out: Path, steps: int | None) -> tuple[imgen.Model, float]:
    seconds = train_preset(name, out / name, steps)  # resumes / returns at once if already trained
    return imgen.load(out / name), seconds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} training steps per model (< 5 min)")
    p.add_argument("--out", default="runs/bench-likelihood", help="cache folder for the trained models")
    p.add_argument("--json", default=None, help=f"write the JSON here (default without --quick: {RESULTS})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tic = time.perf_counter()
    torch.manual_seed(0)
    out = Path(args.out) / ("quick" if args.quick else "")
    steps = QUICK_STEPS if args.quick else None
    train_x, test_x = digits("train"), digits("test")
    J = {"quick": args.quick, "n_bins": N_BINS, "n_test": len(test_x), "bits_per_dim": {}, "checks": {},
         "train_seconds": {}, "steps": {}}
    bpd = J["bits_per_dim"]
    bpd["independent"] = independent_bpd(train_x, test_x)
    bpd["gaussian"] = gaussian_bpd(train_x, test_x)
    inv, ld = [], []
    for name, key in (("digits-realnvp", "realnvp"), ("digits-glow", "glow")):
        m, seconds = trained(name, out, steps)
        J["train_seconds"][key], J["steps"][key] = round(seconds, 1), m.config.train.steps
        bpd[key] = flow_bpd(m, test_x)
        i, d = flow_checks(m, test_x)
        inv.append(i)
        ld.append(d)
    J["checks"]["inverse_max_abs_err"], J["checks"]["logdet_max_abs_err"] = max(inv), max(ld)
    ref = get_preset("digits-realnvp")
    peer_steps = steps or ref.train.steps
    peer = peer_flow_bpd(train_x, test_x, peer_steps, ref.data.batch_size, ref.train.lr)
    if peer is not None:
        bpd["peer_flow"] = peer
        J["peer_flow"] = {"library": "zuko", "model": "NSF(features=64, transforms=3, hidden=(128, 128))",
                          "steps": peer_steps}
    if "digits-vae" in PRESETS:  # another family's likelihood bound, only if it exists in this checkout
        m, seconds = trained("digits-vae", out, steps)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            bpd["vae_elbo"] = discrete_bits_per_dim(m.method.elbo(m.net, test_x, gen), 64).mean().item()
            bpd["vae_iwae"] = discrete_bits_per_dim(m.method.iwae(m.net, test_x, k=64, generator=gen), 64).mean().item()
        J["train_seconds"]["vae"], J["steps"]["vae"] = round(seconds, 1), m.config.train.steps
    J["ratio_realnvp_to_independent"] = bpd["realnvp"] / bpd["independent"]
    if "peer_flow" in bpd:
        J["ratio_realnvp_to_peer_flow"] = bpd["realnvp"] / bpd["peer_flow"]
    J["seconds"] = round(time.perf_counter() - tic, 1)
    text = json.dumps(J, indent=2)
    print(text)
    path = args.json or (None if args.quick else RESULTS)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
