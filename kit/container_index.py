"""What the image containers of a competition hold: one row per record with its id, its image's
name (`<container>::<record>`, read by kit/containers.py) and the fields asked for (a label kept in
the records: a TFRecord feature, an .npz array, a pixel table's column).

Containers are found by globs relative to the data folder and taken in natural order
(train_2 before train_10). A record's id is its `id_column` field when it has one, else its
number counted across the containers from `first_id` (Digit Recognizer's ImageId counts from 1).
Only the small fields are read here: pixels and encoded images stay in their files.
"""
import re
from pathlib import Path

import numpy as np
import pandas as pd

from kit import KitError
from kit.containers import FORMS, MISSING, SEP, example_fields, pixel_columns, tfrecord_spans
from kit.decode import BadImage


def containers(root, patterns, form):
    """The container files the globs name, in natural order; each must be of the form."""
    natural = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.as_posix())]
    found = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        matched = sorted(Path(root).glob(pattern), key=natural)
        if not matched:
            raise KitError(f"no file matches {pattern!r} in {root}: check train_files/test_files in the spec")
        found += [p for p in matched if p not in found]
    wrong = [p for p in found if p.suffix.lower() not in FORMS[form]]
    if wrong:
        raise KitError(f"{wrong[0]} is not a {form} file ({', '.join(FORMS[form])}): check the image form")
    return found


def catalog(root, patterns, form, spec, fields=(), image=None):
    """DataFrame(id, path, *fields) of every record in the containers, ids as text; its
    attrs["numbered"] says whether ids are record numbers. `image`: the .npz array of the
    images (default record_image)."""
    frames, counted, numbered = [], 0, False
    for path in containers(root, patterns, form):
        wanted = [f for f in dict.fromkeys([spec.id_column, *fields]) if f]
        try:
            table = LISTERS[form](path, spec, wanted, image or spec.record_image)
        except BadImage as e:  # a record whose fields cannot be read at all
            raise KitError(f"{e.path}: {e.reason}") from None
        keys = table.pop("_key")
        missing = [f for f in fields if f not in table.columns]
        if missing and len(table):  # an empty shard has no fields to check
            raise KitError(f"{path}: its records have no field {missing[0]!r} "
                           f"(fields: {', '.join(map(repr, table.columns)) or 'none'})")
        names = [f"{path}{SEP}{k}" for k in keys]
        for f in table.columns:
            if table[f].isna().any():
                raise KitError(f"{names[int(np.flatnonzero(table[f].isna().to_numpy())[0])]}: the record has "
                               f"no field {f!r}")
        if spec.id_column not in table.columns:
            table[spec.id_column] = [str(spec.first_id + counted + k) for k in range(len(table))]
            numbered = True
        counted += len(table)
        frames.append(pd.DataFrame({"id": table[spec.id_column].astype(str).to_numpy(), "path": names,
                                    **{f: table[f].to_numpy() if f in table else [] for f in fields}}))
    out = pd.concat(frames, ignore_index=True)
    out.attrs["numbered"] = numbered
    return out


def _pixels(path, spec, wanted, image):
    header = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
    pixels = set(pixel_columns(spec.pixels, header))
    columns = [c for c in header if c not in pixels and c in wanted]
    table = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=columns or header[:1],  # rows counted
                        encoding="utf-8-sig")
    return table[columns].assign(_key=range(len(table)))


def _parquet(path, spec, wanted, image):
    import pyarrow.parquet as pq
    names = pq.ParquetFile(path).schema_arrow.names
    columns = [c for c in wanted if c in names]
    table = pq.read_table(path, columns=columns).to_pandas() if columns else \
        pd.DataFrame(index=range(pq.ParquetFile(path).metadata.num_rows))
    return table.astype(str).assign(_key=range(len(table)))


def _tfrecord(path, spec, wanted, image):
    rows = []
    with open(path, "rb") as f:
        for k, (offset, length) in enumerate(tfrecord_spans(path)):
            f.seek(offset + 12)
            fields = example_fields(f"{path}{SEP}{k}", f.read(length))
            rows.append({n: _text(fields[n]) for n in wanted if n in fields})
    return pd.DataFrame(rows, columns=[n for n in wanted if any(n in r for r in rows)]).assign(
        _key=range(len(rows)))


def _hdf5(path, spec, wanted, image):
    keys = hdf5_keys(path)
    return pd.DataFrame({spec.id_column: keys, "_key": keys})


def hdf5_keys(path):
    """The entries at the top of an HDF5 file of one image each; another file is one line saying
    what it holds (the images under a group, or stacked in one array)."""
    import h5py
    with h5py.File(path, "r") as f:
        keys = list(f.keys())
        if not all(_one_image(f.get(k)) for k in keys[:8]):  # ISIC's 400k entries: a few tell
            raise KitError(f"{path}: the kit reads an HDF5 file of one entry per image at its top, "
                           f"keyed by id (ISIC 2024's); it holds {_contents(f)}: save the images as such "
                           f"entries, or as one array in an .npy or .npz (image_form: numpy)")
    return keys


def _one_image(entry):
    """Whether an HDF5 entry holds one image: encoded bytes, or pixels as kit/containers.py reads
    them (H x W, H x W x C, C x H x W), not a stack of images, nor a group (which has no shape)."""
    shape = getattr(entry, "shape", None)
    if shape is None or len(shape) > 3:
        return False
    return len(shape) < 3 or bool({shape[0], shape[2]} & {1, 3, 4})


def _contents(f, n=6):
    """The first `n` datasets of an open HDF5 file, each as its path, shape and type."""
    found = []

    def take(name, entry):
        if hasattr(entry, "shape"):
            found.append(f"/{name} {entry.shape} {entry.dtype}")
        return True if len(found) > n else None  # visititems stops at a value
    f.visititems(take)
    return ", ".join(found[:n]) + (", ..." if len(found) > n else "") if found else "no dataset"


def _numpy(path, spec, wanted, image):
    if path.suffix == ".npy":
        return pd.DataFrame({"_key": range(len(np.load(path, mmap_mode="r")))})
    with np.load(path) as archive:
        if image not in archive:
            raise KitError(f"{path} has no array {image!r} (arrays: {', '.join(map(repr, archive))}): set "
                           f"record_image (test_record_image for the test images)")
        n = len(archive[image])
        columns = {f: [_text(v) for v in archive[f]] for f in wanted if f in archive and len(archive[f]) == n}
    return pd.DataFrame({**columns, "_key": [f"{image}/{k}" for k in range(n)]})


def _text(value):
    if isinstance(value, bytes):
        return value.decode()
    return str(value.item() if hasattr(value, "item") else value)


LISTERS = {"pixels": _pixels, "parquet": _parquet, "tfrecord": _tfrecord, "hdf5": _hdf5, "numpy": _numpy}


def image_form(spec, side):
    return spec.image_form if side == "train" else spec.test_image_form or spec.image_form


def container_files(spec, side):
    """The globs of the containers holding a side's images (a pixel table: by default the labels
    CSV for train, test.csv for test)."""
    form = image_form(spec, side)
    patterns = spec.train_files if side == "train" else spec.test_files
    if not patterns and form == "pixels":
        return [spec.train_csv if side == "train" else "test.csv"]
    if not patterns:
        raise KitError(f"{side}_files: name the {form} files holding the {side} images "
                       f"(globs in the data folder)")
    return [patterns] if isinstance(patterns, str) else patterns


def locate(spec, root, ids, side):
    """(the record name of each id, the names of the records no id asks for). Records numbered
    (no id field) either all line up with the ids or the numbering is off: any id beyond them is
    an error (first_id); a few ids missing from keyed records (an HDF5 entry, a TFRecord id) are
    skipped in training, as missing files are."""
    patterns = container_files(spec, side)
    image = spec.record_image if side == "train" else spec.test_record_image or spec.record_image
    table = catalog(root, patterns, image_form(spec, side), spec, image=image)
    ids, listed = [str(i) for i in ids], ", ".join(patterns)
    repeated = table["id"][table["id"].duplicated()]
    if len(repeated):
        raise KitError(f"the {side} images ({listed}): id {repeated.iloc[0]!r} is held by more than one "
                       f"record")
    name_of = dict(zip(table["id"], table["path"]))
    missing = [i for i in ids if i not in name_of]
    if missing and (side == "test" or table.attrs["numbered"] or len(missing) > len(ids) / 2):
        numbered = (f"; the records have no {spec.id_column!r} field, so they are numbered "
                    f"{table['id'].iloc[0]}..{table['id'].iloc[-1]} from first_id ({spec.first_id})"
                    if table.attrs["numbered"] and len(table) else "")
        raise KitError(f"{len(missing)} of {len(ids)} {side} ids have no image in {listed}, e.g. "
                       f"{missing[0]!r}: check id_column{numbered}")
    asked = set(ids)
    names = [name_of.get(i) or f"{root / patterns[0]}{SEP}{MISSING}{i}" for i in ids]
    return names, [p for i, p in name_of.items() if i not in asked]
