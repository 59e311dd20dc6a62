"""Label layouts: where a competition's training ids and labels are. One entry per layout (the
spec's `layout`) reads them; kit/data.py encodes the labels and finds each image.

    csv       a labels CSV: an id column, a target column (or one 0/1 column per class)
    records   the labels inside the image records (a pixel table's, a TFRecord's, an .npz's)
    folders   one folder per class
    filename  the label in each file's name (`label_regex`)
    long      a labels CSV with one row per image and class: `<image>_<class>`, 0/1

A new layout is one function here, registered with @layout, and its example competition in
tests/layouts.py (tests/test_layouts.py reads every entry of LAYOUTS).
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit import KitError, quoted
from kit.container_index import catalog, container_files
from kit.containers import pixel_columns
from kit.decode import IMAGE_EXTS
from kit.files import read_csv


@dataclass
class Labels:
    ids: list
    labels: list | pd.DataFrame  # a str per image, a list per image (multilabel), or 0/1 columns per class
    groups: np.ndarray | None  # of group_column, when the spec names one
    where: Path  # the file or folder the labels come from, for the errors
    row: object = None  # row k -> where it is, as an editor shows it (default: the image file)


LAYOUTS = {}  # layout name -> its reader: (spec, data folder, notes) -> Labels


def layout(name):
    def register(read):
        LAYOUTS[name] = read
        return read
    return register


def read_labels(spec, root, notes):
    """The training ids and labels of the spec's layout; what was made of the data as it is
    goes to `notes` (for the log)."""
    if spec.group_column and spec.layout not in ("csv", "records"):
        raise KitError("group_column needs layout csv or records (groups come from the labels)")
    found = LAYOUTS[spec.layout](spec, root, notes)
    if found.row is None:
        found.row = lambda k: str(root / spec.train_dir / found.ids[k])
    return found


def _targets(spec, frame):
    """(labels, groups) of a table holding the target and group columns."""
    groups = frame[spec.group_column].to_numpy() if spec.group_column else None
    if isinstance(spec.target_column, list):
        return frame[spec.target_column], groups
    labels = frame[spec.target_column].astype(str).str.strip().tolist()
    if spec.task == "multilabel":
        labels = [[t for t in cell.split(spec.label_sep) if t] for cell in labels]
    return labels, groups


def _wanted(spec):
    targets = spec.target_column if isinstance(spec.target_column, list) else [spec.target_column]
    return [*targets, *([spec.group_column] if spec.group_column else [])]


def columns(frame, names, path):
    for name in names:
        if name not in frame.columns:
            raise KitError(f"{path} has no column {name!r} (columns: {', '.join(frame.columns)})")


@layout("csv")
def _csv(spec, root, notes):
    path = root / spec.train_csv
    frame = _labels_csv(spec, path)
    columns(frame, [c for c in [spec.id_column, *_wanted(spec)] if c != spec.id_column or
                    spec.image_form == "files"], path)
    ids = (frame[spec.id_column] if spec.id_column in frame.columns else  # a pixel table: rows are numbered
           pd.Series(range(spec.first_id, spec.first_id + len(frame))).astype(str)).tolist()
    return Labels(ids, *_targets(spec, frame), path, lambda k: f"{path}, line {k + 2} (id {ids[k]!r})")


def _labels_csv(spec, path):
    """The labels CSV; a pixel table's pixel columns are left unread (784 cells a row)."""
    if spec.image_form != "pixels" or not path.is_file():
        return read_csv(path, "labels CSV")
    header = pd.read_csv(path, nrows=0).columns.tolist()
    pixels = set(pixel_columns(spec.pixels, header))
    return read_csv(path, "labels CSV", usecols=[c for c in header if c not in pixels])


@layout("records")
def _records(spec, root, notes):
    files = container_files(spec, "train")
    frame = catalog(root, files, spec.image_form, spec, _wanted(spec))
    return Labels(frame["id"].tolist(), *_targets(spec, frame), root / files[0])


def _train_folder(spec, root):
    folder = root / spec.train_dir
    if not folder.is_dir():
        raise KitError(f"no train image folder {folder}")
    return folder


@layout("folders")
def _folders(spec, root, notes):
    folder = _train_folder(spec, root)
    if spec.task == "multilabel":
        raise KitError("layout folders gives one label per image: it cannot hold a multilabel task")
    files = sorted(_images_below(folder))
    classes = {f.split("/")[0] for f in files}
    empty = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes)
    if empty:
        notes.append(f"{folder}: no images in {', '.join(empty)}: not classes of this data")
    return Labels(files, [f.split("/")[0] for f in files], None, folder)


def _images_below(folder):
    """The images in the subfolders of `folder` (symlinked ones too), as paths relative to it."""
    for top, _, names in os.walk(folder, followlinks=True):
        if top != str(folder):
            inside = Path(top).relative_to(folder)
            yield from ((inside / n).as_posix() for n in names if Path(n).suffix.lower() in IMAGE_EXTS)


@layout("filename")
def _filename(spec, root, notes):
    folder = _train_folder(spec, root)
    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    pattern = re.compile(spec.label_regex)
    matches = [pattern.search(f) for f in files]
    unmatched = [f for f, m in zip(files, matches) if not m]
    if unmatched:
        raise KitError(f"label_regex {spec.label_regex!r} finds no label in {len(unmatched)} file "
                       f"names in {folder}, e.g. {unmatched[0]!r}")
    labels = [m.group(1) for m in matches]
    if spec.task == "multilabel":
        labels = [[t for t in label.split(spec.label_sep) if t] for label in labels]
    return Labels(files, labels, None, folder)


@layout("long")
def _long(spec, root, notes):
    """One row per image and class, `<image>_<class>` and 0/1. Rows repeated as they are (RSNA's
    stage_2_train.csv has some) are dropped and said."""
    path = root / spec.train_csv
    frame = read_csv(path, "labels CSV")
    columns(frame, [spec.id_column, spec.target_column], path)
    repeated = frame.duplicated([spec.id_column, spec.target_column])
    if repeated.any():
        notes.append(f"{path}: {int(repeated.sum())} repeated rows dropped, e.g. "
                     f"{frame[spec.id_column][repeated].iloc[0]!r}")
        frame = frame[~repeated].reset_index(drop=True)
    conflicting = frame[spec.id_column][frame[spec.id_column].duplicated()]
    if len(conflicting):
        raise KitError(f"{path}: id {conflicting.iloc[0]!r} has rows with different labels")
    ids = frame[spec.id_column].astype(str)
    classes = spec.classes or sorted({i.rpartition("_")[2] for i in ids if "_" in i})
    split = split_long(ids, classes)
    if split is None:
        raise KitError(f"{path}: layout long needs ids <image>_<class> with one row per image and class "
                       f"(classes: {quoted(classes, 8)})")
    values = frame[spec.target_column].to_numpy()
    table = pd.DataFrame({"image": split[0], "class": split[1], "value": values})
    wide = table.pivot(index="image", columns="class", values="value")
    wide = wide.loc[pd.unique(table["image"]), [str(c) for c in classes]]
    return Labels(wide.index.tolist(), wide, None, path)


def split_long(ids, classes):
    """(image ids, classes) of long-format ids `<image>_<class>` (RSNA: ID_<image>_<subtype>),
    or None unless every id ends in a class and every image has one row per class."""
    by_length = sorted(map(str, classes), key=len, reverse=True)
    images, names = [], []
    for i in map(str, ids):
        c = next((c for c in by_length if i.endswith("_" + c) and len(i) > len(c) + 1), None)
        if c is None:
            return None
        images.append(i[:-len(c) - 1])
        names.append(c)
    pairs = pd.DataFrame({"image": images, "class": names})
    n_images = pairs["image"].nunique()
    if pairs.duplicated().any() or len(pairs) != n_images * len(classes) or n_images < 2 < len(pairs):
        return None  # n_images < 2: ids Test_0..Test_11 with classes 0..11 are not one image's rows
    return images, names
