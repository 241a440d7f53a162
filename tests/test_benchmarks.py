"""Every benchmark script keeps its --quick mode (parsing only: nothing is trained or timed here)."""
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py"))


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_is_listed():
    assert {"digits_presets", "latent_vs_pixel", "metrics_speed", "nfe_quality", "t2i_backbones",
            "train_throughput"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_parser_accepts_quick(name):
    parser = load_benchmark(name).build_parser()
    assert parser.parse_args(["--quick"]).quick is True
    assert parser.parse_args([]).quick is False
