"""Competition data: train and test tables (id, image name, labels) for every layout a spec can
describe (the labels as each layout holds them: kit/layouts.py). An image's name is its file's
path, or a record's in a container (kit/container_index.py); decoding is kit/decode.py's and
kit/containers.py's."""
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kit import KitError, quoted
from kit.container_index import catalog, container_files, image_form, locate
from kit.decode import IMAGE_EXTS
from kit.demo import generate
from kit.files import read_csv
from kit.layouts import read_labels, split_long


@dataclass
class Data:
    classes: list  # class names (str), in output order
    train: pd.DataFrame  # id, path (load_ids: id)
    y: np.ndarray  # binary (n,) 0/1; multiclass (n,) class index; multilabel (n, K) 0/1
    groups: np.ndarray | None
    test: pd.DataFrame  # id, path (load_ids: id)
    unlabelled: list = field(default_factory=list)  # images in the train containers without a label
    notes: list = field(default_factory=list)  # what was made of the data as it is, for the log


def load_data(spec):
    """The tables of load_ids, with where each image is: every one found, or one line."""
    data, root = load_ids(spec), _root(spec)
    train_paths, unlabelled = _locate(spec, root, data.train["id"].tolist(), "train")
    test_paths = _locate(spec, root, data.test["id"].tolist(), "test")[0]
    shared = set(train_paths).intersection(test_paths)
    if shared:
        raise KitError(f"{len(shared)} images are both train and test images, e.g. {next(iter(shared))}: "
                       f"check train_files and test_files (an .npz: test_record_image)")
    return dataclasses.replace(data, train=data.train.assign(path=train_paths),
                               test=data.test.assign(path=test_paths), unlabelled=unlabelled)


def load_ids(spec):
    """The training ids and labels and the test ids, no image looked up: what CV and the
    ensemble need (finding 200k images on disk is most of load_data's time)."""
    root = _root(spec)
    notes = []
    found = read_labels(spec, root, notes)
    ids = found.ids
    if not len(ids):
        raise KitError(f"{found.where}: no training images (or labels) in it")
    _unique(ids, found.where)
    classes, y = _encode(spec, found.labels, found.row)
    test = pd.DataFrame({"id": _checked_test_ids(spec, root)})
    return Data(classes, pd.DataFrame({"id": ids}), y, found.groups, test, notes=notes)


def load_classes(spec):
    """The class names in output order, from the labels alone (no image is looked up)."""
    found = read_labels(spec, _root(spec), [])
    return _encode(spec, found.labels, found.row)[0]


def _locate(spec, root, ids, side):
    """(the image name of each id, the names of the images no id asks for)."""
    if image_form(spec, side) == "files":
        folder = spec.train_dir if side == "train" else spec.test_dir
        return _image_paths(root, folder, ids, spec.image_ext, side), []
    return locate(spec, root, ids, side)


def load_test(spec):
    """The test table (id, path) as the data folder holds it now: on a code competition's
    re-run, the hidden test set."""
    root = _root(spec)
    test_ids = _checked_test_ids(spec, root)
    return pd.DataFrame({"id": test_ids, "path": _locate(spec, root, test_ids, "test")[0]})


def _checked_test_ids(spec, root):
    test_ids = _test_ids(spec, root)
    from_sample = spec.test_ids == "sample_submission"
    where = root / (spec.sample_submission if from_sample else spec.test_dir)
    if not len(test_ids):
        raise KitError(f"{where}: no test images{' (its rows name them)' if from_sample else ''}: "
                       f"nothing to predict")
    _unique(test_ids, where)
    return test_ids


def _root(spec):
    root = spec.data_path
    if not root.is_dir() and spec.source == "synthetic":
        generate(root, spec.seed)
    if not root.is_dir():
        raise KitError(f"no data folder {root}: run `make download competition={spec.slug}` "
                       f"or put the competition's files there")
    return root


def _unique(ids, where):
    """Every prediction is keyed by its image's id: two rows of one id cannot both be kept."""
    if len(set(ids)) == len(ids):  # a third of counting them: the counts only name a repeated one
        return
    counts = pd.Series(ids).value_counts()
    repeated = counts[counts > 1]
    if len(repeated):
        raise KitError(f"{where}: {len(repeated)} ids appear more than once, e.g. {repeated.index[0]!r} "
                       f"({repeated.iloc[0]} times): ids must be unique")


def _sorted_labels(labels):
    """Numeric labels in numeric order (2 before 10), others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def _encode(spec, labels, at):
    """(classes, y) of the labels; `at(row)` says where a row is, for the errors."""
    where = "labels"
    if isinstance(labels, pd.DataFrame):  # one 0/1 column per class
        classes = [str(c) for c in labels.columns]
        try:
            labels = labels.astype(float).to_numpy()
        except ValueError:
            raise KitError(f"{where}: the values of classes {quoted(classes)} must be 0/1") from None
        if not np.isin(labels, (0, 1)).all():
            raise KitError(f"{where}: the values of classes {quoted(classes)} must be 0/1")
        if spec.task == "multilabel":
            return classes, labels.astype(np.float32)
        bad = np.flatnonzero(labels.sum(1) != 1)
        if len(bad):
            raise KitError(f"{at(bad[0])}: {int(labels[bad[0]].sum())} classes set; a {spec.task} task "
                           f"needs exactly one")
        y = labels.argmax(1)
    else:
        flat = [t for cell in labels for t in cell] if spec.task == "multilabel" else labels
        if "" in flat:
            raise KitError(f"{at(labels.index(''))}: an empty label")
        classes = [str(c) for c in spec.classes] if spec.classes else _sorted_labels(set(flat))
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(flat) - set(index))
        if unknown:
            row = next(r for r, cell in enumerate(labels) if unknown[0] in (cell if spec.task == "multilabel"
                                                                           else [cell]))
            raise KitError(f"{at(row)}: label {unknown[0]!r} is not in classes ({quoted(classes)})")
        if spec.task == "multilabel":
            y = np.zeros((len(labels), len(classes)), np.float32)
            for row, cell in enumerate(labels):
                y[row, [index[t] for t in cell]] = 1
            return classes, y
        y = np.array([index[t] for t in labels], dtype=np.int64)
    if spec.task == "binary":
        if len(classes) != 2:
            raise KitError(f"{where}: a binary task needs 2 classes, found {len(classes)}: "
                           f"{quoted(classes, 6)}")
        return classes, y.astype(np.float32)
    return classes, y


def _test_ids(spec, root):
    sample = root / spec.sample_submission
    if spec.test_ids == "sample_submission":
        frame = read_csv(sample, "sample submission (or set test_ids: folder)", usecols=[0])  # the ids
        ids = frame[frame.columns[0]].tolist()
        if spec.submission == "long" or (spec.submission == "auto" and ids and "_" in ids[0]):
            split = split_long(ids, load_classes(spec))
            if split is None and spec.submission == "long":
                raise KitError(f"{sample}: submission long needs ids <image>_<class>, one per image "
                               f"and class")
            ids = pd.unique(pd.Series(split[0])).tolist() if split else ids
        return ids
    if image_form(spec, "test") != "files":
        return catalog(root, container_files(spec, "test"), image_form(spec, "test"), spec,
                       image=spec.test_record_image or spec.record_image)["id"].tolist()
    folder = root / spec.test_dir
    if not folder.is_dir():
        raise KitError(f"no test image folder {folder}")
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    # Ids are written as the sample submission writes them: with or without the extension.
    with_ext = sample.is_file() and all(
        Path(i).suffix.lower() in IMAGE_EXTS for i in read_csv(sample, "sample submission").iloc[:, 0][:20])
    return names if with_ext else [Path(n).stem for n in names]


def _image_paths(root, folder, ids, ext, what):
    """Each id's image file under root/folder; ids may carry the extension, or `ext` adds it, or
    the file is found whatever its image type."""
    base = os.path.normpath(root / folder)
    inside = os.path.normpath(root) + os.sep
    listings = {}
    paths, missing = [], []
    for image_id in ids:
        image_id = str(image_id)
        if _suffix(image_id) in IMAGE_EXTS:
            name = image_id
        elif ext:
            name = image_id + (ext if ext.startswith(".") else "." + ext)
        else:
            name = image_id + ".*"
        path = os.path.normpath(os.path.join(base, name))
        if os.path.isabs(image_id) or not path.startswith(inside):
            raise KitError(f"{what} id {image_id!r} points outside the data folder {root}")
        directory, file = os.path.split(path)
        if directory not in listings:
            listings[directory] = _listing(directory)
        found = listings[directory].get(file if not file.endswith(".*") else file[:-2])
        if found is None:
            missing.append(path)
        paths.append(os.path.join(directory, found or file))
    # A few missing training files are data as it comes (removed, partly downloaded): decoding
    # lists them with the unreadable ones. Most missing means the spec looks in the wrong place.
    if missing and (what == "test" or len(missing) > len(ids) / 2):
        keys = "test_dir, image_ext, and the sample submission's first column" if what == "test" else \
            "train_dir, image_ext and id_column"
        raise KitError(f"{len(missing)} of {len(ids)} {what} images are missing, e.g. {missing[0]}: check "
                       f"{keys} in the spec")
    return paths


def _listing(directory):
    """File names in a folder, findable by full name and, for images, by stem."""
    try:
        names = os.listdir(directory)
    except OSError:
        return {}
    found = {n: n for n in names}
    first = {}  # stem -> (its image types' first in IMAGE_EXTS, then by name): no sort of 200k names
    for n in names:
        stem, suffix = os.path.splitext(n)
        rank = _RANK.get(suffix.lower())
        if rank is not None and (stem not in first or (rank, n) < first[stem]):
            first[stem] = (rank, n)
    for stem, (_, n) in first.items():
        found.setdefault(stem, n)
    return found


_RANK = {suffix: k for k, suffix in enumerate(IMAGE_EXTS)}


def _suffix(name):
    """Path(name).suffix, lower case: a Path per name was most of the time at 200k ids."""
    return os.path.splitext(name)[1].lower()
