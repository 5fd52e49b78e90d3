"""The throughput benchmark runs and prints its table (timings are never asserted)."""

import os
import subprocess
import sys

from conftest import REPO


def test_throughput_benchmark_prints_every_row():
    modes = ["inference", "predict", "score", "savedmodel", "training", "keras_resnet50_training"]
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--crop-size", "64", "--batch-sizes", "2",
         "--repeats", "1", "--modes", *modes],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("matmul ceiling: ") and "crop 64" in lines[0]
    assert lines[1].split()[:3] == ["mode", "batch", "crops/s"]
    rows = {line.split()[0]: line.split() for line in lines[3:] if line.strip()}
    assert sorted(rows) == sorted(modes)
    for mode, cells in rows.items():
        assert cells[1] == "2" and float(cells[2]) > 0 and cells[3].endswith("%"), (mode, cells)
