"""The image cache against the room it goes to: what fits is kept and the log says so, a full
disk is one line with nothing left behind, Ctrl-C stops the build at once."""
import collections
import errno
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import kit.cache
import kit.files
from kit import KitError
from kit.cache import load_images
from kit.cli import _run
from kit.decode import read_rgb
from tests.helpers import ROOT, TINY, spec_file, write_competition

Usage = collections.namedtuple("Usage", "total used free")
PER = 16 * 16 * 3  # bytes of one image at 16px


def full_disk(fd, offset, length):
    raise OSError(errno.ENOSPC, "No space left on device")


def free_disk(monkeypatch, images, side=16):
    """A disk with room for `images` images of `side` px beyond what the kit leaves free (a tenth of it)."""
    total, per = 10 * 2**20, side * side * 3
    monkeypatch.setattr(kit.cache.shutil, "disk_usage", lambda _: Usage(total, 0, total // 10 + images * per))


def test_a_disk_without_room_for_all_keeps_the_first_images_and_decodes_the_rest(photos, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    free_disk(monkeypatch, 3)
    [keep], line = kit.cache.keeping([photos], 16, "auto", cache, 0, kit.cache.Reader())
    assert keep.count == 3 and "3 are kept on disk, the other 3 decoded on each read" in line
    images, bad = load_images(photos, 16, "auto", cache, limit_mb=0)
    assert len(images.array) == 3 and list(bad) == [photos[5]]  # the uncached ones are checked too
    for i in range(5):
        np.testing.assert_array_equal(images[i], read_rgb(photos[i], 16))
    [part] = cache.glob("images-16-*.npy")
    assert part.name.endswith("-first3.npy")

    free_disk(monkeypatch, 2)  # less room later (its own file counts as room): the part is kept
    assert len(load_images(photos, 16, "auto", cache, limit_mb=0)[0].array) == 3
    free_disk(monkeypatch, 4)  # room for all beside the part, which is then given up
    images, _ = load_images(photos, 16, "auto", cache, limit_mb=0)
    assert len(images.array) == 6 and [p.name.endswith("-first3.npy") for p in cache.glob("*.npy")] == [False]


def test_disk_or_memory_asked_for_and_not_fitting_is_one_line_with_the_sizes_and_the_keys(photos, tmp_path,
                                                                                         monkeypatch):
    free_disk(monkeypatch, 3)
    with pytest.raises(KitError, match=r"image_cache: disk needs 0.3 MiB in .* has 1.0 MiB free: .*image_cache: auto.*image_size"):
        load_images(photos, 16 * 8, "disk", tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npy"))
    monkeypatch.setattr(kit.cache, "available_memory", lambda: 4 * PER)
    with pytest.raises(KitError, match=r"image_cache: memory needs 4.5 KiB and this machine has 3.0 KiB of memory free"):
        load_images(photos, 16, "memory")
    images, _ = load_images(photos, 16, "auto", tmp_path / "cache", limit_mb=64)  # auto: disk instead
    assert isinstance(images.array, np.memmap)


def test_the_run_log_says_where_the_images_are_kept(tiny, monkeypatch):
    from kit.train import run_fold
    free_disk(monkeypatch, 10, 32)
    spec = tiny(image_cache="auto", cache_mb=0, schedule=TINY["schedule"][:1])
    log = (run_fold(spec, "vgg16", 0) / "log.txt").read_text()
    assert "10 are kept on disk, the other 22 decoded on each read" in log


def test_a_disk_that_fills_during_the_build_is_one_line_exit_1_and_no_file_left(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(kit.files.os, "posix_fallocate", full_disk)
    assert _run(lambda: load_images(photos, 16, "disk", tmp_path / "cache")) == 1
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".lock"]
    monkeypatch.undo()
    assert _run(lambda: load_images(photos, 16, "disk", tmp_path / "cache")) == 0  # once there is room


def test_cached_outputs_on_a_disk_that_fills_are_the_same_line_and_leave_no_file(tmp_path, monkeypatch, capsys):
    import keras

    from kit.cache import Images
    from kit.features import extract
    net = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D()])
    images = Images(["x"] * 4, 16, array=np.zeros((4, 16, 16, 3), np.uint8))
    monkeypatch.setattr(kit.files.os, "posix_fallocate", full_disk)
    assert _run(lambda: extract(net, images, np.arange(4), 2, [None], 0, folder=tmp_path / "cache")) == 1
    assert "no space left on the disk (the cached outputs in" in capsys.readouterr().err
    assert not list((tmp_path / "cache").iterdir())
    monkeypatch.undo()
    assert extract(net, images, np.arange(4), 2, [None], 0, folder=tmp_path / "cache").shape == (1, 4, 3)


FILL = """
import shutil
import sys
from kit.cache import load_images
from kit.cli import _run
paths, folder = sys.argv[2:], sys.argv[1]
class Roomy:  # the check before the build sees room: another process fills the disk after it
    total, used, free = 2**40, 0, 2**39
shutil.disk_usage = lambda _: Roomy
sys.exit(_run(lambda: load_images(paths, 320, "disk", folder)))
"""


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare to mount a tiny filesystem")
def test_a_really_full_filesystem_ends_in_the_promised_line_not_a_bus_error(photos, tmp_path):
    """A 1 MiB tmpfs (user and mount namespaces: no root needed) holds no 6 x 300 KiB cache."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size=1m none {disk} || exit 77\n"
              f"{sys.executable} -c '{FILL}' {disk} {' '.join(photos)}; echo rc=$?\n"
              f"ls -a {disk}; mount -o remount,size=4m {disk}\n"
              f"{sys.executable} -c '{FILL}' {disk} {' '.join(photos)}; echo rc=$?\n")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True)
    if out.returncode == 77:
        pytest.skip("this machine allows no tmpfs mount in a user namespace")
    first, _, second = out.stdout.partition("rc=")[2].partition("rc=")
    assert first.startswith("1\n"), out.stdout + out.stderr  # not 135: SIGBUS
    assert out.stderr.count("error: no space left on the disk") == 1 and "Traceback" not in out.stderr
    assert ".images-" not in first and ".npy" not in first  # nothing half-written left behind
    assert second.startswith("0\n"), out.stdout + out.stderr  # the same command, once there is room


@pytest.mark.slow
def test_ctrl_c_during_the_cache_build_stops_at_once_and_leaves_no_file(tmp_path):
    """One decode hangs (as on a disk throttling writes): Ctrl-C waits for no decode in flight."""
    write_competition(tmp_path / "data", n_train=40)
    spec = spec_file(tmp_path, image_cache="disk", image_size=16)
    code = ("import runpy, sys, time\n"
            "import kit.containers\n"
            "real = kit.containers.read_rgb\n"
            "def read(path, size):\n"
            "    if path.endswith('tr007.png'):\n"
            "        time.sleep(300)\n"
            "    return real(path, size)\n"
            "kit.containers.read_rgb = read\n"
            f"sys.argv = ['kit', 'train', 'competition={spec}', 'fold=0', 'backbone=vgg16']\n"
            "runpy.run_module('kit', run_name='__main__')\n")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    cache = tmp_path / "runs" / "tiny" / "cache"
    deadline = time.monotonic() + 120
    while not list(cache.glob(".images-*.npy")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - start < 5 and process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not list(cache.glob("*.npy")) and not list(cache.glob(".*"))


SAVE = """
import sys
import numpy as np
from kit.cli import _run
sys.exit(_run(lambda: np.save(sys.argv[1], np.zeros(2**19))))
"""


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare to mount a tiny filesystem")
def test_numpys_short_write_on_a_full_filesystem_is_the_same_line(tmp_path):
    """np.save (a checkpoint's arrays) reports a full disk as a short write, with no errno."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"mount -t tmpfs -o size=1m none {disk} || exit 77\n{sys.executable} -c '{SAVE}' {disk}/a.npy"
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True)
    if out.returncode == 77:
        pytest.skip("this machine allows no tmpfs mount in a user namespace")
    assert out.returncode == 1 and out.stderr.startswith("error: no space left on the disk"), out.stderr
