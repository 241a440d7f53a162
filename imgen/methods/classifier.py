"""Training a noise-aware classifier p(y | x_t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4.1):
cross-entropy on images noised by the *guided model's own* schedule x_t = alpha(t) x0 + sigma(t) eps, at t
uniform in [t_eps, 1], so the classifier has seen every x_t a sampler will show it. Guide with
imgen.guidance.classifier_guidance(denoiser, net, scale, labels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imgen.denoiser import _bcast
from imgen.errors import ImgenError
from imgen.schedules import Schedule, build_schedule


class NoisyClassifierMethod:
    """loss(net, batch) for a classifier net(x_t, t) -> logits; needs labelled data (batch["label"])."""

    def __init__(self, schedule: Schedule, t_eps: float = 1e-3):
        if not 0.0 <= t_eps < 1.0:
            raise ImgenError(f"t_eps must be in [0, 1), got {t_eps}")
        self.schedule, self.t_eps = schedule, float(t_eps)

    def sample_t(self, n: int, generator=None) -> torch.Tensor:
        return self.t_eps + (self.schedule.t_max - self.t_eps) * torch.rand(n, generator=generator, dtype=torch.float64)

    def noised(self, x0: torch.Tensor, t: torch.Tensor, generator=None) -> torch.Tensor:
        """x_t = alpha(t) x0 + sigma(t) eps on the model's path."""
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        return _bcast(self.schedule.alpha(t), x0) * x0 + _bcast(self.schedule.sigma(t), x0) * eps

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        if "label" not in batch:
            raise ImgenError("the noisy_classifier method needs labelled data (batch['label']); "
                             "train it on a labelled dataset such as 'digits'")
        x0 = batch["image"] if "image" in batch else batch["x"]
        t = self.sample_t(len(x0), generator)
        logits = net(self.noised(x0, t, generator), t.to(x0.dtype))
        return F.cross_entropy(logits, batch["label"])  # -log p(y | x_t, t)

    @torch.no_grad()
    def accuracy(self, net, batch: dict, t: float, generator=None) -> float:
        """Fraction of batch classified correctly at the single time t (0 = clean images)."""
        x0 = batch["image"] if "image" in batch else batch["x"]
        tt = torch.full((len(x0),), float(t), dtype=torch.float64)
        logits = net(self.noised(x0, tt, generator), tt.to(x0.dtype))
        return float((logits.argmax(1) == batch["label"]).double().mean())


def noisy_classifier(schedule: str = "cosine", schedule_options: dict | None = None, t_eps: float = 1e-3):
    """Classifier on x_t of the named schedule; give the same schedule (and options) as the model it guides."""
    return NoisyClassifierMethod(build_schedule(schedule, **(schedule_options or {})), t_eps)


def random_shift(x: torch.Tensor, max_shift: int, generator=None) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (edge padding), a cheap augmentation."""
    n, _, h, w = x.shape
    p = F.pad(x, (max_shift,) * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    return torch.stack([p[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


class AttributeClassifierMethod:
    """loss(net, batch) for a multi-head classifier net(x) -> {head: logits} (imgen's evaluator nets): the sum over
    `heads` of the cross-entropy against batch["label"] (head "label") or batch["attrs"][head], on images shifted
    by up to `max_shift` pixels plus Gaussian noise of std `noise` (augmentations). A target of -1 is ignored (an
    attribute the item does not have, e.g. the colour of an empty grid cell); a head with slots takes (B, slots)
    targets. `max_shift` moves objects across cell borders: keep it 0 for heads that read positions."""

    def __init__(self, heads: list | None = None, label_smoothing: float = 0.0, max_shift: int = 0, noise: float = 0.0):
        self.heads = list(heads or ["label"])
        if not 0.0 <= label_smoothing < 1.0 or max_shift < 0 or noise < 0:
            raise ImgenError("attribute_classifier needs 0 <= label_smoothing < 1, max_shift >= 0 and noise >= 0")
        self.label_smoothing, self.max_shift, self.noise = float(label_smoothing), int(max_shift), float(noise)

    def targets(self, batch: dict) -> dict:
        try:
            return {k: batch["label"] if k == "label" else batch["attrs"][k] for k in self.heads}
        except KeyError as e:
            raise ImgenError(f"attribute_classifier head {e.args[0]!r} has no targets in this dataset's batches "
                             f"(it gives {sorted(batch)}); choose heads the data labels") from None

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x = batch["image"]
        if self.max_shift:
            x = random_shift(x, self.max_shift, generator)
        if self.noise:
            x = x + self.noise * torch.randn(x.shape, generator=generator)
        out = net(x)
        return sum(F.cross_entropy(out[k], y, ignore_index=-1, label_smoothing=self.label_smoothing)
                   for k, y in self.targets(batch).items())

    def denoiser(self, net):
        raise ImgenError("an attribute classifier classifies images; it does not sample")


def attribute_classifier(heads: list | None = None, label_smoothing: float = 0.0, max_shift: int = 0,
                         noise: float = 0.0) -> AttributeClassifierMethod:
    return AttributeClassifierMethod(heads, label_smoothing, max_shift, noise)
