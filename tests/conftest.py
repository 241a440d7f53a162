import json

import numpy as np
import pytest
import torch

from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig


def tiny_config(steps: int = 6, **train) -> Config:
    """A class-conditional digits model small enough to train a few steps in about a second."""
    return Config(
        description="tiny test model",
        data=DataConfig("digits", {}, batch_size=16),
        net=NetConfig("unet", {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                               "attn_resolutions": [4], "num_heads": 2}),
        method=MethodConfig("flow_matching", {"cond_drop": 0.1}),
        train=TrainConfig(steps=steps, lr=1e-3, warmup=2, ckpt_every=2, log_every=1, **train),
        sample=SampleConfig("euler", steps=4),
    )


@pytest.fixture
def tiny_config_file(tmp_path):
    def make(steps: int = 6, **train):
        path = tmp_path / "tiny.json"
        path.write_text(json.dumps(tiny_config(steps, **train).to_dict()))
        return path
    return make


def fit(method, net, data, steps: int, batch_size: int, lr: float, seed: int = 0) -> list[float]:
    """A bare AdamW loop over `method.loss` (for tests of a loss alone, without the Trainer); the losses per step."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        batch = data.get(np.arange(step * batch_size, (step + 1) * batch_size) % len(data))
        loss = method.loss(net, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def overfit_eps(net, x_t, t, eps, cond=None, steps: int = 50, lr: float = 2e-3) -> list[float]:
    """Adam on the eps-prediction MSE of one fixed batch (a net's overfit check); the losses per step."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = ((net(x_t, t, cond) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
