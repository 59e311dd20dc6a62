"""The MirroredStrategy path, on a CPU split into two logical devices (in a fresh process:
devices can only be configured before TensorFlow starts)."""
import subprocess
import sys
import textwrap

from conftest import ROOT, spec_file, write_competition


def test_mirrored_strategy_trains_a_fold_on_two_logical_cpus(tmp_path):
    write_competition(tmp_path / "data")
    spec = spec_file(tmp_path, strategy="mirrored", batch_size=4)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from kit.config import load_spec
        from kit.train import run_fold
        run_fold(load_spec({str(spec)!r}), "vgg16", 0)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "runs" / "tiny" / "vgg16" / "fold0" / "log.txt").read_text()
    assert "2 replica(s) (MirroredStrategy)" in log
    assert (tmp_path / "runs" / "tiny" / "vgg16" / "fold0" / "test.csv").is_file()
