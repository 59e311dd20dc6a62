"""`make bench` runs end to end (tiny sizes here: its numbers are only meaningful at full size)."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_quick_bench_measures_everything_and_saves_a_table(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kit", "bench", "quick=1"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "runs" / "bench" / "quick.csv")  # bench.csv is the full run's
    assert {"pipeline: kit as it trains (decoded once) / loop", "pipeline at 32px: processes 2",
            "pipeline: plain threads, 2 workers / 1", "records: HDF5 / image files, decode rate", "top:1 phase, vgg16: speed-up", "top:1 phase, resnet50: speed-up",
            "training epoch: kit / raw", "head phase: speed-up",
            "prediction with 5 TTA views", "scaling: peak memory 16x / 1x",
            "scaling: time, largest gap to a straight line", "make all: 4 runs / 2 runs, peak memory",
            "training option ema: 0.999: epoch / plain", "tables: load_data, 10000 / 500 ids", "tables: load_ids, 10000 / 500 ids", "training option lr_mult: 0.5: epoch / plain",
            "frozen base forward pass: dinov2_small at 112px", "frozen base forward pass: swin_tiny at 224px"} <= set(
                table["measure"])
    assert (table["value"] > 0).all() and set(table["pass"].dropna()) == {"quick"}  # too small to judge
    assert not (tmp_path / "runs" / "bench" / "bench.csv").exists()
    assert any(m.startswith("pipeline: kit without the image cache / best pool (") for m in table["measure"])
    assert "pipeline: kit as it trains (decoded once) / loop" in result.stdout
