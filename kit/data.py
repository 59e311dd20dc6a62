"""Competition data: train and test tables (id, image name, labels) for every layout a spec can
describe. An image's name is its file's path, or a record's in a container (kit/catalog.py);
decoding is kit/decode.py's and kit/records.py's."""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kit import KitError
from kit.catalog import catalog, container_files, image_form, locate
from kit.decode import IMAGE_EXTS
from kit.demo import generate
from kit.files import read_csv
from kit.records import pixel_columns


@dataclass
class Data:
    classes: list  # class names (str), in output order
    train: pd.DataFrame  # id, path
    y: np.ndarray  # binary (n,) 0/1; multiclass (n,) class index; multilabel (n, K) 0/1
    groups: np.ndarray | None
    test: pd.DataFrame  # id, path
    unlabelled: list = field(default_factory=list)  # images in the train containers without a label
    notes: list = field(default_factory=list)  # what was made of the data as it is, for the log


def load_data(spec):
    root = _root(spec)
    notes = []
    ids, labels, groups = _train_labels(spec, root, notes)
    where = root / (spec.train_csv if spec.layout in ("csv", "long") else spec.train_dir
                    if spec.layout in ("folders", "filename") else container_files(spec, "train")[0])
    if not len(ids):
        raise KitError(f"{where}: no training images (or labels) in it")
    _unique(ids, where)
    classes, y = _encode(spec, labels, _where(spec, root, ids))
    train_paths, unlabelled = _locate(spec, root, ids, "train")
    train, test = pd.DataFrame({"id": ids, "path": train_paths}), load_test(spec)
    shared = set(train["path"]).intersection(test["path"])
    if shared:
        raise KitError(f"{len(shared)} images are both train and test images, e.g. {next(iter(shared))}: "
                       f"check "
                       f"train_files and test_files (an .npz: test_record_image)")
    return Data(classes, train, y, groups, test, unlabelled, notes)


def load_classes(spec):
    """The class names in output order, from the labels alone (no image is looked up)."""
    root = _root(spec)
    ids, labels, _ = _train_labels(spec, root, [])
    return _encode(spec, labels, _where(spec, root, ids))[0]


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
    test_ids = _test_ids(spec, root)
    from_sample = spec.test_ids == "sample_submission"
    where = root / (spec.sample_submission if from_sample else spec.test_dir)
    if not len(test_ids):
        raise KitError(f"{where}: no test images{' (its rows name them)' if from_sample else ''}: "
                       f"nothing to predict")
    _unique(test_ids, where)
    return pd.DataFrame({"id": test_ids, "path": _locate(spec, root, test_ids, "test")[0]})


def _where(spec, root, ids):
    """Where training row k is, as an editor shows it: the labels CSV's line (its header is line
    1) and id, or the image file."""
    if spec.layout == "csv":
        return lambda k: f"{root / spec.train_csv}, line {k + 2} (id {ids[k]!r})"
    return lambda k: str(root / spec.train_dir / ids[k])


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
    counts = pd.Series(ids).value_counts()
    repeated = counts[counts > 1]
    if len(repeated):
        raise KitError(f"{where}: {len(repeated)} ids appear more than once, e.g. {repeated.index[0]!r} "
                       f"({repeated.iloc[0]} times): ids must be unique")


def _columns(frame, names, path):
    for name in names:
        if name not in frame.columns:
            raise KitError(f"{path} has no column {name!r} (columns: {', '.join(frame.columns)})")


def _train_labels(spec, root, notes):
    """(ids, labels, groups): labels are one str per image, a list per image (multilabel), or a
    0/1 DataFrame when the spec names one target column per class (or the labels are long)."""
    if spec.group_column and spec.layout not in ("csv", "records"):
        raise KitError("group_column needs layout csv or records (groups come from the labels)")
    if spec.layout == "long":
        return _long_labels(spec, root, notes)
    targets = spec.target_column if isinstance(spec.target_column, list) else [spec.target_column]
    wanted = [*targets] + ([spec.group_column] if spec.group_column else [])
    if spec.layout in ("csv", "records"):
        if spec.layout == "csv":
            path = root / spec.train_csv
            frame = _labels_csv(spec, path)
            _columns(frame, [c for c in [spec.id_column, *wanted] if c != spec.id_column or
                             spec.image_form == "files"], path)
            ids = (frame[spec.id_column] if spec.id_column in frame.columns else
                   pd.Series(range(spec.first_id, spec.first_id + len(frame))).astype(str)).tolist()
        else:
            frame = catalog(root, container_files(spec, "train"), spec.image_form, spec, wanted)
            ids = frame["id"].tolist()
        groups = frame[spec.group_column].to_numpy() if spec.group_column else None
        if isinstance(spec.target_column, list):
            return ids, frame[targets], groups
        labels = frame[spec.target_column].astype(str).str.strip().tolist()
        if spec.task == "multilabel":
            labels = [[t for t in cell.split(spec.label_sep) if t] for cell in labels]
        return ids, labels, groups
    folder = root / spec.train_dir
    if not folder.is_dir():
        raise KitError(f"no train image folder {folder}")
    if spec.layout == "folders":
        if spec.task == "multilabel":
            raise KitError("layout folders gives one label per image: it cannot hold a multilabel task")
        files = sorted(_images_below(folder))
        classes = {f.split("/")[0] for f in files}
        empty = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes)
        if empty:
            notes.append(f"{folder}: no images in {', '.join(empty)}: not classes of this data")
        return files, [f.split("/")[0] for f in files], None
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
    return files, labels, None


def _images_below(folder):
    """The images in the subfolders of `folder` (symlinked ones too), as paths relative to it."""
    for top, _, names in os.walk(folder, followlinks=True):
        if top != str(folder):
            inside = Path(top).relative_to(folder)
            yield from ((inside / n).as_posix() for n in names if Path(n).suffix.lower() in IMAGE_EXTS)


def _labels_csv(spec, path):
    """The labels CSV; a pixel table's pixel columns are left unread (784 cells a row)."""
    if spec.image_form != "pixels" or not path.is_file():
        return read_csv(path, "labels CSV")
    header = pd.read_csv(path, nrows=0).columns.tolist()
    pixels = set(pixel_columns(spec.pixels, header))
    return read_csv(path, "labels CSV", usecols=[c for c in header if c not in pixels])


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


def _long_labels(spec, root, notes):
    """Labels in long format: one row per image and class, `<image>_<class>` and 0/1. Rows
    repeated as they are (RSNA's stage_2_train.csv has some) are dropped and said."""
    path = root / spec.train_csv
    frame = read_csv(path, "labels CSV")
    _columns(frame, [spec.id_column, spec.target_column], path)
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
                       f"(classes: {', '.join(map(str, classes[:8]))})")
    table = pd.DataFrame({"image": split[0], "class": split[1],
                          "value": frame[spec.target_column].to_numpy()})
    wide = table.pivot(index="image", columns="class", values="value")
    wide = wide.loc[pd.unique(table["image"]), [str(c) for c in classes]]
    return wide.index.tolist(), wide, None


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
            raise KitError(f"{where}: the values of classes {', '.join(classes)} must be 0/1") from None
        if not np.isin(labels, (0, 1)).all():
            raise KitError(f"{where}: the values of classes {', '.join(classes)} must be 0/1")
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
            raise KitError(f"{at(row)}: label {unknown[0]!r} is not in classes ({', '.join(classes)})")
        if spec.task == "multilabel":
            y = np.zeros((len(labels), len(classes)), np.float32)
            for row, cell in enumerate(labels):
                y[row, [index[t] for t in cell]] = 1
            return classes, y
        y = np.array([index[t] for t in labels], dtype=np.int64)
    if spec.task == "binary":
        if len(classes) != 2:
            raise KitError(f"{where}: a binary task needs 2 classes, found {len(classes)}: "
                           f"{', '.join(classes[:6])}")
        return classes, y.astype(np.float32)
    return classes, y


def _test_ids(spec, root):
    sample = root / spec.sample_submission
    if spec.test_ids == "sample_submission":
        frame = read_csv(sample, "sample submission (or set test_ids: folder)")
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
        if Path(image_id).suffix.lower() in IMAGE_EXTS:
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
    images = [n for n in names if Path(n).suffix.lower() in IMAGE_EXTS]
    for n in sorted(images, key=lambda n: (IMAGE_EXTS.index(Path(n).suffix.lower()), n)):
        found.setdefault(Path(n).stem, n)
    return found
