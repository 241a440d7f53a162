"""Vector quantizers (imgen.nn.quantize): straight-through gradients, nearest-code lookup, each loss against
its formula, EMA updates and dead-code restart, residual refinement, FSQ/LFQ index algebra, LFQ's entropy
loss, codebook statistics, clear errors, and a 2D fit. All on one thread, the whole file in a few seconds."""
import itertools
import math

import pytest
import torch

from imgen.errors import ImgenError
from imgen.nn.quantize import FSQ, LFQ, EMAVectorQuantizer, ResidualVectorQuantizer, VectorQuantizer, codebook_stats


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


QUANTIZERS = {
    "vq": lambda: VectorQuantizer(32, 4),
    "ema": lambda: EMAVectorQuantizer(32, 4),
    "rvq": lambda: ResidualVectorQuantizer(16, 4, num_quantizers=3),
    "fsq": lambda: FSQ([8, 5, 5, 3]),
    "lfq": lambda: LFQ(4),
}


def as_vectors(z):
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def gaussian_mixture(n, generator, k=8, radius=2.0, std=0.1):
    """n points of the 2D ring of k Gaussians, as z of shape (n, 2, 1, 1)."""
    angle = 2 * math.pi * torch.randint(k, (n,), generator=generator) / k
    centres = radius * torch.stack([angle.cos(), angle.sin()], 1)
    return (centres + std * torch.randn(n, 2, generator=generator)).view(n, 2, 1, 1)


@pytest.mark.parametrize("name", QUANTIZERS)
def test_interface_shapes_and_straight_through_gradient(name):
    q = QUANTIZERS[name]()
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    z_q, indices, aux_loss = q(z)
    assert z_q.shape == z.shape and aux_loss.shape == ()
    expected = (2, 3, 5, 3) if name == "rvq" else (2, 3, 5)
    assert indices.shape == expected and indices.dtype == torch.int64
    assert 0 <= int(indices.min()) and int(indices.max()) < q.codebook_size
    upstream = torch.randn_like(z)
    (z_q * upstream).sum().backward()
    if name == "fsq":  # FSQ's straight-through is on the rounding only; the gradient passes its tanh bound
        z2 = z.detach().clone().requires_grad_(True)
        (q.bound(z2) / (q._levels.view(1, -1, 1, 1) // 2) * upstream).sum().backward()
        torch.testing.assert_close(z.grad, z2.grad)
    else:
        torch.testing.assert_close(z.grad, upstream)


@pytest.mark.parametrize("name", QUANTIZERS)
def test_indices_to_codes_decodes_z_q(name):
    q = QUANTIZERS[name]()
    q.train()
    q(torch.randn(8, 4, 4, 4))  # initialise / move the EMA codebooks once
    q.eval()  # in training mode the EMA codebook moves after the lookup
    z_q, indices, _ = q(torch.randn(3, 4, 4, 4))
    torch.testing.assert_close(q.indices_to_codes(indices), z_q)


@pytest.mark.parametrize("cls", [VectorQuantizer, EMAVectorQuantizer])
def test_assignment_is_the_brute_force_nearest_code(cls):
    q = cls(64, 8).eval()
    z = torch.randn(4, 8, 6, 6)
    _, indices, _ = q(z)
    brute = torch.cdist(as_vectors(z).double(), q.codebook.detach().double()).argmin(1)
    assert torch.equal(indices.flatten(), brute)


def test_vq_loss_is_codebook_plus_beta_commitment_and_trains_the_codebook():
    q = VectorQuantizer(16, 3, beta=0.25)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    _, indices, loss = q(z)
    e = q.codebook[indices].permute(0, 3, 1, 2)
    squared = ((z - e) ** 2).mean()
    torch.testing.assert_close(loss, squared + 0.25 * squared)  # eq. 3: same value, different stop-gradients
    loss.backward()
    # d/de of ||sg[z] - e||^2 (the codebook term only) and d/dz of beta ||z - sg[e]||^2
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z - e).detach() / z.numel())
    assert q.codebook.grad.abs().sum() > 0


def test_ema_codebook_moves_to_the_smoothed_running_means_and_not_in_eval():
    q = EMAVectorQuantizer(4, 2, decay=0.9, eps=1e-5, data_init=False)
    old = q.codebook.clone()
    z = old[torch.randint(4, (64,))] + 0.3 * torch.randn(64, 2)  # every code gets points near it
    z = z.view(64, 2, 1, 1)
    q.eval()
    q(z)
    assert torch.equal(q.codebook, old) and torch.equal(q.cluster_size, torch.ones(4))
    q.train()
    _, indices, _ = q(z)
    flat, idx = as_vectors(z), indices.flatten()
    counts = torch.bincount(idx, minlength=4).float()
    means = torch.stack([flat[idx == k].mean(0) for k in range(4)])
    n_k = 0.9 * 1 + 0.1 * counts
    m_k = 0.9 * old + 0.1 * counts[:, None] * means
    smoothed = (n_k + 1e-5) / (n_k.sum() + 4e-5) * n_k.sum()
    torch.testing.assert_close(q.codebook, m_k / smoothed[:, None])
    assert ((q.codebook - means).norm(dim=1) < (old - means).norm(dim=1)).all()
    assert set(q.state_dict()) >= {"codebook", "cluster_size", "embed_sum", "unused_steps"}


def test_dead_codes_are_restarted_onto_encoder_outputs():
    q = EMAVectorQuantizer(4, 2, restart_after=3, data_init=False)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [0.1, 0.0], [50.0, 50.0], [-50.0, 50.0]]))
        q.embed_sum.copy_(q.codebook)
    z = (0.05 * torch.randn(32, 2)).view(32, 2, 1, 1)  # only codes 0 and 1 are ever nearest
    for step in range(3):
        q(z)
        if step < 2:  # not yet restart_after unused updates: still far away (only Laplace smoothing moves them)
            torch.testing.assert_close(q.codebook[2:], torch.tensor([[50.0, 50.0], [-50.0, 50.0]]), rtol=1e-3, atol=0)
    batch = as_vectors(z)
    for code in q.codebook[2:]:
        assert torch.cdist(code[None], batch).min() < 1e-6  # now equal to an encoder output of the batch
    assert (q.unused_steps[2:] == 0).all()


def test_rvq_residual_error_decreases_with_each_quantizer():
    g = torch.Generator().manual_seed(1)
    q = ResidualVectorQuantizer(16, 4, num_quantizers=4, decay=0.8)
    for _ in range(10):
        q(torch.randn(64, 4, 2, 2, generator=g))
    q.eval()
    z = torch.randn(64, 4, 2, 2, generator=g)
    _, indices, _ = q(z)
    errors = [((q.indices_to_codes(indices[..., :n]) - z) ** 2).mean().item() for n in range(1, 5)]
    assert errors[0] < (z ** 2).mean().item()
    assert all(b < a for a, b in zip(errors, errors[1:])), errors


def test_fsq_codebook_is_the_product_of_levels_and_indices_round_trip():
    q = FSQ([8, 5, 5, 3])
    assert q.codebook_size == 8 * 5 * 5 * 3
    every = torch.arange(q.codebook_size).view(1, 1, -1)  # (1, 1, K) as (B, H, W)
    codes = q.indices_to_codes(every)
    assert codes.abs().max() <= 1
    z_q, back, _ = q(fsq_preimage(q, codes))
    assert torch.equal(back, every)
    torch.testing.assert_close(z_q, codes)
    _, indices, loss = q(10 * torch.randn(16, 4, 4, 4))  # saturated inputs stay in range
    assert 0 <= int(indices.min()) and int(indices.max()) < q.codebook_size and loss.item() == 0


def fsq_preimage(q, codes):
    """An input whose bounded value is exactly the code's integer (inverse of FSQ.bound at the grid points)."""
    levels = q._levels.view(1, -1, 1, 1).float()
    half_l = (levels - 1) * (1 + q.eps) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    integers = codes * (levels // 2)
    return torch.atanh((integers + offset) / half_l) - torch.atanh(offset / half_l)


def test_lfq_index_code_round_trip_over_all_codes():
    q = LFQ(5)
    assert q.codebook_size == 32
    every = torch.arange(32).view(1, 1, -1)
    codes = q.indices_to_codes(every)
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    assert codes[0, :, 0, 5].tolist() == [-1, -1, 1, -1, 1]  # 5 = 0b00101, channel 0 most significant
    z_q, back, _ = q(0.7 * codes)
    assert torch.equal(back, every)
    torch.testing.assert_close(z_q, codes)
    assert len({tuple(c) for c in codes[0, :, 0].t().tolist()}) == 32


def test_lfq_entropy_loss_prefers_confident_uniform_usage():
    q = LFQ(4, temperature=0.1)
    codes = q.indices_to_codes(torch.arange(16).view(1, 1, -1))
    uniform_confident = codes.repeat(4, 1, 1, 1)  # every code equally often, each z on its code
    collapsed = codes[..., :1].expand(4, 4, 1, 16).contiguous()  # one code for all
    unsure = 0.01 * torch.randn(4, 4, 1, 16)  # near the origin: each z spread over all codes
    losses = {}
    for name, z in [("uniform", uniform_confident), ("collapsed", collapsed), ("unsure", unsure)]:
        per_sample, batch = q.entropies(z)
        losses[name] = (per_sample - batch).item()
    assert losses["uniform"] < losses["collapsed"] and losses["uniform"] < losses["unsure"]
    assert losses["uniform"] == pytest.approx(-math.log(16), abs=1e-3)  # the minimum, -log(codebook_size)


def test_lfq_factorized_entropies_match_exact_ones():
    z = torch.randn(3, 6, 2, 2)
    exact = LFQ(6, temperature=0.5).entropies(z)
    import imgen.nn.quantize as quantize
    before = quantize.LFQ_EXACT_MAX_DIM
    quantize.LFQ_EXACT_MAX_DIM = 0
    try:
        factorized = LFQ(6, temperature=0.5).entropies(z)
    finally:
        quantize.LFQ_EXACT_MAX_DIM = before
    torch.testing.assert_close(factorized[0], exact[0])  # per-sample entropy factorizes exactly
    assert factorized[1] >= exact[1] - 1e-5  # the batch entropy is bounded above by the sum over bits


def test_codebook_stats_on_known_indices():
    stats = codebook_stats(torch.tensor([[0, 0], [1, 1]]), 4)
    assert stats["usage"] == 0.5 and stats["perplexity"] == pytest.approx(2.0)
    stats = codebook_stats(torch.arange(8).view(2, 2, 2), 8)
    assert stats["usage"] == 1.0 and stats["perplexity"] == pytest.approx(8.0)
    with pytest.raises(ImgenError, match="codebook_size"):
        codebook_stats(torch.tensor([5]), 4)


@pytest.mark.parametrize("name", QUANTIZERS)
def test_wrong_channel_count_is_a_clear_error(name):
    with pytest.raises(ImgenError, match=r"expects z of shape \(B, 4, H, W\).*got \(2, 3, 4, 4\)"):
        QUANTIZERS[name]()(torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("build, match", [
    (lambda: VectorQuantizer(0, 4), "codebook_size"),
    (lambda: VectorQuantizer(8, 4, beta=-1), "beta"),
    (lambda: EMAVectorQuantizer(8, 4, decay=1.0), "decay"),
    (lambda: EMAVectorQuantizer(8, 4, restart_after=0), "restart_after"),
    (lambda: ResidualVectorQuantizer(8, 4, num_quantizers=0), "num_quantizers"),
    (lambda: ResidualVectorQuantizer(8, 4, bogus=1), "bogus"),
    (lambda: FSQ([8, 1]), "levels"),
    (lambda: FSQ([]), "levels"),
    (lambda: LFQ(0), "dim"),
    (lambda: LFQ(4, temperature=0), "temperature"),
])
def test_bad_constructor_arguments_are_clear_errors(build, match):
    with pytest.raises(ImgenError, match=match):
        build()


def test_indices_out_of_range_are_a_clear_error():
    with pytest.raises(ImgenError, match=r"\[0, 16\)"):
        LFQ(4).indices_to_codes(torch.tensor([[[16]]]))


def test_ema_vq_fits_a_mixture_of_eight_gaussians():
    g = torch.Generator().manual_seed(0)
    q = EMAVectorQuantizer(16, 2, decay=0.9, restart_after=5)
    for _ in range(150):
        q(gaussian_mixture(256, g))
    q.eval()
    z = gaussian_mixture(2048, g)
    z_q, indices, _ = q(z)
    assert codebook_stats(indices, 16)["usage"] >= 0.9
    fixed = torch.randn(8, 2, generator=g)  # 8 random fixed codes
    fixed_mse = ((as_vectors(z)[:, None] - fixed) ** 2).sum(-1).min(1).values.mean() / 2
    assert ((z_q - z) ** 2).mean() < fixed_mse


def test_fsq_and_lfq_agree_with_vector_quantize_pytorch():
    import vector_quantize_pytorch as peer  # a test dependency (pyproject's test extra)
    z = torch.randn(2, 4, 3, 3)
    ours, peer_fsq = FSQ([8, 5, 5, 5]), peer.FSQ([8, 5, 5, 5])
    z_q, indices, _ = ours(z)
    peer_codes, peer_indices = peer_fsq(z)
    torch.testing.assert_close(z_q, peer_codes)
    assert torch.equal(indices, peer_indices.long())
    ours = LFQ(4, entropy_weight=1.0, commitment_weight=0.0, temperature=0.01)
    peer_lfq = peer.LFQ(dim=4, entropy_loss_weight=1.0, commitment_loss_weight=0.0).train()
    z = 0.05 * torch.randn(2, 4, 3, 3)
    z_q, indices, loss = ours(z)
    (peer_q, peer_indices, peer_loss), breakdown = peer_lfq(z, inv_temperature=100.0, return_loss_breakdown=True)
    torch.testing.assert_close(z_q, peer_q)
    assert torch.equal(indices, peer_indices.long())
    per_sample, batch = ours.entropies(z)
    torch.testing.assert_close(per_sample, breakdown.per_sample_entropy, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch, breakdown.batch_entropy, atol=1e-4, rtol=1e-4)


def test_ema_statistics_checkpoint_with_the_state_dict():
    q = ResidualVectorQuantizer(8, 4, num_quantizers=2)
    for _ in range(3):
        q(torch.randn(16, 4, 2, 2))
    fresh = ResidualVectorQuantizer(8, 4, num_quantizers=2)
    fresh.load_state_dict(q.state_dict())
    q.eval(), fresh.eval()
    z = torch.randn(4, 4, 2, 2)
    assert torch.equal(q(z)[1], fresh(z)[1])


def test_lfq_aux_loss_is_weighted_entropy_penalty_plus_commitment():
    q = LFQ(3, entropy_weight=0.1, commitment_weight=0.25, temperature=0.5)
    z = torch.randn(2, 3, 4, 4)
    _, _, loss = q(z)
    per_sample, batch = q.entropies(z)
    torch.testing.assert_close(loss, 0.1 * (per_sample - batch) + 0.25 * ((z - z.sign()) ** 2).mean())
