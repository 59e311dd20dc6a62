"""Reading and writing files: CSVs read as text, atomic writes (a crash or a kill never leaves a
half-written prediction, model or submission), and locks (one process at a time)."""
import errno
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from kit import KitError

UMASK = os.umask(0o022)  # read (and put back) once: os.umask only sets it
os.umask(UMASK)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same suffixes: `.weights.h5` matters to Keras); move
    it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:-len(suffix) or None]}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)  # as open() would make it (mkstemp's is owner-only)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def reserve(path, nbytes, shown=None):
    """Claim a file's `nbytes` of disk now, before it is memory-mapped and written: a full disk is
    then an OSError (ENOSPC, naming `shown`) here, not a Bus error at some later write into the
    mapping. A filesystem without fallocate allocates as the writes come, as before."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(e.errno, e.strerror, str(shown or path)) from None
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def size_text(nbytes):
    """A size as people read it: 88.5 GiB, 47.0 MiB, 4.5 KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale / 10:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"


def replace_folder(new, folder):
    """`new` (a finished folder beside it) becomes `folder`; the old one is kept until then, so
    a failure leaves one or the other whole."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path, frame, float_format=None):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format)


def read_csv(path, what, usecols=None):
    """A CSV with every cell as text: ids like 0042 keep their zeros."""
    if not path.is_file():
        raise KitError(f"no {what} at {path}")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, usecols=usecols)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise KitError(f"{path}: cannot read as CSV ({str(e).strip().splitlines()[0]})") from None


@contextmanager
def locked(path, wait=True):
    """Yield True while this process holds the lock file `path`, alone; with `wait=False`, yield
    False at once when another process holds it. The system drops a killed process's lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
