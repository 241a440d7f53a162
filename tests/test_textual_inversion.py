"""Textual inversion (Gal et al. 2022): a new word whose embedding is the only trained weight, its file, Model
and CLI use. (Learning the concept, a magenta triangle called "zorp", is measured by benchmarks/applications.py.)"""
import json

import pytest
import torch

import imgen
from imgen.checkpoint import save_tensors
from conftest import assert_one_line_error, run_cli
from imgen.data.files import save_image_folder
from imgen.errors import ImgenError
from imgen.metrics.adherence import word_concept
from imgen.nn.textual_inversion import KEY, add_tokens, remove_tokens, save_tokens, token_parameters, tokens_state_dict

BASE = "shapes-latent-t2i"


@pytest.fixture(scope="module")
def model():
    return imgen.load(BASE)


def test_a_new_word_starts_as_its_init_word_and_leaves_other_prompts_unchanged(model):
    net = model.net
    before = net.encode(["a red circle in the top left", "a small triangle on the left"])
    vocab = net.tokenizer.vocab_size
    assert add_tokens(net, ["zorp"], init=["triangle"]) == [vocab]
    try:
        after = net.encode(["a red circle in the top left", "a small zorp on the left"])
        assert torch.equal(after["text"][0], before["text"][0])
        assert torch.allclose(after["text"][1], before["text"][1], atol=1e-6)  # zorp = triangle at the start
        with pytest.raises(ImgenError, match="already has learned words"):
            add_tokens(net, ["blip"])
    finally:
        remove_tokens(net)
    assert net.tokenizer.vocab_size == vocab and "zorp" not in net.tokenizer.stoi
    with pytest.raises(ImgenError, match="already in the model's vocabulary"):
        add_tokens(net, ["red"])
    with pytest.raises(ImgenError, match="init word 'blorb' is not in"):
        add_tokens(net, ["zorp"], init=["blorb"])
    with pytest.raises(ImgenError, match="one lower-case word"):
        add_tokens(net, ["two words"])


def test_only_the_new_embedding_gets_gradients(model):
    net = model.net
    add_tokens(net, ["zorp"])
    try:
        x = torch.randn(2, 4, 8, 8)
        cond = {"caption": ["a zorp on the left", "a big zorp"], "drop": torch.zeros(2, dtype=torch.bool)}
        out = net(x, torch.rand(2), cond)
        out.square().mean().backward()
        (new,) = token_parameters(net)
        assert new.grad is not None and new.grad.abs().sum() > 0
        assert all(p.grad is None and not p.requires_grad for p in net.parameters() if p is not new)
    finally:
        remove_tokens(net)
        net.zero_grad(set_to_none=True)


def test_learned_words_round_trip_through_a_file(model, tmp_path):
    net = model.net
    add_tokens(net, ["zorp"], init=["star"])
    with torch.no_grad():
        token_parameters(net)[0].add_(0.3)
    meta = {"kind": "textual_inversion", "base": BASE, "words": ["zorp"]}
    path = save_tokens(net, tmp_path / "z.safetensors", meta)
    x = model.generate(["a zorp in the center"], steps=2, seed=0)
    saved = tokens_state_dict(net)
    remove_tokens(net)
    assert path.stat().st_size < 2048 and json.loads(path.with_suffix(".json").read_text()) == meta
    assert model.load_tokens(path)["words"] == ["zorp"]
    assert torch.equal(tokens_state_dict(net)["text_encoder.token_emb.new"], saved["text_encoder.token_emb.new"])
    assert torch.allclose(model.generate(["a zorp in the center"], steps=2, seed=0), x, atol=1e-5)
    model.unload_tokens()
    assert "zorp" not in net.tokenizer.stoi


def test_cli_learns_a_word_in_a_few_steps_and_uses_it(capsys, tmp_path):
    images, captions, _ = word_concept(4)
    assert all("zorp" in c for c in captions)
    data = save_image_folder(tmp_path / "zorps", images, captions)
    out = tmp_path / "zorp.safetensors"
    code, stdout, err = run_cli(capsys, "finetune", "textual-inversion", BASE, "--data", data, "--out", out, "--word",
                            "zorp", "--init-word", "triangle", "--steps", 2, "--batch-size", 4, "--quiet")
    assert code == 0, err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["words"] == ["zorp"] and meta["steps"] == 2 and meta["base"] == BASE
    code, stdout, err = run_cli(capsys, "generate", "a big zorp on the left", "--embedding", out, "--steps", 2, "--out",
                            tmp_path / "z.png")
    assert code == 0 and "zorp" in stdout and (tmp_path / "z.png").is_file(), err
    for argv, pattern in ((["--word", "red"], "already in the model's vocabulary"), ([], "needs --word"),
                          (["--word", "zorp", "--init-word", "blorb"], "init word 'blorb'")):
        code, _, err = run_cli(capsys, "finetune", "textual-inversion", BASE, "--data", data, "--out",
                           tmp_path / "b.safetensors", "--steps", 1, *argv)
        assert_one_line_error(code, err, pattern)
    save_tensors({"layer.lora_A": torch.zeros(2, 3)}, tmp_path / "other.safetensors", {"rank": 2})
    save_tensors({KEY: torch.zeros(1, 7)}, tmp_path / "narrow.safetensors", {"words": ["zorp"], "base": "tiny"})
    for name, pattern in (("none", "not found"), ("other", "is not a textual-inversion file"),
                          ("narrow", "learned for another base model")):
        code, _, err = run_cli(capsys, "generate", "a zorp", "--embedding", tmp_path / f"{name}.safetensors", "--out",
                           tmp_path / "z.png")
        assert_one_line_error(code, err, pattern)
