"""imgen's own evaluator networks, shipped in imgen/pretrained/evaluators/<name>/
{model.safetensors, config.json, CARD.md} and trained by scripts/train_evaluators.py on the built-in data.

`load_evaluator("digits-eval")` / `load_evaluator("shapes-eval")` returns an Evaluator that takes any
(N, C, H, W) images in [-1, 1], adapts them to the net's native size and channels (area-downsampling larger
images), and gives features (the `digits-eval` / `shapes-eval` feature spaces), logits, and predictions.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from imgen.errors import ImgenError
from imgen.images import adapt_images
from imgen.nn.classifier import ClassifierConfig, EvaluatorClassifier

EVALUATOR_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "evaluators"
EVALUATORS = ("digits-eval", "shapes-eval", "shapes-cells")


class Evaluator:
    """A trained EvaluatorClassifier plus its name, attribute value names and weights fingerprint."""

    def __init__(self, name: str, net: EvaluatorClassifier, meta: dict, fingerprint: str):
        self.name, self.net, self.meta, self.fingerprint = name, net.eval().requires_grad_(False), meta, fingerprint
        self.cfg = net.cfg
        self.dim = net.cfg.feature_dim
        self.attributes = list(net.cfg.heads)
        self.value_names: dict[str, list[str]] = meta.get("value_names", {})

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return adapt_images(images, self.cfg.in_channels, self.cfg.image_size)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) penultimate features."""
        return self.net.features(self.prepare(images))

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(self.prepare(images))

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = self.net.features(self.prepare(images))
        return feats, self.net.head_logits(feats)

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """dict attribute -> (N,) int64 predicted class index (names in `value_names[attribute]`); (N, slots)
        for a head that reads several slots (shapes-cells: one per grid cell)."""
        return {k: v.argmax(1) for k, v in self.logits(images).items()}

    @torch.no_grad()
    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.net.feature_maps(self.prepare(images))


def save_evaluator(net: EvaluatorClassifier, folder: str | Path, meta: dict) -> Path:
    """Write model.safetensors + config.json (net config + `meta`: value names, training command, accuracy)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.safetensors.tmp"
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.chmod(0o644)
    tmp.replace(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"net": net.cfg.to_dict(), **meta}, indent=2) + "\n")
    return folder


def load_evaluator(name: str, root: str | Path | None = None) -> Evaluator:
    """Load a shipped evaluator by name ("digits-eval", "shapes-eval") or from a folder path."""
    from safetensors.torch import load_file

    folder = Path(root) / name if root else (EVALUATOR_DIR / name if name in EVALUATORS else Path(name))
    weights, config = folder / "model.safetensors", folder / "config.json"
    if not weights.is_file() or not config.is_file():
        raise ImgenError(f"evaluator {name!r}: {weights} or {config} is missing; reinstall imgen or rebuild it with "
                         "`python scripts/train_evaluators.py`")
    meta = json.loads(config.read_text())
    with torch.random.fork_rng(devices=[]):  # the init weights drawn here are overwritten: leave the caller's RNG be
        net = EvaluatorClassifier(ClassifierConfig.from_dict(meta.pop("net")))
    net.load_state_dict(load_file(str(weights)))
    fingerprint = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    return Evaluator(meta.get("name", folder.name), net, meta, fingerprint)
