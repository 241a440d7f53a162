"""The Trainer hooks every adversarial method shares (imgen.methods.gan, translation, srgan): one AdamW for the
discriminator(s) and one for the generator(s), the discriminator stepped first (n_critic times for WGAN-GP), and
diagnostics averaged over the log window. A subclass defines _check(net), discriminator_loss and generator_loss."""
from __future__ import annotations

import torch


class AdversarialMethod:
    n_critic: int = 1  # discriminator updates per generator update
    d_lr_scale: float = 1.0  # the discriminator's learning rate relative to train.lr (TTUR, Heusel et al. 2017)

    @staticmethod
    def players(net) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(discriminator, generator) modules of `net`, each trained by its own optimizer."""
        return net.discriminator, net.generator

    def optimizers(self, net, t) -> dict[str, torch.optim.Optimizer]:
        self._check(net)
        d, g = self.players(net)
        return {"discriminator": t.adamw(d.parameters(), t.lr * self.d_lr_scale), "generator": t.adamw(g.parameters())}

    def updates(self):
        return [("discriminator", self.discriminator_loss)] * self.n_critic + [("generator", self.generator_loss)]

    def _log(self, **values) -> None:
        """Record diagnostics (tensors or numbers) for this log window."""
        stats = self.__dict__.setdefault("_stats", {})
        for k, v in values.items():
            stats.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))

    def log_stats(self) -> dict:
        """The mean of each diagnostic since the last call (the Trainer adds them to the log line)."""
        return {k: sum(v) / len(v) for k, v in self.__dict__.pop("_stats", {}).items() if v}
