"""Image tokenizers on shapes at one token grid and codebook size: every quantizer of imgen.nn.quantize in the
shapes-vqvae tokenizer, the shapes-vqgan tokenizer, and vector-quantize-pytorch's EMA VQ in the same encoder/decoder.

All are 32x32 -> 8x8 tokens with 256 codes (rvq: 256 per level, RVQ_LEVELS levels; fsq: levels [8, 8, 4]; lfq: 8
bits), trained on shapes split="train" (seed 0) with the preset's budget and scored on 2,000 other scenes (seed 1):
  J["tokenizers"][name]  psnr (dB, mean over images, decode_tokens(encode_tokens(x)) against x), usage (fraction
                         of the 256 codes used on the 2,000 images; rvq: mean over levels), perplexity (exp of the
                         code entropy), fid (FID[shapes-eval] of the 2,000 reconstructions against the originals)
      names: vq, vq_ema, rvq, fsq, lfq (shapes-vqvae with that quantizer), vqgan (shapes-vqgan)
  J["peer"]["vq_ema"]    the same numbers for vector-quantize-pytorch's VectorQuantize (EMA codebook, decay 0.99,
                         commitment 0.25, k-means init, dead codes below EMA count 2 restarted, plain straight-through)
                         in place of imgen's EMAVectorQuantizer, trained by the same Trainer and config
  J["ratios"]            vq_ema_psnr_minus_peer (dB), vqgan_fid_over_vqvae_fid (vqvae = vq_ema, the preset's quantizer)

    OMP_NUM_THREADS=1 python benchmarks/tokenizers.py           # preset budgets; writes benchmarks/results/
    OMP_NUM_THREADS=1 python benchmarks/tokenizers.py --quick   # QUICK_STEPS steps each

Trained models are cached in OUT/<name> (--quick: OUT/quick/<name>); a rerun only evaluates.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

import imgen
from imgen.config import apply_overrides
from imgen.data import load_dataset
from imgen.metrics import load_evaluator, psnr
from imgen.metrics.fid import fid
from imgen.nn import NETS
from imgen.nn.quantize import codebook_stats
from imgen.nn.vqvae import VQAutoencoder
from imgen.presets import get_preset
from imgen.train import train

QUICK_STEPS, N_TEST, TEST_SEED, RVQ_LEVELS, BATCH = 150, 2000, 1, 2, 250
QUANTIZERS = ("vq", "vq_ema", "rvq", "fsq", "lfq")
RESULTS = Path(__file__).resolve().parent / "results" / "tokenizers.json"


class PeerEMAQuantizer(nn.Module):
    """vector-quantize-pytorch's VectorQuantize behind imgen's quantizer interface (z -> z_q, indices, aux_loss)."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.vq = VectorQuantize(dim=dim, codebook_size=codebook_size, decay=0.99, commitment_weight=0.25,
                                 kmeans_init=True, threshold_ema_dead_code=2, rotation_trick=False,
                                 accept_image_fmap=True)
        self.codebook_size, self.dim = codebook_size, dim

    def forward(self, z):
        z_q, indices, loss = self.vq(z)
        return z_q, indices, loss.sum()

    def indices_to_codes(self, indices):
        return self.vq.codebook[indices.long()].permute(0, 3, 1, 2)


def peer_vqvae(in_channels: int, image_size: int, quantizer: str = "vq_ema", codebook_size: int = 256,
               code_dim: int = 16, base_channels: int = 16, channel_mults=(1, 2, 4), num_res_blocks: int = 1,
               num_classes: int | None = None) -> VQAutoencoder:
    """imgen's tokenizer net (vq_ema options) with the peer's EMA quantizer in place of imgen's (num_classes:
    resolve_config offers one to nets it does not know; unused)."""
    net = VQAutoencoder(in_channels, image_size, quantizer, codebook_size, code_dim, None, base_channels,
                        channel_mults, num_res_blocks)
    net.quantizer = PeerEMAQuantizer(net.codebook_size, net.quantizer.dim)
    return net


def test_images() -> torch.Tensor:
    return load_dataset("shapes", image_size=32, split="train", seed=TEST_SEED, n=N_TEST).get(list(range(N_TEST)))["image"]


def configs(steps: int | None, only: list[str] | None = None) -> dict:
    out = {q: apply_overrides(get_preset("shapes-vqvae"), [f"net.options.quantizer={q}"]) for q in QUANTIZERS}
    out["rvq"].net.options["quantizer_options"] = {"num_quantizers": RVQ_LEVELS}
    if not only or "vqgan" in only:
        out["vqgan"] = get_preset("shapes-vqgan")
    out["peer_vq_ema"] = apply_overrides(get_preset("shapes-vqvae"), ["net.name=vqvae_peer"])
    order = ("vq_ema", "peer_vq_ema", "vqgan", "rvq", "fsq", "lfq", "vq")  # the targets' models first
    out = {k: out[k] for k in order if k in out and (not only or k in only)}
    for c in out.values():
        if steps is not None:
            scale = steps / c.train.steps
            c.train.steps, c.train.ckpt_every = steps, steps
            if "disc_start" in c.method.options:  # keep the discriminator's start at the same fraction of training
                c.method.options["disc_start"] = int(c.method.options["disc_start"] * scale)
    return out


@torch.no_grad()
def score(m, x: torch.Tensor, evaluator) -> dict:
    ids = torch.cat([m.encode_tokens(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
    x_hat = torch.cat([m.decode_tokens(ids[i:i + BATCH]) for i in range(0, len(x), BATCH)])
    levels = [ids[..., i] for i in range(ids.shape[-1])] if ids.ndim == 4 else [ids]
    stats = [codebook_stats(level, m.vocab_size) for level in levels]
    feats = [torch.cat([evaluator.features(v[i:i + BATCH]) for i in range(0, len(v), BATCH)]) for v in (x_hat, x)]
    return {"psnr": psnr(x_hat, x).mean().item(), "usage": sum(s["usage"] for s in stats) / len(stats),
            "perplexity": sum(s["perplexity"] for s in stats) / len(stats),
            "fid": fid(*feats, features="shapes-eval"), "token_shape": list(m.token_shape),
            "codebook_size": m.vocab_size}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} training steps per tokenizer (< 5 min)")
    p.add_argument("--out", default="runs/bench-tokenizers", help="cache folder for the trained tokenizers")
    p.add_argument("--json", default=None, help=f"write the JSON here (default without --quick: {RESULTS})")
    p.add_argument("--only", nargs="*", help="train and score only these names (default: all)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tic = time.perf_counter()
    out = Path(args.out) / ("quick" if args.quick else "")
    NETS["vqvae_peer"] = peer_vqvae  # the peer's model directory loads only inside this script
    x, evaluator = test_images(), load_evaluator("shapes-eval")
    J = {"quick": args.quick, "n_test": N_TEST, "token_grid": [8, 8], "codebook_size": 256, "tokenizers": {},
         "peer": {}, "train_seconds": {}, "steps": {}}
    for name, config in configs(QUICK_STEPS if args.quick else None, args.only).items():
        t0 = time.perf_counter()
        torch.manual_seed(0)
        train(config, out / name, progress=False)  # resumes / returns at once if already trained
        J["train_seconds"][name], J["steps"][name] = round(time.perf_counter() - t0, 1), config.train.steps
        result = score(imgen.load(out / name), x, evaluator)
        J["peer" if name.startswith("peer_") else "tokenizers"][name.removeprefix("peer_")] = result
        print(name, json.dumps(result), flush=True)
        write(J, args, partial=True)  # a long run interrupted keeps what it measured
    tok, peer = J["tokenizers"], J["peer"]
    J["ratios"] = {}
    if "vq_ema" in tok and "vq_ema" in peer:
        J["ratios"]["vq_ema_psnr_minus_peer"] = tok["vq_ema"]["psnr"] - peer["vq_ema"]["psnr"]
    if "vq_ema" in tok and "vqgan" in tok:
        J["ratios"]["vqgan_fid_over_vqvae_fid"] = tok["vqgan"]["fid"] / tok["vq_ema"]["fid"]
        J["ratios"]["vqgan_psnr_minus_vqvae"] = tok["vqgan"]["psnr"] - tok["vq_ema"]["psnr"]
    J["seconds"] = round(time.perf_counter() - tic, 1)
    print(json.dumps(J, indent=2))
    write(J, args, partial=False)
    return 0


def write(J: dict, args, partial: bool) -> None:
    """The JSON to --json (default without --quick: RESULTS), with "partial": true while tokenizers remain."""
    path = args.json or (None if args.quick else RESULTS)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({**J, "partial": partial}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
