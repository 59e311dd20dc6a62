"""What a competition's data folder holds, read as an experienced competitor would (for make
init, kit/init.py): the sample submission, the folders of images, and for each label layout of
kit/layouts.py a guesser (GUESSERS) of the spec keys that would read it, with what it saw.
"""
import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kit import KitError
from kit.config import Spec
from kit.container_index import catalog
from kit.container_survey import PIXELS, image_sets
from kit.containers import FORM_OF, pixel_columns
from kit.decode import IMAGE_EXTS
from kit.layouts import split_long

SAMPLE = re.compile(r"sample.*sub.*\.csv$", re.I)
LABEL_NAMES = ("label", "labels", "target", "class", "classes", "category", "diagnosis", "emotion", "y",
               "tags", "species", "breed", "landmark_id", "grapheme_root")
GROUP = re.compile(r"^(patient|user|subject|group|study|case|individual|person|owner)([ _]?id)?$", re.I)


@dataclass
class Found:
    """What the data folder holds (paths relative to it, POSIX)."""
    root: Path
    csvs: list  # every CSV but the sample submission
    images: dict  # folder -> the image files directly in it
    classes: dict  # folder -> its subfolders that hold images
    sets: list  # Images: the keys of each set of containers (parquet, TFRecord, HDF5, NumPy files)
    sample: str  # the sample submission
    sample_frame: pd.DataFrame
    test_dir: str | None  # the folder whose images the sample's ids name
    given: dict = field(default_factory=dict)  # keys given on the command line
    other_samples: list = field(default_factory=list)  # sample submissions not taken (an earlier stage's)


@dataclass
class Guess:
    keys: dict  # spec keys
    why: dict = field(default_factory=dict)  # key -> what was seen


GUESSERS = {}  # layout (kit/layouts.py) -> (Found) -> [Guess]


def guesser(name):
    def register(guess):
        GUESSERS[name] = guess
        return guess
    return register


def survey(root, given=None):
    """What is in `root`, down to three folders deep (hidden ones skipped); `given`: the command
    line's keys."""
    csvs, images, classes, containers = [], {}, {}, []
    for top, dirs, names in os.walk(root, followlinks=True):
        here = Path(top).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and len(here.parts) < 3)
        names = sorted(n for n in names if not n.startswith("."))
        pics = [n for n in names if Path(n).suffix.lower() in IMAGE_EXTS]
        if pics:
            images[here.as_posix()] = pics
            if len(here.parts) > 0:
                classes.setdefault(here.parent.as_posix(), []).append(here.name)
        csvs += [(here / n).as_posix() for n in names if n.lower().endswith(".csv")]
        containers += [(here / n).as_posix() for n in names if FORM_OF.get(Path(n).suffix.lower(), "pixels")
                       != "pixels"]
    samples = sorted((c for c in csvs if SAMPLE.search(Path(c).name)), key=_natural)
    if not samples:
        zips = sorted(Path(root).rglob("*.zip"))
        raise KitError(f"{root}: still zipped ({zips[0].name}): unzip it (make download unzips)" if zips else
                       f"{root}: no sample submission CSV (a file named like sample_submission.csv): the kit "
                       f"writes its submission in the sample's shape")
    frames = {c: pd.read_csv(root / c, dtype=str, keep_default_na=False) for c in samples}
    fit = lambda c: (max([_share(set(frames[c].iloc[:, 0]), names) for names in images.values()], default=0),
                     len(frames[c]))
    samples.sort(key=fit)  # several (stages): the last names the test images best, then is the longest
    sample = frames[samples[-1]]
    ids = set(sample.iloc[:, 0])
    # a tie (int ids in train/ and valid/): the folder named test, else the one with the fewest other images
    covers = {d: (_share(ids, names), "test" in d.lower(), -len(names)) for d, names in images.items()}
    test_dir = max(covers, key=covers.get) if covers and max(covers.values())[0] >= 0.9 else None
    split = {d: round(c[0] * len(ids)) for d, c in covers.items() if c[0] > 0}
    if test_dir is None and sum(split.values()) >= 0.9 * len(ids) and len(split) > 1:  # Planet's
        where = ", ".join(f"{d}/ ({n})" for d, n in split.items())
        raise KitError(f"{root}: the sample's test images are split over {where}: the kit reads one test "
                       f"folder: move them into one")
    given = given or {}
    sets = image_sets(root, sorted(containers), given) if containers else []
    others = [c for c in csvs if c not in samples]
    return Found(root, others, images, classes, sets, samples[-1], sample, test_dir, given, samples[:-1])


def _natural(path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _share(ids, names):
    """The share of `ids` that name a file of `names`, with or without its extension."""
    known = set(names) | {Path(n).stem for n in names}
    return sum(i in known for i in ids) / max(1, len(ids))


def _read(found, csv):
    return pd.read_csv(found.root / csv, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def _train_csvs(found):
    """The CSVs that may hold the training labels, the likeliest first."""
    rank = lambda c: (0 if "train" in Path(c).name.lower() else 1 if "test" not in c.lower() else 2, c)
    return sorted(found.csvs, key=rank)


@guesser("csv")
def _csv(found):
    """A labels CSV whose id column names the image files of a folder, or a pixel table."""
    guesses = []
    sets = [(images, _record_ids(found, images.keys)["id"].tolist()) for images in found.sets if images.keys]
    for csv in _train_csvs(found):
        header = pd.read_csv(found.root / csv, nrows=0, encoding="utf-8-sig").columns.tolist()
        if len(pixel_columns("pixel*", header)) >= PIXELS or len(pixel_columns("[0-9]*", header)) >= PIXELS:
            guesses += _pixel_table(found, csv, header)
            continue
        frame = _read(found, csv)
        single = [c for c in header if _one_cell_pixels(frame[c])]
        if single:
            guesses += _pixel_table(found, csv, header, single[0], frame)
            continue
        for column in header:
            values = set(frame[column])
            for folder, names in found.images.items():  # the test folder too: one folder may hold both
                if _share(values, names) >= 0.9:
                    keys = {"train_csv": csv, "id_column": column, "train_dir": folder,
                            "test_dir": found.test_dir or "test"}
                    why = {"id_column": f"its values name the {len(names)} image files in {folder}/"}
                    guesses += _with_labels(found, frame, column, keys, why)
        for images, ids in sets:
            guesses += _labelled_records(found, csv, frame, images, ids)
    return guesses


def _labelled_records(found, csv, frame, images, ids):
    """Guesses of a labels CSV whose id column names the records (`ids`) of a container set (by
    an id field of theirs, an HDF5 key, or a row number)."""
    guesses = []
    for column in frame.columns:
        keys = {**images.keys, "train_csv": csv, "id_column": column}
        if images.keys.get("id_column", column) != column and images.keys["image_form"] != "hdf5":
            continue  # the records' own id field has another name
        if "first_id" in keys:  # numbered records: a column counting them
            numbers = pd.to_numeric(frame[column], errors="coerce")
            if numbers.isna().any() or len(numbers) != len(ids) or \
                    sorted(numbers) != list(range(int(numbers.min()), int(numbers.min()) + len(ids))):
                continue
            keys["first_id"] = int(numbers.min())
        elif _share(ids, set(frame[column])) < 0.9:
            continue
        why = {**images.why, "id_column": f"it names the {len(ids)} records of {keys['train_files'][0]}"}
        guesses += _with_labels(found, frame, column, keys, why)
    return guesses


def _record_ids(found, keys, fields=()):
    """The training records' ids (and `fields`) as the kit reads them with `keys`."""
    spec = dataclasses.replace(Spec("init"), **keys)
    try:
        return catalog(found.root, keys["train_files"], keys["image_form"], spec, fields)
    except KitError:
        return pd.DataFrame({"id": [], **{f: [] for f in fields}})


@guesser("records")
def _records(found):
    """Labels inside the records: a field the training records hold and the test records lack."""
    guesses = []
    for images in (s for s in found.sets if s.keys):
        named = [f for f in images.labels if f.lower() in LABEL_NAMES] or images.labels
        for target in named[:1]:
            table = _record_ids(found, images.keys, [target])
            if len(table):
                keys = {**images.keys, "layout": "records", "target_column": target}
                why = {**images.why, "layout": f"the training records hold {target!r}; the test ones lack it"}
                guesses.append(_task(found, table[target], keys, why))
    return guesses


def _one_cell_pixels(values):
    first = values.iloc[0] if len(values) else ""
    return len(first.split()) >= PIXELS and all(t.isdigit() for t in first.split()[:PIXELS])


def _pixel_table(found, csv, header, cell=None, frame=None):
    """A pixel table: rows of grey levels (or one cell of them), the labels beside them."""
    pattern = cell or ("pixel*" if len(pixel_columns("pixel*", header)) >= PIXELS else "[0-9]*")
    pixels = pixel_columns(pattern, header)
    n = len(frame[cell].iloc[0].split()) if cell else len(pixels)
    side = math.isqrt(n)
    keys = {"image_form": "pixels", "train_csv": csv, "pixels": pattern}
    why = {"image_form": f"{csv} holds {n} grey levels a row" + (f" in its column {cell!r}" if cell else "")}
    if side * side != n:
        raise KitError(f"{csv}: {n} pixel values a row is not a square image: set image_shape=[H, W]")
    tests = [c for c in found.csvs if "test" in Path(c).name.lower()]
    if tests:
        keys["test_files"] = [tests[0]]
    rest = [c for c in header if c not in pixels and c != cell]
    frame = frame if frame is not None else _read(found, csv)[rest]
    sample_id = found.sample_frame.columns[0]
    id_column = sample_id if sample_id in rest else None
    if id_column is None:  # the rows are numbered, as the sample's ids are
        numbers = pd.to_numeric(found.sample_frame[sample_id], errors="coerce")
        if numbers.notna().all():
            keys["id_column"], keys["first_id"] = sample_id, int(numbers.min())
            why["first_id"] = f"{csv} has no id column: rows are numbered as the sample's {sample_id}"
    else:
        keys["id_column"] = id_column
    return _with_labels(found, frame, id_column, keys, why)


def _with_labels(found, frame, id_column, keys, why):
    """The guesses of `keys` with each way the frame may hold the labels."""
    values = [str(c) for c in found.sample_frame.columns[1:]]
    others = [c for c in frame.columns if c != id_column]
    groups = [c for c in others if GROUP.match(c)]
    if groups:
        keys = {**keys, "group_column": groups[0]}
        why = {**why, "group_column": f"{groups[0]!r} looks like a patient or user id: its rows never split "
                                      f"across folds (remove the key for plain stratified folds)"}
    if len(values) > 1 and set(values) <= set(others):
        one_hot = frame[values].apply(pd.to_numeric, errors="coerce")
        task = "multilabel" if (one_hot.sum(axis=1) != 1).any() else "multiclass"
        seen = "rows with no 1 or several" if task == "multilabel" else "a single 1 in every row"
        why = {**why, "target_column": "one 0/1 column per class, as the sample's columns", "task": seen}
        return [Guess({**keys, "target_column": values, "task": task}, why)]
    given = found.given.get("target_column")
    asked = [c for c in found.sample_frame.columns[1:] if c in others and found.sample_frame.shape[1] == 2]
    named = [given] if given in others else asked or [c for c in others if c.strip().lower() in LABEL_NAMES]
    candidates = named or [c for c in others if c not in groups and 1 < frame[c].nunique() <= len(frame) / 2]
    if len(candidates) > 1 and not named or len(named) > 1:
        raise KitError(f"{keys.get('train_csv')}: cannot tell the label column among "
                       f"{', '.join(candidates)}: make init target_column=<one of them>")
    return [_task(found, frame[c], {**keys, "target_column": c}, why) for c in candidates[:1]]


def _task(found, labels, keys, why):
    """binary, multiclass or multilabel, from the labels and the sample's columns."""
    labels = labels.astype(str).str.strip()
    multi = (labels.str.split().str.len() != 1).mean()
    if multi > 0.05:
        classes = {t for cell in labels for t in cell.split()}
        task = "multilabel", f"{multi:.0%} of the images have no label or several (space-separated)"
    else:
        classes = set(labels)
        task = single_label_task(found, len(classes))
    return Guess({**keys, "task": task[0]},
                 {**why, "task": task[1], "target_column": f"{len(classes)} classes"})


def single_label_task(found, n_classes):
    """(binary or multiclass, why) of labels one per image."""
    if n_classes == 2 and found.sample_frame.shape[1] == 2:
        return "binary", "2 classes, and the sample submission has one column for them"
    return "multiclass", f"{n_classes} classes, one per image"


@guesser("long")
def _long(found):
    """One row per image and class, `<image>_<class>`, as the sample is."""
    ids = found.sample_frame.iloc[:, 0]
    classes = sorted({i.rpartition("_")[2] for i in ids if "_" in i})
    if split_long(ids, classes) is None:
        return []
    images = {i.rpartition("_")[0] for i in ids}
    test_dir = max(found.images, key=lambda d: _share(images, found.images[d]), default="test")
    guesses = []
    for csv in _train_csvs(found):
        frame = _read(found, csv)
        if frame.shape[1] == 2 and split_long(frame.iloc[:, 0], classes) is not None:
            train_dir = next((d for d in found.images if d != test_dir and "train" in d), "train")
            keys = {"layout": "long", "train_csv": csv, "id_column": frame.columns[0],
                    "target_column": frame.columns[1], "task": "multilabel", "train_dir": train_dir,
                    "test_dir": test_dir}
            seen = f"{csv}'s ids are <image>_<class>, a row per image and class"
            guesses.append(Guess(keys, {"layout": seen, "task": "a 0/1 row per image and class"}))
    return guesses


@guesser("folders")
def _folders(found):
    """One folder per class."""
    return [Guess({"layout": "folders", "train_dir": folder, "test_dir": found.test_dir or "test"},
                  {"layout": f"{folder}/ holds {len(subs)} folders of images: {', '.join(sorted(subs)[:6])}"})
            for folder, subs in _class_folders(found).items() if len(subs) > 1]


def _class_folders(found):
    """Folder -> its subfolders that hold images, the test folder left out."""
    out = {}
    for folder, subs in found.classes.items():
        subs = [s for s in subs if not re.search("train|test", s, re.I)]  # a data folder, not a class
        if folder != found.test_dir and subs:
            out[folder] = subs
    return out


@guesser("filename")
def _filename(found):
    """The label in each file's name (dogs-vs-cats: cat.1.jpg)."""
    guesses = []
    pattern = re.compile(Spec.label_regex)
    for folder, names in found.images.items():
        labels = [m.group(1) if (m := pattern.search(n)) else None for n in names]
        counts = pd.Series(labels).value_counts()
        if folder != found.test_dir and None not in labels and 1 < len(counts) <= len(names) / 2 \
                and counts.min() > 1:
            keys = {"layout": "filename", "train_dir": folder, "test_dir": found.test_dir or "test"}
            guesses.append(Guess(keys, {"layout": f"the file names in {folder}/ begin with a label: "
                                                  f"{', '.join(counts.index[:6])}"}))
    return guesses



def sample_keys(found):
    return {"sample_submission": found.sample} if found.sample != Spec.sample_submission else {}
