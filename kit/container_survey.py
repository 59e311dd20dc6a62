"""What image containers hold, for make init (kit/survey.py): for images in parquet, TFRecord,
HDF5 or NumPy files, the keys that read them (image_form, train_files and test_files, pixels,
image_shape, record_image, id_column, first_id) and the labels the records hold themselves.
"""
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from kit import KitError
from kit.container_index import hdf5_keys
from kit.containers import FORM_OF, example_fields, tfrecord_spans

PIXELS = 64  # at least this many values a row (columns, or numbers in one cell): a pixel table
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


@dataclass
class Images:
    """One container set's keys, what was seen, and the label fields its records hold."""
    keys: dict
    why: dict
    labels: list = field(default_factory=list)  # fields of the training records that test records lack
    problem: str = ""  # why these containers cannot be read as they are (then keys is empty)


def image_sets(root, files, given):
    """[Images] of each container form present in `files` (relative paths); `given`: the command
    line's keys (image_shape settles a non-square pixel row)."""
    by_form = {}
    for f in files:
        by_form.setdefault(FORM_OF[PurePosixPath(f).suffix.lower()], []).append(f)
    found = []
    for form, paths in sorted(by_form.items()):
        try:
            found.append(_READ[form](root, *_sides(paths), given))
        except KitError as e:  # image files beside them may still read (Cassava's TFRecord copies)
            found.append(Images({}, {}, problem=str(e)))
    return found


def _sides(paths):
    """(train globs, test globs, another set left out or ""): a file's digits become `*`, so that
    a set split over numbered files is one glob; with several top folders that each hold a whole
    set, train and test (Flowers' resolutions), the first is taken."""
    top = lambda p: PurePosixPath(p).parts[0] if len(PurePosixPath(p).parts) > 1 else ""
    whole = sorted(t for t in {top(p) for p in paths} - {""}
                   if {"test" in p.lower() for p in paths if top(p) == t} == {True, False})
    if len(whole) > 1:
        paths = [p for p in paths if top(p) == whole[0]]
    glob = lambda p: p.parent / (re.sub(r"\d+", "*", p.stem) + p.suffix)
    globs = lambda side: sorted({str(glob(PurePosixPath(p))) for p in side})
    train = [p for p in paths if "test" not in p.lower()]
    test = [p for p in paths if "test" in p.lower()]
    if not train or not test:
        raise KitError(f"{paths[0]}: cannot tell the train containers from the test ones (a test file's path "
                       f"names test): make init train_files=... test_files=...")
    return globs(train), globs(test), ", ".join(whole[1:])


def _base(form, train, test, other):
    why = f"{len(train)} train and {len(test)} test glob(s) of {form} files"
    return {"image_form": form, "train_files": train, "test_files": test}, \
        {"image_form": why + (f"; left out: {other} (set train_files for those)" if other else "")}


def _shape(n, given, where):
    """image_shape for `n` values a row: given, left out when square, else one line asking it."""
    if "image_shape" in given:
        return {"image_shape": yaml.safe_load(given["image_shape"])}
    if math.isqrt(n) ** 2 == n:
        return {}
    raise KitError(f"{where}: {n} pixel values a row is not a square image: make init image_shape=[H, W]")


def _parquet(root, train, test, other, given):
    import pyarrow.parquet as pq

    first = sorted(Path(root).glob(train[0]))[0]
    names = pq.ParquetFile(first).schema_arrow.names
    pixels = [c for c in names if c.isdigit()]
    if len(pixels) < PIXELS:
        raise KitError(f"{first}: no pixel columns (named 0, 1, ...): write the spec's pixels key")
    ids = [c for c in names if not c.isdigit()]
    keys, why = _base("parquet", train, test, other)
    keys |= {"pixels": "[0-9]*", **({"id_column": ids[0]} if ids else {}),
             **_shape(len(pixels), given, first)}
    return Images(keys, why)


def _tfrecord(root, train, test, other, given):
    def first_record(pattern):
        path = sorted(Path(root).glob(pattern))[0]
        offset, length = tfrecord_spans(path)[0]
        with open(path, "rb") as f:
            f.seek(offset + 12)
            return example_fields(str(path), f.read(length))

    fields, tests = first_record(train[0]), first_record(test[0])
    images = [k for k, v in fields.items() if isinstance(v, bytes) and v.startswith(IMAGE_MAGIC)]
    if not images:
        raise KitError(f"{train[0]}: no feature holds an encoded image (features: {', '.join(fields)})")
    ids = [k for k, v in tests.items() if isinstance(v, bytes) and k not in images]
    keys, why = _base("tfrecord", train, test, other)
    keys |= {"record_image": images[0], **({"id_column": ids[0]} if ids else {})}
    why["record_image"] = f"its records' features: {', '.join(fields)}"
    return Images(keys, why, [k for k in fields if k not in tests])


def _hdf5(root, train, test, other, given):
    hdf5_keys(sorted(Path(root).glob(train[0]))[0])  # a file of another shape is said now, with what it holds
    keys, why = _base("hdf5", train, test, other)
    return Images(keys, why)


def _numpy(root, train, test, other, given):
    keys, why = _base("numpy", train, test, other)
    first = sorted(Path(root).glob(train[0]))[0]
    if first.suffix == ".npy":
        why["first_id"] = "an .npy holds no ids: its rows are numbered"
        return Images({**keys, "first_id": 0}, why)
    with np.load(first) as archive:
        arrays = {k: archive[k].shape for k in archive}
    images = [k for k, s in arrays.items() if len(s) >= 3]
    if not images:
        raise KitError(f"{first}: no array of images (arrays: {', '.join(arrays)})")
    n = arrays[images[0]][0]
    labels = [k for k, s in arrays.items() if len(s) == 1 and s[0] == n]
    why["record_image"] = f"{first.name}'s arrays: " + ", ".join(f"{k} {arrays[k]}" for k in arrays)
    why["first_id"] = "an .npz holds no ids: its rows are numbered"
    return Images({**keys, "record_image": images[0], "first_id": 0}, why, labels)


_READ = {"parquet": _parquet, "tfrecord": _tfrecord, "hdf5": _hdf5, "numpy": _numpy}
