"""Access to the peer implementations the tests and benchmarks cross-check against (torchmetrics,
torch-fidelity). Not used by imgen's own metrics.

torch-fidelity's package __init__ imports torchvision (for its CLIP/VGG extractors), and torchmetrics imports
torch-fidelity whenever it is installed, so without torchvision `import torchmetrics` fails. imgen never installs
torchvision; `import_torch_fidelity_lite()` registers torch_fidelity as a bare package so its torchvision-free
submodules (the InceptionV3 extractor, helpers, TF1 resize) import on their own.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def import_torch_fidelity_lite():
    """Return the torch_fidelity package object without running its torchvision-importing __init__."""
    if "torch_fidelity" in sys.modules:
        return sys.modules["torch_fidelity"]
    try:
        importlib.import_module("torchvision")
        return importlib.import_module("torch_fidelity")
    except ImportError:
        pass
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        raise ImportError("torch-fidelity is not installed: pip install --no-deps torch-fidelity")
    pkg = types.ModuleType("torch_fidelity")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["torch_fidelity"] = pkg
    return pkg


def import_torchmetrics():
    """`import torchmetrics` that works with torch-fidelity installed but torchvision absent."""
    if importlib.util.find_spec("torch_fidelity") is not None:
        import_torch_fidelity_lite()
    return importlib.import_module("torchmetrics")

