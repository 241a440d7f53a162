"""imgen: train, sample, evaluate and serve image generators on a laptop CPU."""
__version__ = "0.1.0"

from imgen.errors import ImgenError  # noqa: E402

__all__ = ["ImgenError", "__version__", "load"]


def load(path, device="cpu"):
    """Load a trained model directory (config.json + safetensors) as a ready-to-sample model."""
    from imgen.model import load as _load

    return _load(path, device=device)
