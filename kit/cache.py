"""Images decoded and resized once, and kept: in memory when they fit under `cache_mb`, else in
a file on disk (memory-mapped, shared by every fold and backbone at that size), or not at all.

The cache's size is set against the room it goes to before any decoding (`keeping`): a cache
the disk cannot hold keeps the images that fit and decodes the rest on each read, and says so.
The pass that fills the cache is the one that finds unreadable images, so caching costs no
extra decoding. Without a cache, images are decoded each time they are read.
"""
import collections
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit import KitError
from kit.containers import SEP, Reader, reader
from kit.decode import VERSION as DECODER_VERSION
from kit.decode import BadImage
from kit.env import available_memory, worker_count
from kit.files import atomic_path, locked, reserve, size_text, write_text
from kit.runs import cache_dir

GIB = 2**30


class Images:
    """The images of a table by index (files' paths or records' names), as (size, size, 3) uint8:
    the first len(array) from the cache, the rest decoded on each read."""

    def __init__(self, paths, size, read=None, array=None):
        self.paths, self.size, self.reader = list(paths), size, read or Reader()
        self.array = np.empty((0, size, size, 3), np.uint8) if array is None else array

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.array[i] if i < len(self.array) else self.reader.read(self.paths[i], self.size)


class Joined:
    """Two image sources as one, indexed on: the first's images, then the second's (training
    images followed by pseudo-labelled test images)."""

    def __init__(self, first, second):
        self.first, self.second, self.size = first, second, first.size

    def __len__(self):
        return len(self.first) + len(self.second)

    def __getitem__(self, i):
        return self.first[i] if i < len(self.first) else self.second[i - len(self.first)]


@dataclass(frozen=True)
class Keep:
    """How a table's images are kept: `count` of them (the first) in memory or in `file`; the
    rest are decoded on each read."""

    count: int
    file: Path | None = None  # a memory-mapped .npy; None: in memory


def competition_images(spec, data, size, log=None):
    """(train images, test images, {path: reason} of the unreadable training images), kept as the
    spec says; `log` hears where."""
    read = reader(spec)
    tables = [[str(p) for p in data.train["path"]], [str(p) for p in data.test["path"]]]
    keeps, line = keeping(tables, size, spec.image_cache, cache_dir(spec), spec.cache_mb, read)
    if log:
        log(line)
    (train, bad), (test, test_bad) = (_load(t, size, k, spec.workers, read) for t, k in zip(tables, keeps))
    _refuse_unreadable(test_bad)
    return train, test, bad


def test_images(spec, test, size):
    """The images of a test table, kept as the spec says. An unreadable one is an error: a
    submission needs every row."""
    images, bad = load_images(test["path"], size, spec.image_cache, cache_dir(spec), spec.cache_mb,
                              spec.workers, reader(spec))
    _refuse_unreadable(bad)
    return images


def _refuse_unreadable(bad):
    if bad:
        path, reason = next(iter(bad.items()))
        raise KitError(f"{len(bad)} test images cannot be read (a submission needs every row), "
                       f"e.g. {path}: {reason}")


def load_images(paths, size, mode="auto", folder=None, limit_mb=2048, workers=0, read=None):
    """(images, {path: reason} of the unreadable ones). `mode`: auto (memory if it fits under
    `limit_mb`, else disk in `folder`, default the system's temporary one, as much as fits),
    memory, disk, off. `read`: the Reader of records and DICOM."""
    paths, read = [str(p) for p in paths], read or Reader()
    [keep], _ = keeping([paths], size, mode, Path(folder or tempfile.gettempdir()), limit_mb, read)
    return _load(paths, size, keep, workers, read)


def keeping(tables, size, mode, folder, limit_mb, read):
    """(a Keep per table of paths, one line saying where they are kept), decided before any
    decoding: memory when `limit_mb` and the machine's free memory hold them all, else files in
    `folder` as far as its free disk goes (the training table first: it is read every epoch).
    `mode` disk or memory, when it does not fit, is one line naming the size, the room and the
    keys that change it."""
    per, n = size * size * 3, sum(map(len, tables))
    need, what = per * n, f"image cache of {n} images at {size}px"
    if mode == "off" or n == 0:
        return [Keep(0) for _ in tables], f"{what}: off (decoded on each read)"
    if mode == "memory" or mode == "auto" and need <= limit_mb * 2**20:
        free = available_memory()
        if need <= free:
            return [Keep(len(t)) for t in tables], f"{what}: {size_text(need)} in memory"
        if mode == "memory":
            raise KitError(f"image_cache: memory needs {size_text(need)} and this machine has "
                           f"{size_text(free)} of memory free: set image_cache: auto (disk), or a smaller "
                           f"image_size")
    folder.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(folder)
    room = usage.free - min(GIB, usage.total // 10)  # left for checkpoints, predictions, logs
    keeps = []
    for paths in tables:
        file = _named(paths, size, read, folder)
        parts = _parts(file)  # kept by an earlier run with less room: given up when all fit now
        room += sum(p.stat().st_size for p in parts)
        if _built(file) or len(paths) * per <= room:
            room -= 0 if _built(file) else len(paths) * per
            keeps.append(Keep(len(paths), file))
            continue
        if mode == "disk":
            raise KitError(f"image_cache: disk needs {size_text(need)} in {folder} and it has "
                           f"{size_text(usage.free)} free: free some, set image_cache: auto (keeps what "
                           f"fits, decodes the rest) or off, or a smaller image_size")
        count = _count(parts[0]) if parts else max(room // per, 0)
        room -= count * per
        keeps.append(Keep(count, file.with_name(f"{file.stem}-first{count}.npy") if count else None))
    kept = sum(k.count for k in keeps)
    if kept == n:
        return keeps, f"{what}: {size_text(need)} on disk in {folder} ({size_text(usage.free)} free)"
    return keeps, (f"{what} needs {size_text(need)} and {folder} has {size_text(usage.free)} free: {kept} "
                   f"are kept on disk, the other {n - kept} decoded on each read (free "
                   f"{size_text((n - kept) * per)} more, or set a smaller image_size, to keep all)")


def _load(paths, size, keep, workers, read):
    if keep.file is None:
        array = np.empty((keep.count, size, size, 3), np.uint8)
        return Images(paths, size, read, array), _decode(paths, size, array, workers, read)
    file, index = keep.file, keep.file.with_suffix(".json")
    whole = file.with_name(file.name.split("-first")[0].removesuffix(".npy") + ".npy")
    with locked(whole.with_suffix(".lock")):  # one process decodes; the others wait and read it
        for left in file.parent.glob(f".{whole.stem}-*.npy"):  # of a decode killed midway (the lock is ours)
            left.unlink(missing_ok=True)
        if not _built(file):
            with atomic_path(file) as tmp:
                array = np.lib.format.open_memmap(tmp, "w+", np.uint8, (keep.count, size, size, 3))
                reserve(tmp, os.path.getsize(tmp), file)
                bad = _decode(paths, size, array, workers, read)
                array.flush()
                del array
            write_text(index, json.dumps(bad))
        for old in (p for p in _parts(whole) if p != file):  # a smaller cache this one replaces
            old.with_suffix(".json").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    return Images(paths, size, read, np.load(file, mmap_mode="r")), json.loads(index.read_text())


def _decode(paths, size, array, workers, read):
    """Decode every image in parallel, in order (a container streams once), the first len(array)
    into `array`; the unreadable ones. A few images per thread are in flight, each wait wakes
    often, and Ctrl-C waits for no decode in flight (one can hang for long on a disk that
    throttles writes): the pass stops at once, and its file is removed (kit/__main__.py)."""
    def one(i):
        try:
            image = read.read(paths[i], size)
        except BadImage as e:
            return e.reason
        if i < len(array):
            array[i] = image
    threads = worker_count(workers)
    pool, reasons, pending = ThreadPoolExecutor(threads), [], collections.deque()
    try:
        for i in range(len(paths)):
            pending.append(pool.submit(one, i))
            if len(pending) > 16 * threads:
                reasons.append(_result(pending.popleft()))
        while pending:
            reasons.append(_result(pending.popleft()))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return {p: r for p, r in zip(paths, reasons) if r is not None}


def _result(future):
    while True:
        try:
            return future.result(timeout=0.2)
        except TimeoutError:
            pass


def _named(paths, size, read, folder):
    """The cache file of `paths` at `size`, named by what it holds (the files, their sizes and
    dates, the side, how records are read): a changed image makes a new one."""
    stats = {}  # a container's stat, once for its thousands of records
    for p in paths:
        file = p.rpartition(SEP)[0] or p
        stats.setdefault(file, _stat(file))
    key = [DECODER_VERSION, size, read.settings] + [(p, *stats[p.rpartition(SEP)[0] or p]) for p in paths]
    return folder / f"images-{size}-{hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]}.npy"


def _built(file):
    return file.is_file() and file.with_suffix(".json").is_file()


def _parts(whole):
    """The caches of the first images of `whole`'s table, built when the disk had less room."""
    return sorted(p for p in whole.parent.glob(f"{whole.stem}-first*.npy") if _built(p))


def _count(part):
    return int(part.stem.rpartition("-first")[2])


def _stat(path):
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None, None
