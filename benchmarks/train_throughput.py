"""Training throughput of imgen's U-Net against diffusers' UNet2DModel at a matched parameter count.

One training step = forward + MSE loss + backward + AdamW step (the same fused AdamW for every net),
on the same random batch. The nets are measured in one process, interleaved (the order alternates each
repeat) after a warm-up, and the median images/s of each is reported, so load from other processes
affects all of them alike. Prints one JSON object.

Peers (diffusers, default configuration apart from the layout below):
  ddpm  the DDPM CIFAR-10 layout (Ho et al. 2020; diffusers' google/ddpm-cifar10-32): widths (c, 2c, 2c, 2c),
        two res blocks per level, single-head attention at the second level; c is chosen to match imgen's parameter
        count. This is the headline ratio: same parameter budget, each library's own architecture.
  same  imgen's exact architecture rebuilt from diffusers blocks (same widths, attention resolutions,
        scale-shift time conditioning): the ratio of the two implementations alone.

    python benchmarks/train_throughput.py                    # 32x32x3, batch 32
    python benchmarks/train_throughput.py --resolution 16 --batch 64 --repeats 7 --peers ddpm
    python benchmarks/train_throughput.py --quick            # 1 warm-up, 3 repeats of 1 step: a smoke run

Time on a shared 2-core machine (OMP_NUM_THREADS=1, measured): the full run 2 min 5 s, --quick 49 s.
Nothing is trained beyond these timed steps, so nothing is cached.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from imgen.nn import unet_small


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


def diffusers_ddpm_layout(channels: int, resolution: int, base: int):
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=channels,
        block_out_channels=(base, 2 * base, 2 * base, 2 * base), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=math.gcd(base, 32),
        attention_head_dim=None,  # one head, as in DDPM (diffusers' default of 8-dim heads is ~30% slower)
    )


def matched_ddpm_layout(channels: int, resolution: int, target_params: int):
    """The DDPM-layout diffusers net whose base width (a multiple of 8) gives the closest parameter count."""
    best = None
    for base in range(16, 257, 8):
        net = diffusers_ddpm_layout(channels, resolution, base)
        gap = abs(n_params(net) / target_params - 1)
        if best is None or gap < best[0]:
            best = (gap, net, base)
        if n_params(net) > target_params:
            break
    return best[1], {"layout": "ddpm", "block_out_channels": list(best[1].config.block_out_channels)}


def diffusers_same_layout(ours):
    """imgen's architecture (widths, attention resolutions, AdaGN scale-shift) built from diffusers blocks."""
    from diffusers import UNet2DModel

    cfg = ours.config()
    widths = [cfg["base_channels"] * m for m in cfg["channel_mults"]]
    resolutions = [cfg["image_size"] // 2**i for i in range(len(widths))]
    attn = [r in cfg["attn_resolutions"] for r in resolutions]
    head_dims = {widths[i] // cfg["num_heads"] for i in range(len(widths)) if attn[i]} | {
        widths[-1] // cfg["num_heads"]}
    if len(head_dims) != 1:
        raise SystemExit("--peers same needs one attention head size across levels (diffusers has one)")
    net = UNet2DModel(
        sample_size=cfg["image_size"], in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"] or cfg["in_channels"], block_out_channels=tuple(widths),
        layers_per_block=cfg["num_res_blocks"],
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        resnet_time_scale_shift="scale_shift", attention_head_dim=head_dims.pop(),
        norm_num_groups=math.gcd(math.gcd(*widths), 32),
    )
    return net, {"layout": "same", "block_out_channels": widths}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2, help="training steps per measurement")
    ap.add_argument("--repeats", type=int, default=5, help="measurements per net (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per net first")
    ap.add_argument("--peers", default="ddpm,same", help="comma-separated: ddpm, same")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads; 1 by default because two OpenMP threads on a shared 2-core "
                         "machine stall for seconds at random, which distorts ratios (use 0 for torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1 warm-up step, 3 repeats of 1 step per net (noisier ratios)")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.warmup, args.repeats, args.steps = 1, 3, 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        import diffusers
    except ImportError:
        raise SystemExit("this benchmark needs diffusers: pip install 'imgen[test]'")

    ours = unet_small(args.channels, args.resolution)
    nets = {"imgen": (ours, {"preset": "unet_small", **ours.config()})}
    for peer in args.peers.split(","):
        if peer == "ddpm":
            nets["diffusers_ddpm"] = matched_ddpm_layout(args.channels, args.resolution, n_params(ours))
        elif peer == "same":
            nets["diffusers_same"] = diffusers_same_layout(ours)
        else:
            raise SystemExit(f"unknown peer {peer!r}; choose from ddpm, same")
    for name, (net, _) in nets.items():
        gap = n_params(net) / n_params(ours) - 1
        if abs(gap) > 0.05:
            raise SystemExit(f"{name} has {n_params(net)} params vs imgen {n_params(ours)} ({gap:+.1%}); not matched")

    x = torch.randn(args.batch, args.channels, args.resolution, args.resolution)
    t = torch.rand(args.batch)
    opts = {k: torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True) for k, (net, _) in nets.items()}

    def train_step(name):
        net = nets[name][0]
        out = net(x, t) if name == "imgen" else net(x, 1000 * t).sample  # diffusers takes t in [0, 1000)
        loss = torch.nn.functional.mse_loss(out, x)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    for name in nets:
        for _ in range(args.warmup):
            train_step(name)
    times = {name: [] for name in nets}
    order = list(nets)
    for r in range(args.repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(name)
            times[name].append(time.perf_counter() - start)

    ips = {k: args.steps * args.batch / statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "train_throughput", "quick": args.quick,
        "step": "forward + MSE loss + backward + AdamW(fused) step",
        "resolution": args.resolution, "channels": args.channels, "batch": args.batch,
        "steps_per_measurement": args.steps, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "nets": {k: {"params": n_params(net), "images_per_s": round(ips[k], 2),
                     "seconds_per_measurement": [round(v, 3) for v in times[k]], "config": cfg}
                 for k, (net, cfg) in nets.items()},
    }
    for k in nets:
        if k != "imgen":
            result[f"speedup_vs_{k}"] = round(ips["imgen"] / ips[k], 3)
            # the same ratio taken per interleaved repeat, then the median: robust to load drifting
            result[f"paired_speedup_vs_{k}"] = round(statistics.median(
                b / a for a, b in zip(times["imgen"], times[k])), 3)
    if "diffusers_ddpm" in nets:
        result["target"] = "imgen >= 1.3x diffusers (ddpm layout, matched params)"
        result["meets_target"] = result["speedup_vs_diffusers_ddpm"] >= 1.3
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
