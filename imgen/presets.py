"""Named, ready-to-train configs. Each trains in minutes on a 2-core CPU."""
from __future__ import annotations

from typing import Callable

from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.errors import ImgenError

# one res block per level: 0.76M params, ~1.5x the images/s of two blocks, and the digits bar (SVC >= 97%) is
# still met with a margin (flow matching, 1000 steps: 0.996; 600 steps: 0.99)
_DIGITS_UNET = {"base_channels": 32, "channel_mults": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4],
                "num_heads": 4}


def digits_flow() -> Config:
    """Class-conditional flow matching on sklearn's 8x8 digits: ~2 minutes on 2 cores."""
    return Config(
        description="class-conditional flow matching (rectified flow) on 8x8 digits, U-Net",
        data=DataConfig("digits", {"split": "all"}, batch_size=128),
        net=NetConfig("unet", dict(_DIGITS_UNET)),
        method=MethodConfig("flow_matching", {"cond_drop": 0.1}),
        train=TrainConfig(steps=1000, lr=2e-3, warmup=100, ema_decay=0.995, ckpt_every=250),
        sample=SampleConfig("euler", steps=25),
    )


def digits_ddpm() -> Config:
    """Class-conditional DDPM (cosine schedule, eps-prediction) on 8x8 digits."""
    c = digits_flow()
    c.description = "class-conditional DDPM (cosine, eps) on 8x8 digits, U-Net"
    c.method = MethodConfig("ddpm", {"schedule": "cosine", "prediction": "eps", "cond_drop": 0.1})
    # eps-prediction at 25 DDIM steps learns slowest of the digits presets (SVC accuracy 0.968 at 750 steps, 0.978
    # at 1000), so it trains 1500
    c.train.steps = 1500
    c.sample = SampleConfig("ddim", steps=25)
    return c


def digits_ncsn() -> Config:
    """Class-conditional NCSN (score matching at geometric noise levels) on 8x8 digits."""
    c = digits_flow()
    c.description = "class-conditional NCSN (denoising score matching, 20 levels) on 8x8 digits, U-Net"
    # sigma_max ~ the largest distance between two digits (9.6), Song & Ermon 2020 technique 1
    c.method = MethodConfig("ncsn", {"sigma_min": 0.01, "sigma_max": 10.0, "num_levels": 20, "cond_drop": 0.1})
    # ancestral sampling (DDIM eta = 1) visiting exactly the 20 training levels (uniform grid, 20 steps): SVC accuracy
    # 0.988. Annealed Langevin (Song & Ermon 2019) on the same levels: 0.33 / 0.95 / 0.99 at 5 / 20 / 50 steps per
    # level (101 / 401 / 1001 NFE); `sampler="langevin"` runs the paper's 100 per level
    c.sample = SampleConfig("ddpm", steps=20)
    return c


def digits_edm() -> Config:
    """Class-conditional EDM (Karras et al. 2022) on 8x8 digits, sampled with Heun on the Karras grid."""
    c = digits_flow()
    c.description = "class-conditional EDM (preconditioned denoiser, Heun on the Karras grid) on 8x8 digits, U-Net"
    c.method = MethodConfig("edm", {"cond_drop": 0.1})
    c.sample = SampleConfig("heun", steps=13, grid="karras")  # 25 NFE
    return c


_T2I_UNET = {"base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [6],
             "cross_attn_resolutions": [12, 6], "num_heads": 4, "coord_channels": True}


def shapes_t2i() -> Config:
    """Text-to-image flow matching on one-object shapes scenes at 24x24 (the shapes evaluator reads 24 px renders
    as well as 32 px ones), U-Net with cross-attention + a small text transformer trained jointly."""
    return Config(
        description="text-to-image flow matching on shapes (24x24, one object), U-Net cross-attention + text transformer",
        data=DataConfig("shapes", {"image_size": 24, "max_objects": 1, "split": "train"}, batch_size=64),
        net=NetConfig("text2img", {"backbone": "unet", "backbone_options": dict(_T2I_UNET),
                                   "encoder": "transformer", "encoder_options": {"dim": 64, "depth": 2, "heads": 4},
                                   "max_len": 24}),
        method=MethodConfig("flow_matching", {"cond_drop": 0.1}),
        train=TrainConfig(steps=1200, lr=2e-3, warmup=100, ema_decay=0.995, ckpt_every=300),
        sample=SampleConfig("euler", steps=25, cfg=3.0),
    )


_AE = {"latent_channels": 4, "base_channels": 16, "channel_mults": [1, 2, 4], "num_res_blocks": 1}


def shapes_ae() -> Config:
    """KL autoencoder (LDM, Rombach et al. 2022) for 32x32 shapes scenes -> 4x8x8 latents (f = 4): ~3 minutes on
    2 cores. The base of `shapes-latent-t2i`."""
    return Config(
        description="KL-regularised autoencoder on shapes (32x32 -> 4x8x8 latents), L2 + 1e-6 KL",
        data=DataConfig("shapes", {"image_size": 32, "split": "train"}, batch_size=32),
        net=NetConfig("autoencoder", dict(_AE)),
        method=MethodConfig("kl_autoencoder", {"kl_weight": 1e-6, "recon": "l2"}),
        train=TrainConfig(steps=1000, lr=3e-3, warmup=50, ema_decay=0.99, ckpt_every=250),
    )


def _latent_t2i_one_object() -> Config:
    """shapes-t2i's text-to-image flow matching in the 4x8x8 latent space of a `shapes-ae` autoencoder (LDM,
    Rombach et al. 2022) at 32x32 pixels, on one-object scenes: the same text encoder and U-Net with
    cross-attention, its levels moved to the 8x8 latent grid. The base of the demo's model and of the 8 px cascade
    (shapes-latent-t2i adds two-object scenes and phrase tokens)."""
    c = shapes_t2i()
    c.description = "latent text-to-image flow matching on shapes (32x32 via 4x8x8 KL-AE latents), U-Net cross-attn"
    c.data = DataConfig("shapes", {"image_size": 32, "max_objects": 1, "split": "train"}, batch_size=64)
    c.net.options["backbone_options"] = {**_T2I_UNET, "base_channels": 48, "channel_mults": [1, 2],
                                         "attn_resolutions": [4], "cross_attn_resolutions": [8, 4]}
    # "shapes-ae" is the autoencoder shipped in imgen/pretrained/models (a local directory of that name wins)
    # text: the frozen text tower of a CLIP trained on shapes captions (shipped "shapes-clip"; unCLIP and Imagen
    # also condition on a frozen pretrained text encoder): with it shape words bind in a few hundred steps,
    # where a text encoder trained jointly from scratch had not bound them after 2000
    c.net.options.update(encoder_init="shapes-clip", freeze_encoder=True)
    c.method = MethodConfig("latent", {"autoencoder": "shapes-ae", "method": "flow_matching",
                                       "method_options": dict(c.method.options), "scale": None})
    return c


def shapes_latent_t2i() -> Config:
    """The shipped text-to-image model: latent flow matching (4x8x8 latents of `shapes-ae`, 32x32 pixels) on one-
    and two-object scenes, 8000 steps (about 53-58 minutes on one core). Text: the frozen text tower of
    `shapes-scenes-clip` (a CLIP whose hard negatives also change the background and swap attributes between two
    objects), read as word tokens plus one token per object phrase (net option phrases: each phrase encoded alone,
    so an object's shape, colour, size and position arrive bound). At 1500 steps, two-object prompts got both
    objects fully right 2% of the time without phrase tokens (n=100) and 61% with them (n=200); fine-tuning the
    text tower instead of freezing it lost the held-out (shape, colour) pairs (shape 15%). Captions: 60% of those
    whose template leaves the background out name it anyway (data option bg_captions, recaptioning as in DALL-E 3):
    held-out background adherence at guidance 3 rose from 68% / 60% (one / two objects, only 1 in 6 captions naming
    it) to 95% / 94%, and 95% / 95% at guidance 4, the default."""
    c = _latent_t2i_one_object()
    c.description = ("latent text-to-image flow matching on shapes (32x32 via 4x8x8 KL-AE latents, one or two "
                     "objects), U-Net cross-attn on word and object-phrase tokens")
    c.data.options.update(max_objects=2, bg_captions=0.6)
    c.net.options.update(encoder_init="shapes-scenes-clip", phrases=True)
    c.train.steps = 8000
    c.sample.cfg = 4.0
    return c


def digits_vae() -> Config:
    """VAE (Kingma & Welling 2014) on the digits' train split with a 2-D latent (the classic embedding picture,
    imgen.apps.latent.latent_grid), discretized-Gaussian likelihood on the 17 grey levels: 158 s (2000 steps) on
    2 cores (OMP_NUM_THREADS=1). A larger latent bounds the likelihood tighter: --set net.options.latent_dim=16."""
    return Config(
        description="VAE on 8x8 digits, 2-D latent, discretized Gaussian p(x|z) on 17 levels",
        data=DataConfig("digits", {"split": "train"}, batch_size=64),
        net=NetConfig("vae", {"latent_dim": 2, "latent_channels": 4, "base_channels": 16, "channel_mults": [1, 2]}),
        method=MethodConfig("vae", {"beta": 1.0, "levels": 17}),
        train=TrainConfig(steps=2000, lr=2e-3, warmup=50, ema_decay=0.995, ckpt_every=500),
    )


def shapes_vae() -> Config:
    """VAE on 32x32 one-object shapes scenes with beta-VAE's net and 10-D latent (Higgins et al. 2017; Burgess et al.
    2018: 4x4 stride-2 convs of 32 channels, two 256-unit layers) and a fixed-variance Gaussian decoder, sigma = 0.3
    in [-1, 1] pixel units (discretized on 256 levels): beta then weighs the KL against |x - mu|^2 / (2 sigma^2)
    summed over the 3,072 pixels, as in the beta-VAE papers (with a learned sigma it shrinks with the error and beta
    prunes nothing; at sigma 0.2 beta 4 still kept 9 of 10 units and MIG did not rise). The KL weight warms up from
    0 over the first 1,000 steps (Bowman et al. 2016). 2,200 steps at batch 64: 181 s wall on an idle 2-core machine
    (`imgen train shapes-vae`, start-up included; shapes-beta-vae 184 s)."""
    return Config(
        description="VAE on shapes (32x32, one object), beta-VAE conv net, 10-D latent, fixed-sigma (0.3) "
                    "discretized Gaussian p(x|z) on 256 levels",
        data=DataConfig("shapes", {"image_size": 32, "max_objects": 1, "split": "train"}, batch_size=64),
        net=NetConfig("vae", {"latent_dim": 10, "arch": "burgess", "base_channels": 32, "hidden": 256}),
        method=MethodConfig("vae", {"beta": 1.0, "levels": 256, "sigma": 0.3, "kl_warmup": 1000}),
        train=TrainConfig(steps=2200, lr=2e-3, warmup=50, ema_decay=0.995, ckpt_every=500),
    )


def shapes_beta_vae() -> Config:
    """beta-VAE (Higgins et al. 2017) with beta = 4 against shapes-vae's fixed sigma = 0.3 likelihood, otherwise
    shapes-vae: the same net, KL warm-up and steps."""
    c = shapes_vae()
    c.description = "beta-VAE (beta = 4) on shapes (32x32, one object), 10-D latent, fixed sigma 0.3"
    c.method.options["beta"] = 4.0
    return c


def shapes_latent_vae() -> Config:
    """A VAE on the 4x8x8 latents of the shipped `shapes-ae` (two-stage VAE, Dai & Wipf 2019; imgen.methods.latent,
    latents standardized per entry): the model for latent arithmetic on shapes (benchmarks/latent_arithmetic.py). Its
    16-D vector latent is read from the autoencoder's conv latents, where an object's shape is a few latent pixels: the
    pixel VAE shapes-vae draws blobs (shape kept on 25-30% of reconstructions, with burgess or spatial broadcast
    decoders, beta 1 or 0). The decoder is a spatial broadcast decoder on the 8x8 latent grid (Watters et al. 2019),
    which keeps position out of the latent directions that carry colour: with an MLP decoder the mean red-minus-blue
    vector turned at most 1 of 500 blue scenes red. Gaussian density on the latents (levels null), sigma 0.4 (0.3:
    better reconstructions, a worse edit), KL warm-up over 1,500 of 6,000 steps at batch 64: 359 s wall on an idle
    2-core machine, over the issue's 5 minutes (at 4,800 steps two runs kept shape on 84% and 91% of edits, seeds 0 and
    1). Data: split "all", so every (shape, colour) pair is seen: trained on split "train" it has never drawn a red
    circle, and the red-minus-blue edit kept the shape of 59% of blue circles (84% over all shapes, against 94% for
    split "all"; the test scenes come from another stream either way)."""
    return Config(
        description="VAE on shapes-ae's 4x8x8 latents (one-object scenes), 16-D latent, spatial broadcast decoder",
        data=DataConfig("shapes", {"image_size": 32, "max_objects": 1, "split": "all"}, batch_size=64),
        net=NetConfig("vae", {"latent_dim": 16, "arch": "broadcast", "base_channels": 64, "hidden": 512,
                              "upsample": 1}),
        method=MethodConfig("latent", {"autoencoder": "shapes-ae", "method": "vae", "posterior": "mean",
                                       "method_options": {"beta": 1.0, "sigma": 0.4, "kl_warmup": 1500}}),
        train=TrainConfig(steps=6000, lr=1e-3, warmup=50, ema_decay=0.995, ckpt_every=1000),
    )


_VQ = {"quantizer": "vq_ema", "codebook_size": 256, "code_dim": 16, "base_channels": 16, "channel_mults": [1, 2, 4],
       "num_res_blocks": 1}


def shapes_vqvae() -> Config:
    """VQ-VAE (van den Oord et al. 2017) tokenizer for 32x32 shapes scenes: an 8x8 grid of tokens from a 256-code
    EMA codebook with dead-code restart; the net's quantizer option picks vq, vq_ema, rvq, fsq or lfq."""
    return Config(
        description="VQ-VAE tokenizer on shapes (32x32 -> 8x8 tokens, 256 codes, EMA-VQ), L2 reconstruction",
        data=DataConfig("shapes", {"image_size": 32, "split": "train"}, batch_size=32),
        net=NetConfig("vqvae", dict(_VQ)),
        method=MethodConfig("vqvae", {"recon": "l2"}),
        train=TrainConfig(steps=1000, lr=2e-3, warmup=50, ema_decay=0.99, ckpt_every=250),
    )


def shapes_vqgan() -> Config:
    """VQGAN (Esser et al. 2021) at shapes-vqvae's token grid and codebook (8x8 tokens, 256 EMA codes): L1 +
    perceptual[shapes-eval] reconstruction, PatchGAN hinge loss with eq. 7's adaptive weight from step 300."""
    c = shapes_vqvae()
    c.description = "VQGAN tokenizer on shapes (32x32 -> 8x8 tokens, 256 codes, EMA-VQ), L1 + perceptual + PatchGAN"
    c.net.options["discriminator"] = {"base_channels": 32, "num_layers": 2}
    c.method = MethodConfig("vqgan", {"recon": "l1", "perceptual_weight": 1.0, "disc_weight": 0.8, "disc_start": 300})
    c.train.betas = [0.5, 0.9]  # the VQGAN authors' Adam betas for both optimizers
    return c


_TOKEN_PRIOR = {"dim": 128, "depth": 4, "heads": 4, "max_len": 20}  # captions: <= 15 words + bos, eos


def shapes_ar_t2i() -> Config:
    """Text-to-image as language modelling (DALL-E, Ramesh et al. 2021; Parti, Yu et al. 2022): caption words, then
    a tokenizer's 8x8 image tokens in raster order, predicted one by one by a causal transformer. Needs a tokenizer:
    `imgen train shapes-vqgan --out TOK`, then --set method.options.tokenizer=TOK. Take the VQGAN: the evaluator
    reads shape and colour right on 92.5% of its reconstructions of held-out scenes, on 28% of a shapes-vqvae's
    (1000 steps each), and a prior cannot draw better than its tokenizer. Sampling draws 16 candidates per image and
    keeps the one the shipped shapes-scenes-clip scores best (DALL-E's CLIP reranking, imgen.rerank): held-out
    shape+colour 0.735 -> 0.875 (8 candidates) -> 0.905 (16); `--rerank 1` turns it off. Trains in 3 min 36 s on an
    idle 2-core machine."""
    return Config(
        description="autoregressive text-to-image token prior on shapes (32x32 via 8x8 VQ tokens), causal transformer",
        data=DataConfig("shapes", {"image_size": 32, "max_objects": 1, "split": "train"}, batch_size=32),
        # the shipped CLIP's frozen text tower, its pooled caption embedding as a one-token prefix (text_pool) that
        # also modulates every block (adaln). Held-out shape+colour (n=200, one shapes-vqgan, 1500 steps at batch 32,
        # lr 2e-3, ~6 min on one thread of a busy machine): prefix only 0.375 (train pairs 0.62); the 20 token
        # features as prefix 0.48; + adaln 0.43; pooled + adaln 0.63 at cfg 3, 0.735 / 0.75 (seeds 0 / 1) at cfg 1.5
        # (cfg 1: 0.62, 2: 0.685, 5: 0.53). Earlier, without adaln: token features at batch 64, 600 steps 0.25
        net=NetConfig("token_transformer", {**_TOKEN_PRIOR, "causal": True, "text_encoder": "shapes-clip",
                                            "text_pool": True, "adaln": True}),
        method=MethodConfig("token_ar", {"tokenizer": "", "cond_drop": 0.1, "condition": "caption"}),
        train=TrainConfig(steps=1500, lr=2e-3, warmup=100, ema_decay=0.995, ckpt_every=500, lr_schedule="cosine"),
        # steps: not used (one network call per token); rerank: candidates per image (imgen.rerank)
        sample=SampleConfig("euler", steps=64, cfg=1.5, rerank=16, reranker="shapes-scenes-clip"),
    )


def shapes_maskgit_t2i() -> Config:
    """shapes-ar-t2i's tokens and captions modelled by MaskGIT (Chang et al. 2022): a bidirectional transformer
    predicting masked tokens, decoded in 8 parallel steps. Needs --set method.options.tokenizer=TOK (shapes-vqgan).
    Held-out shape+colour (n=200): 0.14 with the pooled prefix only, 0.635 with adaln (train pairs 0.925); cfg
    1.5 / 5: 0.64 / 0.66, 16 steps 0.645, choice temperature 1 instead of 4.5: 0.675 -- the gap is held-out pairs.
    With shapes-ar-t2i's CLIP reranking: 0.81 (8 candidates), 0.905 (16, the default; AR 0.905). Trains in
    3 min 32 s on an idle 2-core machine."""
    c = shapes_ar_t2i()
    c.description = "MaskGIT text-to-image token prior on shapes (32x32 via 8x8 VQ tokens), 8 decoding steps"
    c.net.options["causal"] = False
    c.method = MethodConfig("maskgit", {"tokenizer": "", "cond_drop": 0.1, "condition": "caption"})
    c.sample = SampleConfig("euler", steps=8, cfg=3.0, rerank=16, reranker="shapes-scenes-clip")  # steps: iterations
    return c


def digits_vq() -> Config:
    """A VQ-VAE tokenizer for 8x8 digits: a 4x4 grid of tokens from 64 EMA codes; the base of digits-ar and
    digits-maskgit (`imgen train digits-vq --out TOK`)."""
    return Config(
        description="VQ-VAE tokenizer on 8x8 digits (4x4 tokens, 64 codes, EMA-VQ), L2 reconstruction",
        data=DataConfig("digits", {"split": "all"}, batch_size=64),
        net=NetConfig("vqvae", {**_VQ, "codebook_size": 64, "code_dim": 8, "base_channels": 32, "channel_mults": [1, 2]}),
        method=MethodConfig("vqvae", {"recon": "l2"}),
        train=TrainConfig(steps=800, lr=2e-3, warmup=50, ema_decay=0.99, ckpt_every=200),
    )


def digits_ar() -> Config:
    """Class-conditional autoregressive token prior on digits: the label, then a digits-vq tokenizer's 4x4 tokens.
    Needs --set method.options.tokenizer=TOK (`imgen train digits-vq --out TOK`)."""
    return Config(
        description="class-conditional autoregressive token prior on 8x8 digits (4x4 VQ tokens), causal transformer",
        data=DataConfig("digits", {"split": "all"}, batch_size=64),
        net=NetConfig("token_transformer", {"dim": 128, "depth": 4, "heads": 4, "causal": True}),
        method=MethodConfig("token_ar", {"tokenizer": "", "cond_drop": 0.1, "condition": "label"}),
        train=TrainConfig(steps=1000, lr=1e-3, warmup=100, ema_decay=0.995, ckpt_every=250, lr_schedule="cosine"),
        sample=SampleConfig("euler", steps=16, cfg=2.0),  # steps: not used (one network call per token)
    )


def digits_maskgit() -> Config:
    """digits-ar's tokens modelled by MaskGIT, decoded in 4 parallel steps. Needs --set method.options.tokenizer=TOK."""
    c = digits_ar()
    c.description = "class-conditional MaskGIT token prior on 8x8 digits (4x4 VQ tokens), 4 decoding steps"
    c.net.options["causal"] = False
    c.method = MethodConfig("maskgit", {"tokenizer": "", "cond_drop": 0.1, "condition": "label"})
    c.sample = SampleConfig("euler", steps=4, cfg=2.0)  # steps: decoding iterations
    return c


def digits_cold_blur() -> Config:
    """Class-conditional cold diffusion (Bansal et al. 2022) with the blur degradation on 8x8 digits."""
    c = digits_flow()
    c.description = "class-conditional cold diffusion (blur, improved sampling) on 8x8 digits, U-Net"
    # start colour ~ N(-0.39, 0.067^2): the digits' per-image mean colour (Bansal et al. fit a GMM to it)
    c.method = MethodConfig("cold", {"degradation": "blur", "blur_scale": 1.0, "start_mean": -0.39,
                                     "start_std": 0.067, "cond_drop": 0.0})
    c.sample = SampleConfig("improved", steps=20)  # Algorithm 2; "naive" is Algorithm 1
    return c


def digits_realnvp() -> Config:
    """Unconditional RealNVP (Dinh et al. 2017) on the digits' train split by maximum likelihood on uniformly
    dequantized 17-level data (imgen.methods.normalizing_flow): 2.3 min on 2 cores (140 s for 2000 steps,
    OMP_NUM_THREADS=1, shared machine). Test split: 2.20 bits/dim (lr 1e-3: 2.24), against 2.39 for independent
    per-pixel categoricals (benchmarks/likelihood.py)."""
    return Config(
        description="unconditional RealNVP (multi-scale affine couplings) on 8x8 digits, 17-level dequantized NLL",
        data=DataConfig("digits", {"split": "train"}, batch_size=64),
        net=NetConfig("realnvp", {"num_scales": 1, "hidden": 64}),
        method=MethodConfig("normalizing_flow", {"n_bins": 17, "temperature": 0.7}),
        train=TrainConfig(steps=2000, lr=2e-3, warmup=100, ema_decay=0.995, ckpt_every=250),
    )


def digits_glow() -> Config:
    """Unconditional Glow (Kingma & Dhariwal 2018) on the digits' train split, trained as digits-realnvp but with
    wider coupling nets (hidden 128), dropout 0.3 in them (as Flow++'s coupling nets, Ho et al. 2019) and a quarter
    of its learning rate (5e-4), 3000 steps: 4-5 min on one thread (310-384 s with OMP_NUM_THREADS=1 beside another
    job). Test split: 2.174 / 2.186 bits/dim at training seeds 0 / 1 (RealNVP: 2.20). Without dropout Glow overfits
    the 1437 training digits (train ~2.0): 1000 steps gave 2.256 / 2.320 / 2.250 / 2.291 at seeds 0-3, 1500 steps
    2.288; dropout 0.2 at 1000 steps 2.251, 0.3 at 2000 steps 2.219 (the same dropout costs RealNVP: 2.219). Also
    tried without dropout: hidden 64 at lr 1e-3 / 2e-3 2.27 / ~2.34, hidden 256 at 3e-4 2.27, one level of 8-12
    steps 2.31-2.39, cosine lr 2.31, weight decay 0.1 2.25, split_prior 2.25 (all seed 0)."""
    c = digits_realnvp()
    c.description = "unconditional Glow (ActNorm, 1x1 conv, affine coupling; 2 levels x 8 steps) on 8x8 digits"
    c.net = NetConfig("glow", {"levels": 2, "steps": 8, "hidden": 128, "dropout": 0.3})
    c.train.steps, c.train.lr = 3000, 5e-4
    return c


def shapes_t2i_demo() -> Config:
    """`imgen demo`'s model: one-object latent text-to-image flow matching trained from scratch (on the shipped
    frozen autoencoder) with a budget that fits the demo's 10 minutes on 2 cores."""
    c = _latent_t2i_one_object()
    c.description = c.description.replace("text-to-image", "text-to-image (demo budget)")
    c.train.steps = 1000
    return c


def _toy(name: str, method: MethodConfig, sampler: str) -> Callable[[], Config]:
    def make() -> Config:
        return Config(
            description=f"{method.name} on the 2D '{name}' toy, MLP denoiser",
            data=DataConfig(name, {}, batch_size=256),
            net=NetConfig("mlp", {"hidden": 256, "depth": 4}),
            method=method,
            train=TrainConfig(steps=3000, lr=1e-3, warmup=100, ema_decay=0.995, ckpt_every=500, log_every=50),
            sample=SampleConfig(sampler, steps=50),
        )
    make.__doc__ = f"{method.name} on the 2D {name} toy (MLP), about a minute on 2 cores."
    return make


def digits_dcgan() -> Config:
    """Unconditional DCGAN (Radford et al. 2016: strided convs, batch norm, Adam lr 2e-4, beta1 0.5) with the
    non-saturating loss (Goodfellow et al. 2014) on 8x8 digits; samples from the EMA generator."""
    return Config(
        description="unconditional DCGAN (non-saturating loss, batch norm) on 8x8 digits",
        data=DataConfig("digits", {"split": "all"}, batch_size=64),
        net=NetConfig("gan", {"num_classes": None, "latent_dim": 32, "g_channels": 64, "d_channels": 64}),
        method=MethodConfig("gan", {"loss": "nonsaturating"}),
        train=TrainConfig(steps=800, lr=2e-4, betas=[0.5, 0.999], warmup=0, grad_clip=0.0, ema_decay=0.999,
                          ckpt_every=200, log_every=20),
    )


def digits_cgan() -> Config:
    """Class-conditional GAN on 8x8 digits: a DCGAN generator fed a class embedding and a projection discriminator
    (Miyato & Koyama 2018) with spectral norm, hinge loss, Adam (0, 0.9) as in SNGAN. Two D steps per G step and
    a minibatch-stddev feature in D keep the digits of one class varied: at 400 steps the within-class diversity
    ratio was 0.63 with neither, 0.72 with two D steps; both at 600 steps: 0.78 (SVC accuracy 0.998). FID[digits-eval]
    (n=1000) falls with training: 5.04 at 600 steps, 2.36 at 2000, 1.87 at 3000 (diversity 0.92, SVC 0.996; 309 s
    of CPU on one thread), against ~1.04 for digits-flow: within the issue's 2x only from ~3000 steps."""
    c = digits_dcgan()
    c.description = "class-conditional GAN (projection discriminator, spectral norm, hinge loss) on 8x8 digits"
    c.net = NetConfig("gan", {"latent_dim": 32, "g_channels": 64, "d_channels": 64, "d_norm": "none",
                              "spectral_norm": True, "minibatch_std": True})  # num_classes comes from the data
    c.method = MethodConfig("gan", {"loss": "hinge", "n_critic": 2})
    c.train.steps, c.train.betas = 3000, [0.0, 0.9]
    return c


def digits_wgan_gp() -> Config:
    """Unconditional WGAN-GP (Gulrajani et al. 2017, Algorithm 1: lambda 10, 5 critic steps per generator step,
    Adam lr 1e-4, betas (0, 0.9)) on 8x8 digits; the critic is layer-normalised (no batch norm under a per-sample
    gradient penalty). log.jsonl's gp_grad_norm (the critic's gradient norm on interpolates) stays near 1."""
    c = digits_dcgan()
    c.description = "unconditional WGAN-GP (gradient penalty 10, 5 critic steps, layer norm critic) on 8x8 digits"
    c.net.options.update(d_channels=32, d_norm="layer")
    c.method = MethodConfig("gan", {"loss": "wgan", "gp_weight": 10.0, "n_critic": 5})
    c.train.steps, c.train.lr, c.train.betas = 400, 1e-4, [0.0, 0.9]
    return c


def shapes_pix2pix() -> Config:
    """pix2pix (Isola et al. 2017): label maps of shapes scenes -> the rendered 32px images (imgen.data.translation),
    U-Net generator + conditional PatchGAN, L1 (lambda 100) + non-saturating loss, Adam beta1 0.5 (the paper's).
    Changed for a 2-core budget: lr 1e-3 (the paper's 2e-4 reached 23.3 dB after 800 steps; 1e-3 22.7 dB after 600
    steps at depth 4, 25.2 dB at depth 3 with the full-resolution skip), no dropout, a 3-level U-Net with a
    full-resolution skip (UNetGenerator full_res_skip). `imgen translate DIR MAP.png --out OUT.png`."""
    return Config(
        description="pix2pix: shapes label maps -> 32px images (U-Net + conditional PatchGAN, L1 + adversarial)",
        data=DataConfig("shapes-pairs", {"image_size": 32}, batch_size=16),
        net=NetConfig("pix2pix", {"num_classes": None, "g_channels": 32, "d_channels": 32, "depth": 3,
                                  "d_layers": 2, "dropout_layers": 0, "full_res_skip": True}),
        method=MethodConfig("pix2pix", {"loss": "nonsaturating", "l1_weight": 100.0}),
        train=TrainConfig(steps=1200, lr=1e-3, betas=[0.5, 0.999], warmup=0, grad_clip=0.0, ema_decay=0.95,
                          ckpt_every=200, log_every=20),
    )


def shapes_cyclegan() -> Config:
    """CycleGAN (Zhu et al. 2017) between unpaired shapes scenes on black (domain A) and gray (domain B) backgrounds:
    two U-Net generators (3 levels, full-resolution skip), two PatchGANs, least-squares adversarial loss, cycle lambda
    10, identity 0.5 lambda, Adam beta1 0.5 (the paper's) at lr 1e-3 (2e-4 kept 30% of the shapes and 5% of the
    colours after 400 steps). `imgen translate DIR IMAGE.png --out OUT.png [--direction ba]`."""
    return Config(
        description="CycleGAN: shapes on black <-> gray backgrounds, unpaired (U-Nets + PatchGANs, LSGAN + cycle)",
        data=DataConfig("shapes-domains", {"image_size": 32, "max_objects": 1, "domain_a": "black", "domain_b": "gray"},
                        batch_size=16),
        net=NetConfig("cyclegan", {"num_classes": None, "g_channels": 16, "d_channels": 16, "depth": 3,
                                   "d_layers": 2, "full_res_skip": True}),
        method=MethodConfig("cyclegan", {"loss": "least_squares", "cycle_weight": 10.0, "identity_weight": 0.5}),
        train=TrainConfig(steps=1000, lr=1e-3, betas=[0.5, 0.999], warmup=0, grad_clip=0.0, ema_decay=0.95,
                          ckpt_every=100, log_every=20),
    )


def shapes_stylegan() -> Config:
    """StyleGAN-lite (Karras et al. 2019/2020; imgen.nn.stylegan): mapping network, modulated/demodulated convs,
    noise inputs, style mixing (p 0.9), on 16px one-object shapes scenes; StyleGAN2's residual D, equalised learning
    rates (mapping at 1/100), non-saturating loss + R1 (gamma 1) and Adam (0, 0.99) at lr 2e-3 (the paper's). 16 px,
    not 32: a 32px step costs ~3x the CPU. Batch 16 x 2000 steps, G 64 channels, D 16-32-64 plus a head on the
    frozen shapes-clip image tower (clip_discriminator, Projected GANs): 276 s on one thread. At psi 1,
    precision/recall[shapes-eval] 0.64 / 0.28, FID 613 (without the CLIP head 0.55 / 0.19, FID 849; the first
    StyleGAN-lite, with plain layers and no sqrt(2) gain: 0.71 / 0.006, FID 914). At the same budget (without the
    CLIP head) R1 gamma 0.1 let D win (fake accuracy 0.98, G loss 3); D at 32 channels cost 165 ms a step (vs
    118); mapping depth 4 + D at half lr: recall 0.009; EMA 0.998 instead of 0.99: recall 0.197 but FID 907.
    Backgrounds and small objects; shapes not yet told apart. Truncation pulls w toward the nearest of 16 k-means
    centres of w (truncation_clusters; multimodal truncation, Mokady et al. 2022): precision 0.64 / 0.67 / 0.71 / 0.77
    and recall 0.28 / 0.24 / 0.13 / 0.08 at psi 1 / 0.7 / 0.5 / 0.3 (toward w_avg precision fell below psi 0.7); a
    second training run's precision stayed flat (0.65 / 0.65 / 0.67 / 0.70) where toward w_avg it fell to 0.49.
    `imgen sample DIR --truncation 0.5`."""
    return Config(
        description="StyleGAN-lite on 16x16 one-object shapes scenes (mapping net, modulated convs, noise, mixing)",
        data=DataConfig("shapes", {"image_size": 16, "max_objects": 1}, batch_size=16),
        net=NetConfig("stylegan", {"num_classes": None, "latent_dim": 64, "g_channels": 64, "d_channels": 16,
                                   "mapping_depth": 2, "clip_discriminator": "shapes-clip",
                                   "truncation_clusters": 16}),
        method=MethodConfig("gan", {"loss": "nonsaturating", "r1_weight": 1.0}),
        train=TrainConfig(steps=2000, lr=2e-3, betas=[0.0, 0.99], warmup=0, grad_clip=0.0, ema_decay=0.99,
                          ckpt_every=250, log_every=20),
    )


def shapes_text_gan() -> Config:
    """Text-conditional GAN (GAN-INT-CLS, Reed et al. 2016) on 16px one-object shapes scenes: a DCGAN generator and a
    projection discriminator with spectral norm, conditioned on the frozen text tower of the shipped shapes-clip (its
    pooled caption feature); the matching-aware discriminator (a real image with the wrong caption is a negative) and
    the interpolated-caption generator term. D adds a projection head on the frozen shapes-clip image tower
    (clip_discriminator; Projected GANs, Sauer et al. 2021). G's batch norms take their scale and shift from the
    text (conditional batch norm, as SNGAN's class-conditional G; g_norm). Hinge loss, Adam (0, 0.9) as in SNGAN, lr
    2e-3. 1600 steps at batch 32: 242 s of CPU on one thread; on 1,000 held-out prompts shapes-eval reads shape 0.752,
    colour 0.879, position 1.000 (true 16 px renders: shape 0.886). With plain batch norm (text only at G's input):
    shape 0.669, colour 0.896. Same budget, n=1,000, plain BN: lr 5e-4 and EMA 0.99 (the first
    preset) shape 0.589, colour 0.934; lr 1e-3 / 2e-3: 0.645 / 0.650; EMA 0.995 adds the rest (the Trainer's warmup
    caps the decay at (1 + step) / (10 + step), 0.994 at the end, so 0.998 draws the same images). Tried at lr 5e-4:
    a CLIP-guided G loss (1 - cos of shapes-clip's image and text embeddings, weight 1; StyleGAN-T): shape 0.605, as
    G draws blobs the CLIP tower reads as the prompt's shape (0.93 vs 0.62 by shapes-eval, n=500); DiffAugment's
    translation on D's inputs: 0.27; no GAN-INT term and 2200 steps (lr 5e-4): 0.65 in 366 s. Without the CLIP image
    head: shape 0.39, colour 0.95; wrong captions from twins=true: shape 0.55, position 0.91.
    `imgen generate "a red circle" --model DIR`."""
    return Config(
        description="text-conditional GAN (GAN-INT-CLS: matching-aware D, text interpolation) on 16x16 shapes, "
                    "frozen shapes-clip text tower, D on its image tower too",
        data=DataConfig("shapes", {"image_size": 16, "max_objects": 1, "split": "train"}, batch_size=32),
        net=NetConfig("text_gan", {"latent_dim": 32, "g_channels": 32, "d_channels": 32, "g_norm": "conditional_batch",
                                   "d_norm": "none", "spectral_norm": True, "encoder_init": "shapes-clip",
                                   "clip_discriminator": True}),
        method=MethodConfig("gan", {"loss": "hinge", "matching_aware": True, "interpolation": 1.0}),
        train=TrainConfig(steps=1600, lr=2e-3, betas=[0.0, 0.9], warmup=0, grad_clip=0.0, ema_decay=0.995,
                          ckpt_every=250, log_every=20),
    )


def mnist_flow() -> Config:
    """Class-conditional flow matching on MNIST (28x28): `imgen data download mnist --to DIR`, then
    `imgen train mnist-flow --data-path DIR`. Sized for several processes or a GPU rather than 2 cores."""
    return Config(
        description="class-conditional flow matching on MNIST 28x28 (imgen data download mnist; --data-path DIR), U-Net",
        data=DataConfig("mnist", {"split": "train"}, batch_size=128),
        net=NetConfig("unet", {"base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1,
                               "attn_resolutions": [7], "num_heads": 4}),
        method=MethodConfig("flow_matching", {"cond_drop": 0.1}),
        train=TrainConfig(steps=10000, lr=1e-3, warmup=200, ema_decay=0.999, ckpt_every=500),
        sample=SampleConfig("euler", steps=25),
    )


def cifar10_ae() -> Config:
    """shapes-ae's KL autoencoder on CIFAR-10 (32x32 -> 4x8x8 latents): the base of `cifar10-ldm`."""
    c = shapes_ae()
    c.description = "KL-regularised autoencoder on CIFAR-10 (32x32 -> 4x8x8; imgen data download cifar10; --data-path DIR)"
    c.data = DataConfig("cifar10", {"split": "train"}, batch_size=64)
    c.train.steps = 5000
    return c


def cifar10_ldm() -> Config:
    """Class-conditional latent flow matching (LDM) on CIFAR-10 in a `cifar10-ae` autoencoder's latents: train
    `imgen train cifar10-ae --data-path DIR --out runs/cifar10-ae` first (or --set method.options.autoencoder=)."""
    return Config(
        description="class-conditional latent flow matching on CIFAR-10 via cifar10-ae's 4x8x8 latents (runs/cifar10-ae)",
        data=DataConfig("cifar10", {"split": "train"}, batch_size=128),
        net=NetConfig("unet", {"base_channels": 64, "channel_mults": [1, 2], "num_res_blocks": 2,
                               "attn_resolutions": [4], "num_heads": 4}),
        method=MethodConfig("latent", {"autoencoder": "runs/cifar10-ae", "method": "flow_matching",
                                       "method_options": {"cond_drop": 0.1}, "scale": None}),
        train=TrainConfig(steps=20000, lr=5e-4, warmup=500, ema_decay=0.999, ckpt_every=1000),
        sample=SampleConfig("euler", steps=25),
    )


def shapes_sr() -> Config:
    """An 8 -> 32 px upsampler for one-object shapes scenes (SR3, Saharia et al. 2021, with Imagen's noise-conditioning
    augmentation): flow matching conditioned on the area-averaged 8x8 image, U-Net at 32 px. `imgen upscale`."""
    return Config(
        description="super-resolution 8 -> 32 px on shapes (flow matching, U-Net + low-res channels, noise aug.)",
        # split "all": an upsampler trained without the held-out (shape, colour) pairs learns "a red blob is not a
        # circle" and draws the wrong shape on them (shape+colour read 0.22 on held-out pairs; trained on all: 0.45)
        data=DataConfig("shapes", {"image_size": 32, "max_objects": 1, "split": "all", "low_res": 8},
                        batch_size=32),
        net=NetConfig("unet", {"base_channels": 16, "channel_mults": [1, 2, 4], "num_res_blocks": 1,
                               "attn_resolutions": [], "num_heads": 4, "num_classes": None,
                               "low_res_channels": 3, "low_res_size": 8}),
        # x0-prediction of the residual over bicubic (SRDiff): at 250 steps 28.5 dB and clean backgrounds, where
        # the velocity target left grain (26.7 dB at 500 steps)
        method=MethodConfig("super_resolution", {"method": "flow_matching", "prediction": "x0", "aug_max": 0.3,
                                                 "sample_aug": 0.1, "residual": True}),
        train=TrainConfig(steps=500, lr=2e-3, warmup=50, ema_decay=0.99, ckpt_every=250),
        sample=SampleConfig("euler", steps=20),
    )


def shapes_srgan() -> Config:
    """SRGAN (Ledig et al. 2017): x4 super-resolution 8 -> 32 px of one-object shapes scenes (shapes-sr's data),
    an SRResNet generator (8 residual blocks at width 32, two sub-pixel x2 blocks, a bicubic global skip) and the
    paper's discriminator (6 convs); content loss on all five conv maps of shapes-eval + 1e-3 non-saturating
    adversarial + pixel MSE (weight 1), Adam at lr 1e-3, beta1 0.9 (the paper's). 1000 steps: 172 CPU-seconds
    (430 s wall on 2 cores shared with ~10 busy processes); on 1,000 held-out scenes 29.4 dB and shapes-eval reads
    shape and colour right on 0.73 of them (bicubic: 26.8 dB, 0.33). The pixel term (not in the paper's SRGAN loss)
    adds 0.3 dB and 0.02 accuracy at 1000 steps (pixel_weight 0: 29.2 dB, 0.71), 0.3 dB and 0.01 at 300.
    `imgen upscale LOW.png --model DIR --out OUT.png`."""
    return Config(
        description="SRGAN: super-resolution 8 -> 32 px on shapes (SRResNet + discriminator, feature + adversarial)",
        data=DataConfig("shapes", {"image_size": 32, "max_objects": 1, "split": "all", "low_res": 8},
                        batch_size=16),
        net=NetConfig("srgan", {"num_classes": None, "low_res_size": 8, "low_res_channels": 3, "g_channels": 32,
                                "num_blocks": 8, "d_channels": 16, "d_convs": 6, "d_dense": 256}),
        method=MethodConfig("srgan", {"loss": "nonsaturating", "content_weight": 1.0, "adversarial_weight": 1e-3,
                                      "pixel_weight": 1.0, "content_layers": None}),
        train=TrainConfig(steps=1000, lr=1e-3, betas=[0.9, 0.999], warmup=0, grad_clip=0.0, ema_decay=0.99,
                          ckpt_every=250, log_every=20),
    )


def shapes_8px_t2i() -> Config:
    """The base stage of an 8 -> 32 px cascade (Imagen, Saharia et al. 2022, sec. 2.5): shapes-latent-t2i's text
    conditioning (frozen shapes-clip text tower, cross-attention) on one-object scenes area-averaged to 8x8, a U-Net
    at 8 px. `imgen.apps.upscale.cascade(base, shapes_sr_model, prompts)` enlarges its samples. 400 steps: 2.9 min on
    2 shared cores; on 64 held-out prompts the cascade's colour and position follow the prompt (1.00, 1.00) but
    shapes-eval reads the shape at chance (0.19): at 8 px the base barely draws one (base + bicubic: 0.28)."""
    c = _latent_t2i_one_object()
    c.description = "text-to-image flow matching on shapes at 8x8 (area-averaged 32 px scenes): a cascade's base"
    c.data = DataConfig("shapes", {"image_size": 32, "downsample": 8, "max_objects": 1, "split": "train"},
                        batch_size=64)
    c.net.options["backbone_options"] = {**_T2I_UNET, "base_channels": 48, "channel_mults": [1, 2],
                                         "attn_resolutions": [4], "cross_attn_resolutions": [8, 4]}
    c.method = MethodConfig("flow_matching", {"cond_drop": 0.1})
    c.train.steps, c.train.ckpt_every = 400, 200
    return c


PRESETS: dict[str, Callable[[], Config]] = {
    "digits-flow": digits_flow,
    "digits-ddpm": digits_ddpm,
    "shapes-t2i": shapes_t2i,
    "shapes-t2i-demo": shapes_t2i_demo,
    "shapes-ae": shapes_ae,
    "shapes-latent-t2i": shapes_latent_t2i,
    "digits-vae": digits_vae,
    "shapes-vae": shapes_vae,
    "shapes-beta-vae": shapes_beta_vae,
    "shapes-latent-vae": shapes_latent_vae,
    "shapes-vqvae": shapes_vqvae,
    "shapes-vqgan": shapes_vqgan,
    "shapes-ar-t2i": shapes_ar_t2i,
    "shapes-maskgit-t2i": shapes_maskgit_t2i,
    "shapes-sr": shapes_sr,
    "shapes-srgan": shapes_srgan,
    "shapes-8px-t2i": shapes_8px_t2i,
    "digits-vq": digits_vq,
    "digits-ar": digits_ar,
    "digits-maskgit": digits_maskgit,
    "digits-ncsn": digits_ncsn,
    "digits-edm": digits_edm,
    "digits-cold-blur": digits_cold_blur,
    "digits-realnvp": digits_realnvp,
    "digits-glow": digits_glow,
    "digits-dcgan": digits_dcgan,
    "digits-cgan": digits_cgan,
    "digits-wgan-gp": digits_wgan_gp,
    "shapes-stylegan": shapes_stylegan,
    "shapes-text-gan": shapes_text_gan,
    "shapes-pix2pix": shapes_pix2pix,
    "shapes-cyclegan": shapes_cyclegan,
    "mnist-flow": mnist_flow,
    "cifar10-ae": cifar10_ae,
    "cifar10-ldm": cifar10_ldm,
    "moons-flow": _toy("moons", MethodConfig("flow_matching", {"cond_drop": 1.0}), "euler"),
    "8gaussians-flow": _toy("8gaussians", MethodConfig("flow_matching", {"cond_drop": 1.0}), "euler"),
    # v-prediction: on the linear schedule alpha(1) = 0.0066, so an eps-model's x0_hat = (x - sigma eps)/alpha
    # magnifies eps errors 150x and deterministic samplers carried rare outliers (|x| ~ 100) to the end;
    # x0_hat = alpha x - sigma v stays bounded (Salimans & Ho 2022, sec. 4)
    "swissroll-ddpm": _toy("swissroll", MethodConfig("ddpm", {"schedule": "linear", "prediction": "v",
                                                               "cond_drop": 1.0}), "ddim"),
    "checkerboard-flow": _toy("checkerboard", MethodConfig("flow_matching", {"cond_drop": 1.0}), "euler"),
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ImgenError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)} (or give a .json/.toml config file)")
    return PRESETS[name]()
