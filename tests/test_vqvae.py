"""VQ-VAE and VQGAN tokenizers (imgen.nn.vqvae, imgen.methods.vqvae, imgen.methods.vqgan): every quantizer gives an
(h, w) grid of int64 ids in [0, vocab) whose decoding is the net's own reconstruction, the loss falls with codebook
usage logged, a model directory exposes encode_tokens/decode_tokens/token_grid/vocab_size, eq. 7's adaptive weight
is the ratio of the two gradient norms, the discriminator waits for disc_start, a killed VQGAN run resumes
byte-identically, bad input gets one clear error, and (slow) shapes-vqvae's tokens reconstruct shapes scenes."""
import json
import sys

import pytest
import torch

import imgen
from conftest import kill9_and_rerun
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, TrainConfig
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.methods import build_method
from imgen.nn import build_net
from imgen.nn.vqvae import QUANTIZERS
from imgen.train import Trainer, train

TINY = {"codebook_size": 16, "code_dim": 4, "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1}


def tiny_config(steps: int = 30, quantizer: str = "vq_ema", method: str = "vqvae", **method_options) -> Config:
    net = {**TINY, "quantizer": quantizer, **({"discriminator": {"base_channels": 8, "num_layers": 2}}
                                             if method == "vqgan" else {})}
    return Config(description="tiny tokenizer", data=DataConfig("shapes", {"image_size": 16, "n": 512}, batch_size=16),
                  net=NetConfig("vqvae", net), method=MethodConfig(method, method_options),
                  train=TrainConfig(steps=steps, lr=3e-3, warmup=2, ckpt_every=10, log_every=5, ema_decay=0.9))


def images(n: int = 8, size: int = 16, seed: int = 1) -> torch.Tensor:
    return load_dataset("shapes", image_size=size, n=n, seed=seed).get(list(range(n)))["image"]


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vq") / "vq"
    train(tiny_config(steps=30), out, progress=False)
    return out


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_every_quantizer_tokenizes_to_an_int64_grid_whose_decoding_is_the_nets_reconstruction(quantizer):
    torch.manual_seed(0)
    options = {"levels": [4, 4]} if quantizer == "fsq" else None  # 16 codes
    net = build_net("vqvae", in_channels=3, image_size=16, quantizer=quantizer, quantizer_options=options, **TINY).eval()
    x = images()
    ids = net.encode_tokens(x)
    assert net.token_grid == (8, 8) and net.codebook_size == 16
    assert ids.dtype == torch.int64 and tuple(ids.shape) == (8, *net.token_shape)
    assert ids.min() >= 0 and ids.max() < 16
    x_hat, indices, aux = net(x)
    assert torch.equal(indices, ids) and aux.ndim == 0 and torch.isfinite(aux)
    # the straight-through forward value is exactly the decoding of the chosen codes
    assert torch.allclose(net.decode_tokens(ids), x_hat, atol=1e-5) and x_hat.shape == x.shape
    # re-quantizing the codes of the ids gives the same ids back (a code is its own nearest code / its own sign); not
    # for residual VQ (greedy levels re-encode a sum of codes differently) nor FSQ (its tanh bound moves the codes)
    if quantizer in ("vq", "vq_ema", "lfq"):
        assert torch.equal(net.quantizer(net.quantizer.indices_to_codes(ids))[1], ids)


def test_vqvae_loss_falls_and_logs_codebook_usage_and_perplexity(vq_dir):
    log = [json.loads(line) for line in (vq_dir / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and log[-1]["loss"] < 0.6 * log[0]["loss"], [r["loss"] for r in log]
    for r in log:
        assert 0 < r["usage"] <= 1 and 1 <= r["perplexity"] <= 16


def test_a_tokenizer_directory_loads_with_the_token_interface(vq_dir):
    m = imgen.load(vq_dir)
    assert m.token_grid == (8, 8) and m.vocab_size == 16 and m.token_shape == (8, 8)
    x = images(6)
    ids = m.encode_tokens(x)
    assert ids.dtype == torch.int64 and ids.shape == (6, 8, 8) and 0 <= ids.min() and ids.max() < m.vocab_size
    out = m.decode_tokens(ids)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert torch.equal(m.reconstruct(x), out)
    assert torch.equal(m.decode_tokens(ids.tolist()), out)  # plain lists of ints are ids too


def test_bad_tokens_images_options_and_sampling_get_one_clear_error(vq_dir, capsys):
    from imgen.cli import main

    m = imgen.load(vq_dir)
    ids = m.encode_tokens(images(2))
    with pytest.raises(ImgenError, match="integer tensor of token ids"):
        m.decode_tokens(ids.float())
    with pytest.raises(ImgenError, match=r"shaped \(B, 8, 8\)"):
        m.decode_tokens(ids[:, :4])
    with pytest.raises(ImgenError, match=r"\[0, 16\)"):
        m.decode_tokens(ids + 16)
    with pytest.raises(ImgenError, match=r"expects images shaped \(B, 3, 16, 16\)"):
        m.encode_tokens(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ImgenError, match="encode_tokens"):
        m.encode(images(2))
    with pytest.raises(ImgenError, match="no prior"):
        m.sample(2)
    assert main(["sample", str(vq_dir), "--n", "2", "--out", str(vq_dir / "s.png")]) != 0
    err = capsys.readouterr().err
    assert err.count("imgen: error:") == 1 and "token model" in err and "Traceback" not in err
    with pytest.raises(ImgenError, match="levels whose product is codebook_size 16"):
        build_net("vqvae", in_channels=3, image_size=16, quantizer="fsq", **TINY)
    with pytest.raises(ImgenError, match="power-of-two"):
        build_net("vqvae", in_channels=3, image_size=16, quantizer="lfq", **{**TINY, "codebook_size": 24})
    with pytest.raises(ImgenError, match="unknown quantizer 'pq'"):
        build_net("vqvae", in_channels=3, image_size=16, quantizer="pq", **TINY)
    with pytest.raises(ImgenError, match="quantizer_options"):
        build_net("vqvae", in_channels=3, image_size=16, quantizer="vq", quantizer_options={"decay": 0.9}, **TINY)
    with pytest.raises(ImgenError, match="unknown reconstruction loss"):
        build_method("vqvae", recon="l3")
    with pytest.raises(ImgenError, match="needs an image tokenizer"):
        imgen.load("shapes-ae").token_grid
