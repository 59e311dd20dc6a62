"""Atomic file writes: a crash or a kill never leaves a half-written prediction or submission."""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same suffixes: `.weights.h5` matters to Keras); move
    it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:-len(suffix) or None]}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path, frame):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def run_finished(run):
    """A fold's run folder is finished once test.csv, written last, is there."""
    return (Path(run) / "test.csv").is_file() and (Path(run) / "oof.csv").is_file()
