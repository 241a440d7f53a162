"""Models shipped inside the package, each trained by imgen's own scripts: pretrained/models/<name>/ holds
config.json, ema.safetensors and CARD.md (command, data, steps, metrics). Evaluator nets live in evaluators/."""
from __future__ import annotations

from pathlib import Path

from imgen.errors import ImgenError

MODELS_DIR = Path(__file__).resolve().parent / "models"
SHIPPED_MODELS = ("shapes-latent-t2i", "shapes-ae", "shapes-clip", "shapes-scenes-clip")  # t2i, its AE, CLIPs
DEFAULT_TEXT_MODEL = "shapes-latent-t2i"


def shipped_model_dir(name: str) -> Path:
    """The directory of a shipped model, for imgen.load."""
    if name not in SHIPPED_MODELS:
        raise ImgenError(f"no shipped model named {name!r}; shipped models: {', '.join(SHIPPED_MODELS)}")
    path = MODELS_DIR / name
    if not (path / "config.json").is_file() or not list(path.glob("*.safetensors")):
        raise ImgenError(f"the shipped model {name!r} is missing from {path}; reinstall imgen, or rebuild it with "
                         f"`python scripts/train_shipped.py {name}`")
    return path


def resolve_model_path(name_or_dir) -> Path:
    """A directory as given, or a shipped model's directory when `name_or_dir` is a shipped name and no such
    directory exists here."""
    if str(name_or_dir) in SHIPPED_MODELS and not Path(name_or_dir).is_dir():
        return shipped_model_dir(str(name_or_dir))
    return Path(name_or_dir)
