"""Things that train models, above imgen.train: reflow pairs and 2-rectified flow, progressive distillation,
CLIP and unCLIP training. Methods (imgen.methods) own losses; recipes chain Trainer runs."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from torch import nn

from imgen.config import Config
from imgen.train import Trainer


def fit(config: Config, out_dir: str | Path | None, progress: bool = True) -> tuple[nn.Module, list[float]]:
    """Train `config` into out_dir (a fresh temp dir when None; a rerun resumes) -> (the trained net in eval mode,
    the losses its log.jsonl holds: one per step when train.log_every=1)."""
    out = Path(tempfile.mkdtemp(prefix="imgen-")) / "model" if out_dir is None else Path(out_dir)
    trainer = Trainer(config, out, progress)
    trainer.fit()
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    return trainer.net.eval(), losses
