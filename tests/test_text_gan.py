"""The text-conditional GAN (GAN-INT-CLS, Reed et al. 2016; net text_gan, method gan with matching_aware and
interpolation): the discriminator's loss is Reed's three terms (real/right text, fake/right text, real/WRONG text),
the generator's adds the interpolated-caption term, the nets read the frozen CLIP text tower's pooled feature,
the preset trains and resumes to the weights of an uninterrupted run, `imgen generate` draws the EMA generator's
images for a prompt, and bad input (an empty prompt, --label, --steps, --cfg, no prompt) gets one clear error."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import imgen
from conftest import assert_one_line_error, run_cli
from imgen.errors import ImgenError
from imgen.methods import build_method
from imgen.nn import build_net
from imgen.nn.text2img import clip_text_options
from imgen.pretrained import shipped_model_dir
from imgen.train import train_preset

TINY = ("data.batch_size=4", "net.options.g_channels=8", "net.options.d_channels=8", "net.options.latent_dim=8")


def tiny_net(**options):
    torch.manual_seed(0)
    clip = shipped_model_dir("shapes-clip")
    opts = {"in_channels": 3, "image_size": 16, "latent_dim": 8, "g_channels": 8, "d_channels": 8,
            "g_norm": "none", "spectral_norm": False, **clip_text_options(clip), "encoder_init": str(clip), **options}
    return build_net("text_gan", **opts)


def batch(n: int = 6):
    from imgen.data import load_dataset

    return load_dataset("shapes", image_size=16, max_objects=1).get(np.arange(n))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tg") / "model"
    train_preset("shapes-text-gan", out, steps=3, overrides=TINY)
    return out


# ---- the losses ---------------------------------------------------------------------------------------------------
def test_the_matching_aware_discriminator_loss_is_reeds_three_terms_with_the_wrong_text_one():
    net, b = tiny_net(), batch()
    x = b["image"]
    y = net.encode(b["caption"])["text_pooled"]
    cls = build_method("gan", loss="nonsaturating", matching_aware=True)
    plain = build_method("gan", loss="nonsaturating")
    loss = cls.discriminator_loss(net, b, torch.Generator().manual_seed(5))
    z = torch.randn((len(x), 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        s_r = net.discriminator(x, y)  # real image, right text
        s_f = net.discriminator(net.generator(z, y), y)  # fake image, right text
        s_w = net.discriminator(x, y.roll(3, 0))  # real image, wrong text (the caption half a batch away)
    # Reed et al. Algorithm 1: L_D = -(log s_r + (log(1 - s_w) + log(1 - s_f)) / 2), s = sigmoid(logit)
    expect = -(F.logsigmoid(s_r).mean() + 0.5 * (F.logsigmoid(-s_w).mean() + F.logsigmoid(-s_f).mean()))
    assert torch.allclose(loss, expect, atol=1e-5)
    without = plain.discriminator_loss(net, b, torch.Generator().manual_seed(5))
    assert torch.allclose(without, -(F.logsigmoid(s_r).mean() + F.logsigmoid(-s_f).mean()), atol=1e-5)
    assert not torch.allclose(loss, without)
    # the wrong-text term is the only one that reads another caption: change that caption, only it moves
    other = dict(b, caption=[b["caption"][0]] * len(x))  # every "wrong" caption is now the same as scene 0's
    other_y = net.encode(other["caption"])["text_pooled"]
    with torch.no_grad():
        s_w2 = net.discriminator(x, other_y.roll(3, 0))
        s_r2 = net.discriminator(x, other_y)
        s_f2 = net.discriminator(net.generator(z, other_y), other_y)
    expect2 = -(F.logsigmoid(s_r2).mean() + 0.5 * (F.logsigmoid(-s_w2).mean() + F.logsigmoid(-s_f2).mean()))
    assert torch.allclose(cls.discriminator_loss(net, other, torch.Generator().manual_seed(5)), expect2, atol=1e-5)
    log = cls.log_stats()
    assert {"d_real_acc", "d_fake_acc", "d_wrong_acc"} <= set(log) and 0 <= log["d_wrong_acc"] <= 1


def test_gan_int_adds_the_generator_term_on_captions_interpolated_half_way():
    net, b = tiny_net(), batch()
    y = net.encode(b["caption"])["text_pooled"]
    method = build_method("gan", loss="hinge", matching_aware=True, interpolation=0.7)
    loss = method.generator_loss(net, b, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn((len(y), 8), generator=g)
    z2 = torch.randn((len(y), 8), generator=g)
    y_int = 0.5 * y + 0.5 * y.roll(3, 0)  # Reed et al. eq. 5, beta = 0.5
    with torch.no_grad():
        expect = -net.discriminator(net.generator(z1, y), y).mean() \
            - 0.7 * net.discriminator(net.generator(z2, y_int), y_int).mean()
    assert torch.allclose(loss, expect, atol=1e-5)


def test_the_nets_read_the_frozen_clip_text_tower_and_the_caption_changes_the_image():
    from imgen.nn.clip import CLIP
    from imgen.nn.text import encode_prompts

    net, clip = tiny_net(), CLIP.load(shipped_model_dir("shapes-clip"))
    prompts = ["a red circle in the center", "a blue square at the top"]
    enc = net.encode(prompts)
    assert enc["text_pooled"].shape == (2, 128) and not enc["text_pooled"].requires_grad
    with torch.no_grad():
        _, _, pooled = encode_prompts(prompts, clip.text_encoder, clip.tokenizer)
    assert torch.allclose(enc["text_pooled"], pooled, atol=1e-5)  # shapes-clip's own text features
    assert not any(p.requires_grad for p in net.text_encoder.parameters())
    players = {id(p) for p in list(net.generator.parameters()) + list(net.discriminator.parameters())}
    assert not players & {id(p) for p in net.text_encoder.parameters()}  # neither optimizer moves the encoder
    z = torch.randn(1, 8).expand(2, -1)
    x = net.generator(z, enc["text_pooled"])
    assert x.shape == (2, 3, 16, 16) and not torch.allclose(x[0], x[1])


def test_the_clip_discriminator_adds_a_projection_head_on_the_frozen_clip_image_tower():
    from imgen.nn.clip import CLIP

    net, clip = tiny_net(clip_discriminator=True), CLIP.load(shipped_model_dir("shapes-clip"))
    d, y = net.discriminator, net.encode(["a red circle", "a blue star", "a green cross"])["text_pooled"]
    tower = d.features.tower
    assert tower.state_dict().keys() == clip.image_encoder.state_dict().keys()
    assert all(torch.equal(v, clip.image_encoder.state_dict()[k]) for k, v in tower.state_dict().items())
    assert not any(p.requires_grad for p in tower.parameters())  # frozen: D's optimizer trains only the heads
    x = (torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    head = d.features.head
    h = F.leaky_relu(head["hidden"](clip.image_encoder(x)), 0.2)
    expect = d.pixel(x, y) + head["linear"](h).squeeze(1) + (head["embed"](y) * h).sum(1)
    out = d(x, y)
    assert torch.allclose(out, expect, atol=1e-5)
    (grad,) = torch.autograd.grad(d.features(x, y).sum(), x)  # G learns through the frozen tower
    assert grad.abs().sum() > 0


def test_bad_text_gan_options_get_one_clear_error(tmp_path):
    with pytest.raises(ImgenError, match="interpolation"):
        build_method("gan", interpolation=-1)
    with pytest.raises(ImgenError, match="matching_aware"):
        build_method("gan", matching_aware="yes")
    class_gan = build_net("gan", in_channels=1, image_size=8, num_classes=10, latent_dim=8, g_channels=8,
                          d_channels=8)
    with pytest.raises(ImgenError, match="text-conditional GAN"):
        build_method("gan", matching_aware=True).optimizers(class_gan, None)
    with pytest.raises(ImgenError, match="vocabulary"):
        build_net("text_gan", vocab=None)
    with pytest.raises(ImgenError, match="image tower"):
        build_net("text_gan", vocab=["a", "red", "circle"], clip_discriminator=True)
    with pytest.raises(ImgenError, match="captions"):
        build_method("gan", matching_aware=True).discriminator_loss(tiny_net(), {"image": torch.zeros(2, 3, 16, 16)})


# ---- the preset through the Trainer and the CLI ---------------------------------------------------------------------
def test_shapes_text_gan_preset_trains_and_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    train_preset("shapes-text-gan", tmp_path / "r", steps=2, overrides=TINY)
    train_preset("shapes-text-gan", tmp_path / "r", steps=4, overrides=TINY)  # resumes at step 2
    train_preset("shapes-text-gan", tmp_path / "s", steps=4, overrides=TINY)
    for name in ("model.safetensors", "ema.safetensors"):
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "s" / name).read_bytes(), name
    m = imgen.load(tmp_path / "r")
    assert m.is_text and m.config.net.name == "text_gan" and m.num_classes is None
    assert m.config.method.options["matching_aware"] and m.config.method.options["interpolation"] > 0


def test_imgen_generate_writes_the_ema_generators_images_for_the_prompt(tiny_model, tmp_path, capsys):
    code, out, err = run_cli(capsys, "generate", "a red circle", "--model", tiny_model, "--n", 3, "--seed", 4,
                             "--out", tmp_path / "imgs")
    assert code == 0, err
    pngs = sorted((tmp_path / "imgs").glob("*.png"))
    m = imgen.load(tiny_model)  # EMA weights
    want = ((m.generate(["a red circle"], n=3, seed=4) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    got = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in pngs])
    assert len(pngs) == 3 and got.shape == (3, 3, 16, 16)
    assert (got.int() - want.int()).abs().max() <= 1
    assert not torch.equal(m.generate(["a red circle"], seed=4), m.generate(["a blue star"], seed=4))
    assert run_cli(capsys, "generate", "a red circle", "--model", tiny_model, "--out", tmp_path / "g.png")[0] == 0
    assert (tmp_path / "g.png").is_file()


def test_bad_input_to_a_text_gan_gets_one_line_error(tiny_model, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert_one_line_error(*run_cli(capsys, "generate", "  ", "--model", tiny_model, "--out", out)[::2],
                          "the prompt is empty")
    assert_one_line_error(*run_cli(capsys, "sample", tiny_model, "--label", 3, "--out", out)[::2],
                          "takes prompts, not labels")
    assert_one_line_error(*run_cli(capsys, "sample", tiny_model, "--out", out)[::2], "imgen generate")
    assert_one_line_error(*run_cli(capsys, "generate", "a red circle", "--model", tiny_model, "--steps", 5,
                                   "--out", out)[::2], "--steps does not apply to gan models")
    assert_one_line_error(*run_cli(capsys, "generate", "a red circle", "--model", tiny_model, "--cfg", 3,
                                   "--out", out)[::2], "no classifier-free guidance")
    assert_one_line_error(*run_cli(capsys, "generate", "a red circle", "--model", tiny_model, "--unconditional",
                                   "--out", out)[::2], "no unconditional mode")
    assert not out.exists()
