"""Images decoded and resized once, and kept: in memory when they fit under `cache_mb`, else in
a file on disk (memory-mapped, shared by every fold and backbone at that size), or not at all.

The pass that fills the cache is the one that finds unreadable images, so caching costs no
extra decoding. Without a cache, images are decoded each time they are read.
"""
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kit import KitError
from kit.containers import SEP, Reader, reader
from kit.decode import VERSION as DECODER_VERSION
from kit.decode import BadImage
from kit.env import worker_count
from kit.files import atomic_path, locked, write_text
from kit.runs import cache_dir


class Images:
    """The images of a table by index (files' paths or records' names), as (size, size, 3) uint8,
    decoded on each read."""

    def __init__(self, paths, size, read=None):
        self.paths, self.size, self.reader = list(paths), size, read or Reader()

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.reader.read(self.paths[i], self.size)


class CachedImages(Images):
    def __init__(self, paths, size, array, read=None):
        super().__init__(paths, size, read)
        self.array = array

    def __getitem__(self, i):
        return self.array[i]


class Joined:
    """Two image sources as one, indexed on: the first's images, then the second's (training
    images followed by pseudo-labelled test images)."""

    def __init__(self, first, second):
        self.first, self.second, self.size = first, second, first.size

    def __len__(self):
        return len(self.first) + len(self.second)

    def __getitem__(self, i):
        return self.first[i] if i < len(self.first) else self.second[i - len(self.first)]


def competition_images(spec, data, size):
    """(train images, test images, {path: reason} of the unreadable training images), kept as the
    spec says."""
    test = test_images(spec, data.test, size)
    train, bad = load_images(data.train["path"], size, **_cache(spec))
    return train, test, bad


def test_images(spec, test, size):
    """The images of a test table, kept as the spec says. An unreadable one is an error: a
    submission needs every row."""
    images, bad = load_images(test["path"], size, **_cache(spec))
    if bad:
        path, reason = next(iter(bad.items()))
        raise KitError(f"{len(bad)} test images cannot be read (a submission needs every row), "
                       f"e.g. {path}: {reason}")
    return images


def _cache(spec):
    return dict(mode=spec.image_cache, folder=cache_dir(spec), limit_mb=spec.cache_mb, workers=spec.workers,
                read=reader(spec))


def load_images(paths, size, mode="auto", folder=None, limit_mb=2048, workers=0, read=None):
    """(images, {path: reason} of the unreadable ones). `mode`: auto (memory if it fits under
    `limit_mb`, else disk in `folder`), memory, disk, off. `read`: the Reader of records and DICOM."""
    paths, read = [str(p) for p in paths], read or Reader()
    nbytes = len(paths) * size * size * 3
    if mode == "auto":
        mode = "memory" if nbytes <= limit_mb * 2**20 else "disk"
    if mode == "disk":
        return _disk(paths, size, Path(folder), workers, read)
    array = np.empty((len(paths), size, size, 3), np.uint8) if mode == "memory" else None
    bad = _decode(paths, size, array, workers, read)
    return (CachedImages(paths, size, array, read) if array is not None else Images(paths, size, read)), bad


def _decode(paths, size, array, workers, read):
    """Decode every image in parallel, in order (a container streams once), into `array` when
    given; the unreadable ones."""
    def one(i):
        try:
            image = read.read(paths[i], size)
        except BadImage as e:
            return e.reason
        if array is not None:
            array[i] = image
    with ThreadPoolExecutor(worker_count(workers)) as pool:
        reasons = list(pool.map(one, range(len(paths))))
    return {p: r for p, r in zip(paths, reasons) if r is not None}


def _disk(paths, size, folder, workers, read):
    """A memory-mapped .npy named by what it holds (the files, their sizes and dates, the side,
    how records are read), so a changed image makes a new one; built whole before it is used."""
    stats = {}  # a container's stat, once for its thousands of records
    for p in paths:
        file = p.rpartition(SEP)[0] or p
        stats.setdefault(file, _stat(file))
    key = [DECODER_VERSION, size, read.settings] + [(p, *stats[p.rpartition(SEP)[0] or p]) for p in paths]
    stamp = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
    data, index = folder / f"images-{size}-{stamp}.npy", folder / f"images-{size}-{stamp}.json"
    with locked(data.with_suffix(".lock")):  # one process decodes; the others wait and read it
        for left in folder.glob(f".{data.stem}-*.npy"):  # of a decode killed midway (the lock is ours)
            left.unlink(missing_ok=True)
        if not (data.is_file() and index.is_file()):
            with atomic_path(data) as tmp:
                array = np.lib.format.open_memmap(tmp, "w+", np.uint8, (len(paths), size, size, 3))
                bad = _decode(paths, size, array, workers, read)
                array.flush()
                del array
            write_text(index, json.dumps(bad))
    array = np.load(data, mmap_mode="r")
    return CachedImages(paths, size, array, read), json.loads(index.read_text())


def _stat(path):
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None, None
