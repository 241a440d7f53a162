"""Token priors over a VQ tokenizer: the transformer (KV cache, causal/bidirectional), the autoregressive prior
(DALL-E/Parti) and MaskGIT, on tiny tokenizers trained a few steps in module fixtures."""
import math

import pytest
import torch

import imgen
from imgen.cli import main
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.checkpoint import load_tensors
from imgen.methods.maskgit import gamma_cosine
from imgen.methods.token_prior import filter_logits
from imgen.nn.transformer import TokenTransformer, Transformer
from imgen.train import Trainer, train

# shapes at 16 px through f = 4: a 4x4 grid of 16 codes
TOK_NET = {"quantizer": "vq_ema", "codebook_size": 16, "code_dim": 4, "base_channels": 8, "channel_mults": [1, 2, 4],
           "num_res_blocks": 1}
PRIOR_NET = {"dim": 32, "depth": 2, "heads": 2, "max_len": 24}


def tokenizer_config(data: DataConfig, steps: int = 20) -> Config:
    return Config(description="tiny tokenizer", data=data, net=NetConfig("vqvae", dict(TOK_NET)),
                  method=MethodConfig("vqvae", {}), train=TrainConfig(steps=steps, lr=3e-3, warmup=2, ckpt_every=10,
                                                                     log_every=5, ema_decay=0.9))


SHAPES = DataConfig("shapes", {"image_size": 16, "n": 256, "max_objects": 1}, batch_size=16)
DIGITS = DataConfig("digits", {}, batch_size=16)


def prior_config(method: str, tokenizer, data: DataConfig = SHAPES, steps: int = 6, **net) -> Config:
    causal = method == "token_ar"
    return Config(description="tiny token prior", data=data,
                  net=NetConfig("token_transformer", {**PRIOR_NET, "causal": causal, **net}),
                  method=MethodConfig(method, {"tokenizer": str(tokenizer), "cond_drop": 0.2}),
                  train=TrainConfig(steps=steps, lr=3e-3, warmup=1, ckpt_every=2, log_every=1, ema_decay=0.9),
                  sample=SampleConfig("euler", steps=4, cfg=2.0))


@pytest.fixture(scope="module")
def shapes_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "shapes"
    train(tokenizer_config(SHAPES), out, progress=False)
    return out


@pytest.fixture(scope="module")
def digits_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "digits"
    data = DataConfig("digits", {}, batch_size=16)
    cfg = tokenizer_config(data)
    cfg.net.options["channel_mults"] = [1, 2]  # 8x8 -> 4x4 tokens
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def ar_dir(tmp_path_factory, shapes_tok):
    out = tmp_path_factory.mktemp("ar") / "ar"
    train(prior_config("token_ar", shapes_tok), out, progress=False)
    return out


@pytest.fixture(scope="module")
def maskgit_dir(tmp_path_factory, digits_tok):
    out = tmp_path_factory.mktemp("mg") / "mg"
    train(prior_config("maskgit", digits_tok, DIGITS), out, progress=False)
    return out


def tiny_prior(causal: bool, **kw) -> TokenTransformer:
    torch.manual_seed(0)
    return TokenTransformer(3, 16, 16, [4, 4], vocab=["a", "red", "circle"], max_len=5, dim=32, depth=2, heads=2,
                            causal=causal, **kw).eval()


# ---- the transformer ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("adaln", [False, True])
def test_kv_cached_incremental_logits_equal_full_sequence_causal_logits(adaln):
    net = tiny_prior(causal=True, adaln=adaln)
    if adaln:  # adaLN-Zero starts as the identity: give the modulation weights so the cache must carry c
        for p in net.trunk.parameters():
            if p.ndim == 2 and not p.any():
                torch.nn.init.normal_(p, std=0.1)
    ids = torch.randint(0, 16, (3, 16))
    prefix = net.condition({"caption": ["a red circle", "circle", "red"], "drop": torch.tensor([False, True, False])}, 3)
    with torch.no_grad():
        full = net(ids, prefix)  # (3, 5 + 16, 16)
        cache = net.new_cache(3)
        steps = [net(ids[:, :2], prefix, cache)]  # the prefix and two tokens in one chunk, then one at a time
        steps += [net(ids[:, i:i + 1], None, cache) for i in range(2, 16)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert cache.length == full.shape[1]


def test_adaln_modulates_every_block_by_the_condition_and_starts_as_the_identity():
    net = tiny_prior(causal=True, adaln=True)
    ids = torch.randint(0, 16, (2, 16))
    prefix = net.condition({"caption": ["a red circle", "circle"]}, 2)
    mods = [b.adaLN_modulation for b in net.trunk.blocks]
    assert len(mods) == net.trunk.depth and all(not m[-1].weight.any() and not m[-1].bias.any() for m in mods)
    with torch.no_grad():
        plain = net.head(net.trunk.ln_f(torch.cat([prefix, net.token_emb(ids)], 1) + net.trunk.pos_emb[:21]))
        assert torch.allclose(net(ids, prefix), plain, atol=1e-6)  # zero gates: every block is the identity
        for m in mods:
            torch.nn.init.normal_(m[-1].weight, std=0.1)
        x, c = torch.randn(2, 6, 32), torch.randn(2, 32)
        for block in net.trunk.blocks:  # the same tokens under two conditions: each block's output moves
            assert (block(x, c=c) - block(x, c=-c)).abs().amax() > 1e-3
    with pytest.raises(ImgenError, match="prefix on its first call"):
        net(ids[:, :1], None, net.new_cache(2))


def test_bidirectional_mode_sees_the_future_and_causal_mode_does_not():
    x = torch.randn(2, 10, 32)
    y = x.clone()
    y[:, -1] = torch.randn(2, 32)  # change only the last position
    for causal in (True, False):
        torch.manual_seed(0)
        trunk = Transformer(32, 2, 2, 10, causal=causal).eval()
        with torch.no_grad():
            early = (trunk(x)[:, :-1] - trunk(y)[:, :-1]).abs().max()
        assert (early == 0) if causal else (early > 1e-4)


def test_a_sequence_longer_than_max_len_gets_one_clear_error():
    net = tiny_prior(causal=True)
    cache = net.new_cache(1)
    net(torch.zeros(1, 16, dtype=torch.long), net.condition({"caption": ["red"]}, 1), cache)
    with pytest.raises(ImgenError, match="max_len"):
        net(torch.zeros(1, 1, dtype=torch.long), None, cache)


# ---- sampling filters -----------------------------------------------------------------------------------------
def test_top_p_keeps_the_smallest_most_likely_set_whose_mass_reaches_p():
    torch.manual_seed(0)
    logits = torch.randn(50, 40) * 2
    for p in (0.3, 0.7, 0.95):
        kept = filter_logits(logits, top_p=p).isfinite()
        probs = logits.softmax(-1)
        mass = (probs * kept).sum(-1)
        least = torch.where(kept, probs, torch.inf).min(-1).values
        assert (mass >= p - 1e-6).all() and (mass - least < p).all()
        assert (torch.where(kept, probs, torch.inf).min(-1).values >= torch.where(kept, 0, probs).max(-1).values).all()


def test_top_k_keeps_exactly_the_k_largest_logits():
    logits = torch.randn(8, 30)
    kept = filter_logits(logits, top_k=5).isfinite()
    assert (kept.sum(-1) == 5).all() and kept.gather(1, logits.topk(5).indices).all()


def test_ar_sampling_with_top_k_1_is_greedy_and_deterministic(ar_dir):
    m = imgen.load(ar_dir)
    cond = {**m.net.encode(["a red circle", "a blue square"]), "drop": torch.zeros(2, dtype=torch.bool)}
    a = m.method.sample_tokens(m.net, 2, cond, torch.Generator().manual_seed(0), top_k=1)
    b = m.method.sample_tokens(m.net, 2, cond, torch.Generator().manual_seed(1), top_k=1)
    assert torch.equal(a, b)
    with torch.no_grad():  # every token is the argmax given the tokens before it
        logits = m.net(a[:, :-1], m.net.condition(cond, 2))[:, m.net.prefix_len - 1:]
    assert torch.equal(logits.argmax(-1), a)


def test_ar_sampling_with_and_without_the_kv_cache_draws_the_same_tokens_in_n_calls(ar_dir):
    m = imgen.load(ar_dir)
    cond = {**m.net.encode(["a green triangle"] * 3), "drop": torch.zeros(3, dtype=torch.bool)}
    calls = []
    hook = m.net.register_forward_hook(lambda *_: calls.append(1))
    cached = m.method.sample_tokens(m.net, 3, cond, torch.Generator().manual_seed(5), cfg=2.0)
    hook.remove()
    plain = m.method.sample_tokens(m.net, 3, cond, torch.Generator().manual_seed(5), cfg=2.0, use_cache=False)
    assert torch.equal(cached, plain) and len(calls) == m.net.num_tokens == 16


def test_sliding_window_draws_wider_scenes_and_at_the_trained_width_is_plain_sampling(ar_dir):
    m = imgen.load(ar_dir)
    cond = {**m.net.encode(["a red circle", "a blue square"]), "drop": torch.zeros(2, dtype=torch.bool)}
    plain = m.method.sample_tokens(m.net, 2, cond, torch.Generator().manual_seed(4), cfg=2.0, use_cache=False)
    same = m.method.sample_wide(m.net, 2, 4, cond, torch.Generator().manual_seed(4), cfg=2.0)
    assert torch.equal(same.flatten(1), plain)
    calls = []
    hook = m.net.register_forward_hook(lambda *_: calls.append(1))
    wide = m.method.sample_wide(m.net, 2, 7, cond, torch.Generator().manual_seed(4))
    hook.remove()
    assert wide.shape == (2, 4, 7) and len(calls) == 4 * 7 and wide.max() < m.net.codebook_size
    assert m.method.decode_wide(wide).shape == (2, 3, 16, 28)
    with pytest.raises(ImgenError, match="width"):
        m.method.sample_wide(m.net, 2, 3, cond)


# ---- MaskGIT ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 4, 8])
def test_maskgit_unmasks_every_token_in_exactly_steps_calls_following_the_cosine_schedule(maskgit_dir, steps):
    m = imgen.load(maskgit_dir)
    n_tokens, mask_id = m.net.num_tokens, m.net.codebook_size
    calls, masked = [], []
    hook = m.net.register_forward_hook(lambda *_: calls.append(1))
    ids = m.method.sample_tokens(m.net, 4, {"label": torch.arange(4)}, steps, torch.Generator().manual_seed(0),
                                 callback=lambda t, x: masked.append((x == mask_id).sum(1).tolist()))
    hook.remove()
    assert len(calls) == steps and not (ids == mask_id).any() and ids.max() < mask_id
    expected = [min(n_tokens - t - 1, math.floor(gamma_cosine((t + 1) / steps) * n_tokens)) for t in range(steps)]
    expected[-1] = 0
    assert masked == [[e] * 4 for e in expected]


def test_maskgit_training_masks_ceil_gamma_r_n_tokens_with_r_uniform(maskgit_dir):
    m = imgen.load(maskgit_dir)
    m.method.bind(maskgit_dir)
    counts = []
    hook = m.net.register_forward_hook(lambda mod, args, out: counts.extend((args[0] == 16).sum(1).tolist()))
    batch = {"image": torch.zeros(64, 1, 8, 8), "label": torch.zeros(64, dtype=torch.long)}
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        m.method.loss(m.net, batch, gen)
    hook.remove()
    n = m.net.num_tokens
    r = torch.linspace(0, 1, 100_001)
    expected = torch.ceil(gamma_cosine(r) * n).clamp(1, n).mean()  # E over r ~ U(0, 1), sec. 3.2
    assert min(counts) >= 1 and max(counts) <= n
    assert abs(sum(counts) / len(counts) - float(expected)) < 0.05 * n
    assert abs(gamma_cosine(0.0) - 1) < 1e-12 and abs(gamma_cosine(1.0)) < 1e-12


def test_guided_logits_are_uncond_plus_scale_times_the_difference(maskgit_dir):
    m = imgen.load(maskgit_dir)
    cond, uncond = torch.randn(3, 16), torch.randn(3, 16)
    assert torch.allclose(m.method.guide(torch.cat([cond, uncond]), 3.0), uncond + 3 * (cond - uncond))
    assert torch.equal(m.method.guide(cond, 1.0), cond)
    rows = []
    hook = m.net.register_forward_hook(lambda mod, args, out: rows.append(len(out)))
    m.sample(2, labels=[1, 2], steps=2, cfg=3.0)
    m.sample(2, labels=[1, 2], steps=2, cfg=1.0)
    hook.remove()
    assert rows == [4, 4, 2, 2]  # guided: the condition and the null condition in one batch


# ---- model directories, CLI, Trainer ----------------------------------------------------------------------------
def test_ar_model_directory_round_trips_and_generates_from_prompts(ar_dir, tmp_path):
    m = imgen.load(ar_dir)
    assert (ar_dir / "tokenizer" / "config.json").is_file() and m.is_text
    x = m.generate(["a red circle", "a blue square"], n=2, seed=3, top_p=0.9, temperature=0.8)
    assert x.shape == (4, 3, 16, 16) and x.abs().max() <= 1
    again = imgen.load(ar_dir).generate(["a red circle", "a blue square"], n=2, seed=3, top_p=0.9, temperature=0.8)
    assert torch.equal(x, again)
    ema = load_tensors(ar_dir / "ema.safetensors")
    assert all(torch.equal(v, m.net.state_dict()[k]) for k, v in ema.items())
    assert main(["generate", "a red circle", "--model", str(ar_dir), "--out", str(tmp_path / "g.png"), "--n", "2",
                 "--top-k", "4", "--top-p", "0.9", "--temperature", "0.9"]) == 0
    assert (tmp_path / "g.png").is_file()


def test_reranked_generate_keeps_per_prompt_the_candidate_clip_scores_best(ar_dir, tmp_path, capsys):
    from imgen.images import adapt_images
    from imgen.rerank import load_reranker

    m, prompts = imgen.load(ar_dir), ["a red circle", "a blue square at the top"]
    x = m.generate(prompts, n=2, seed=3, rerank=3, reranker="shapes-scenes-clip")
    assert x.shape == (4, 3, 16, 16)
    texts = [p for p in prompts for _ in range(2)]
    candidates = m.generate(texts, n=3, seed=3).view(4, 3, 3, 16, 16)  # the same draws, not reranked
    clip = load_reranker("shapes-scenes-clip")
    big = adapt_images(candidates.flatten(0, 1), 3, 32)  # at the CLIP's image size
    score = (clip.encode_image(big).view(4, 3, -1) * clip.encode_text(texts)[:, None]).sum(-1)  # (4, 3) cosines
    assert torch.equal(x, candidates[torch.arange(4), score.argmax(1)])
    assert torch.equal(x, imgen.load(ar_dir).generate(prompts, n=2, seed=3, rerank=3, reranker="shapes-scenes-clip"))
    assert main(["generate", "a red circle", "--model", str(ar_dir), "--out", str(tmp_path / "r.png"),
                 "--rerank", "2", "--reranker", "shapes-scenes-clip"]) == 0
    for argv, message in ((["--rerank", "2"], "names none"), (["--rerank", "0"], "--rerank must be >= 1"),
                          (["--rerank", "2", "--reranker", str(ar_dir)], "not a CLIP model directory")):
        assert main(["generate", "a red circle", "--model", str(ar_dir), "--out", str(tmp_path / "e.png"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("imgen: error:") and message in err and "Traceback" not in err


def test_cli_samples_a_class_conditional_maskgit_with_steps_and_top_k(maskgit_dir, tmp_path):
    assert main(["sample", str(maskgit_dir), "--label", "3", "--n", "4", "--steps", "3", "--top-k", "5",
                 "--cfg", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    assert main(["sample", str(maskgit_dir), "--label", "3", "--steps", "99", "--out", str(tmp_path / "t.png")]) == 2


def test_a_frozen_clip_text_tower_conditions_the_prior_and_stays_frozen(shapes_tok, tmp_path):
    from imgen.pretrained import resolve_model_path

    out = tmp_path / "clip-prior"
    train(prior_config("maskgit", shapes_tok, steps=2, text_encoder="shapes-clip"), out, progress=False)
    clip = load_tensors(resolve_model_path("shapes-clip") / "model.safetensors")
    m = imgen.load(out)
    tower = {k: v for k, v in m.net.state_dict().items() if k.startswith("text_encoder.")}
    assert tower and all(torch.equal(v, clip[k]) for k, v in tower.items())  # loaded, and not trained
    assert m.generate(["a red circle"], n=2, steps=2).shape == (2, 3, 16, 16)
    with pytest.raises(ImgenError, match="max_len"):
        train(prior_config("maskgit", shapes_tok, steps=1, text_encoder="shapes-clip", max_len=40), tmp_path / "x",
              progress=False)


def test_resume_through_the_trainer_equals_an_uninterrupted_run(digits_tok, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(prior_config("token_ar", digits_tok, DIGITS, steps=4), full, progress=False)
    train(prior_config("token_ar", digits_tok, DIGITS, steps=2), part, progress=False)
    Trainer(prior_config("token_ar", digits_tok, DIGITS, steps=4), part, progress=False).fit()
    a, b = load_tensors(full / "model.safetensors"), load_tensors(part / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_or_wrong_tokenizer_gets_one_clear_error(tmp_path, ar_dir):
    with pytest.raises(ImgenError, match="method.options.tokenizer=DIR"):
        train(prior_config("token_ar", ""), tmp_path / "a", progress=False)
    with pytest.raises(ImgenError, match="not a model directory"):
        train(prior_config("maskgit", tmp_path / "nowhere"), tmp_path / "b", progress=False)
    with pytest.raises(ImgenError, match="not an image tokenizer"):
        train(prior_config("token_ar", _flow_dir(tmp_path)), tmp_path / "c", progress=False)
    with pytest.raises(ImgenError, match="causal"):
        train(prior_config("token_ar", ar_dir / "tokenizer", causal=False), tmp_path / "d", progress=False)
    with pytest.raises(ImgenError, match="negative prompt"):
        imgen.load(ar_dir).generate(["a red circle"], negative="a blue square")
    with pytest.raises(ImgenError, match="top_p"):
        imgen.load(ar_dir).generate(["a red circle"], top_p=1.5)


def _flow_dir(tmp_path):
    from conftest import tiny_config

    out = tmp_path / "flow"
    train(tiny_config(steps=1), out, progress=False)
    return out


@pytest.mark.slow
def test_the_ar_prior_learns_digit_tokens_well_below_the_uniform_code_length(digits_tok, tmp_path):
    import json

    cfg = prior_config("token_ar", digits_tok, DIGITS, steps=300, dim=64)
    cfg.data.batch_size = 64
    train(cfg, tmp_path / "ar", progress=False)
    log = [json.loads(line) for line in (tmp_path / "ar" / "log.jsonl").read_text().splitlines()]
    late = sum(r["loss"] for r in log[-20:]) / 20
    m = imgen.load(tmp_path / "ar")
    ids = m.method.encode(load_dataset("digits").get(list(range(1797)))["image"])
    p = torch.bincount(ids.flatten(), minlength=16).double() / ids.numel()
    marginal = float(-(p[p > 0] * p[p > 0].log()).sum())  # nats per token of a model that ignores context
    print(f"loss {late:.3f} nats/token; marginal entropy {marginal:.3f}; uniform {math.log(16):.3f}")
    assert late < 0.5 * math.log(16) and late < 0.7 * marginal, (late, marginal)


def test_text_pool_conditions_on_the_clip_pooled_caption_embedding_as_one_prefix_token(shapes_tok, tmp_path):
    out = tmp_path / "pooled-prior"
    train(prior_config("token_ar", shapes_tok, steps=2, text_encoder="shapes-clip", text_pool=True), out,
          progress=False)
    m = imgen.load(out)
    enc = m.net.encode(["a red circle", "a big blue square at the top"])
    prefix = m.net.condition({**enc, "drop": torch.tensor([False, True])}, 2)
    assert prefix.shape == (2, 1, PRIOR_NET["dim"]) and m.net.prefix_len == 1
    pooled = m.net.text_encoder(enc["text"], enc["text_mask"])[1]
    assert torch.allclose(prefix[0, 0], m.net.text_proj(pooled[0]))  # the tower's pooled embedding, projected
    assert torch.equal(prefix[1], m.net.null_prefix)  # a dropped caption: the learned null prefix
    assert m.generate(["a red circle"], n=2, top_k=4).shape == (2, 3, 16, 16)
    with pytest.raises(ImgenError, match="text_pool"):
        tiny_prior(True, text_pool=True)  # learned word embeddings have no pooled embedding
