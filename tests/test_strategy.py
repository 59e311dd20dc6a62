"""The MirroredStrategy path, on a CPU split into two logical devices (in a fresh process:
devices can only be configured before TensorFlow starts)."""
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT, spec_file, write_competition


@pytest.mark.slow
def test_mirrored_strategy_trains_a_fold_on_two_logical_cpus(tmp_path):
    write_competition(tmp_path / "data")
    spec = spec_file(tmp_path, strategy="mirrored", batch_size=4)
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from kit.config import load_spec
        from kit.train import run_fold
        run_fold(load_spec({str(spec)!r}), "vgg16", 0)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "runs" / "tiny" / "vgg16" / "fold0" / "log.txt").read_text()
    assert "2 replica(s) (MirroredStrategy), batch 4 per device (8 in all)" in log
    assert (tmp_path / "runs" / "tiny" / "vgg16" / "fold0" / "test.csv").is_file()


@pytest.mark.slow
def test_mixed_precision_computes_the_base_in_bfloat16_and_the_head_in_float32(tiny):
    import keras
    import numpy as np
    import pandas as pd

    from kit.train import run_fold

    out = run_fold(tiny(mixed_precision="bfloat16"), "vgg16", 0)
    assert "mixed_bfloat16, XLA off" in (out / "log.txt").read_text()
    model = keras.saving.load_model(out / "model.keras")
    base = model.get_layer("base").base
    assert base.get_layer("block5_conv3").compute_dtype == "bfloat16"
    assert model.get_layer("head").compute_dtype == "float32"
    np.testing.assert_allclose(pd.read_csv(out / "test.csv")[["a", "b"]].sum(1), 1, rtol=1e-5)


@pytest.mark.slow
def test_xla_compiles_the_training_step(tiny, recwarn):
    from tensorflow.python.framework import config as tf_config

    from kit.train import run_fold

    out = run_fold(tiny(jit_compile="on"), "vgg16", 0)
    assert "float32, XLA on, deterministic ops off" in (out / "log.txt").read_text()
    assert (out / "test.csv").is_file() and not tf_config.is_op_determinism_enabled()
    # Keras falls back to plain graphs with no more than a warning when XLA can't be had.
    assert not [w for w in recwarn if "jit_compile" in str(w.message)]


def test_batches_prefetched_to_a_device_are_the_same_batches(tmp_path):
    import numpy as np
    from PIL import Image

    from kit.cache import Images
    from kit.inputs import on_device, train_stream

    paths = []
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    ds, _ = train_stream(Images(paths, 8), np.arange(6), np.arange(6), None, 0, (0, 2), 4)
    for (xa, ya), (xb, yb) in zip(ds, on_device(ds, "/cpu:0")):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
