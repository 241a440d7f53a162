"""The main job end to end: `imgen demo` trains the digits-flow preset from scratch and writes a report
whose samples a classifier we did not write (scikit-learn's SVC on real digits) reads as the requested digit."""
import json
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_trains_a_digits_model_that_an_svc_reads_correctly(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "imgen", "demo", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "demo report:" in proc.stdout
    data = json.loads((out / "report.json").read_text())
    euler = next(r for r in data["metrics"] if r["sampler"] == "euler")
    assert euler["NFE"] <= 25
    assert euler["SVC accuracy"] >= 0.97  # 500 samples, no guidance
    assert euler["NN distance ratio (>=0.5: not copies)"] >= 0.5
    html = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 4 and all((out / name).is_file() for name in images)
