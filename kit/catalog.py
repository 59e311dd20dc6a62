"""What the image containers of a competition hold: one row per record with its id, its image's
name (`<container>::<record>`, read by kit/records.py) and the fields asked for (a label kept in
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
from kit.records import FORMS, SEP, example_fields, pixel_columns, tfrecord_spans


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


def catalog(root, patterns, form, spec, fields=()):
    """DataFrame(id, path, *fields) of every record in the containers, ids as text."""
    frames, counted = [], 0
    for path in containers(root, patterns, form):
        wanted = [f for f in dict.fromkeys([spec.id_column, *fields]) if f]
        table = LISTERS[form](path, spec, wanted)
        missing = [f for f in fields if f not in table.columns]
        if missing:
            raise KitError(f"{path}: its records have no field {missing[0]!r} "
                           f"(fields: {', '.join(map(str, table.columns)) or 'none'})")
        names = [f"{path}{SEP}{k}" for k in table.pop("_key")]
        for f in table.columns:
            if table[f].isna().any():
                raise KitError(f"{names[int(np.flatnonzero(table[f].isna().to_numpy())[0])]}: the record has "
                               f"no field {f!r}")
        if spec.id_column not in table.columns:
            table[spec.id_column] = [str(spec.first_id + counted + k) for k in range(len(table))]
        counted += len(table)
        frames.append(pd.DataFrame({"id": table[spec.id_column].astype(str).to_numpy(), "path": names,
                                    **{f: table[f].to_numpy() for f in fields}}))
    return pd.concat(frames, ignore_index=True)


def _pixels(path, spec, wanted):
    header = pd.read_csv(path, nrows=0).columns
    pixels = set(pixel_columns(spec.pixels, header))
    columns = [c for c in header if c not in pixels and c in wanted]
    table = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=columns or header[:1])  # rows counted
    return table[columns].assign(_key=range(len(table)))


def _parquet(path, spec, wanted):
    import pyarrow.parquet as pq
    names = pq.ParquetFile(path).schema_arrow.names
    columns = [c for c in wanted if c in names]
    table = pq.read_table(path, columns=columns).to_pandas() if columns else \
        pd.DataFrame(index=range(pq.ParquetFile(path).metadata.num_rows))
    return table.astype(str).assign(_key=range(len(table)))


def _tfrecord(path, spec, wanted):
    rows = []
    with open(path, "rb") as f:
        for k, (offset, length) in enumerate(tfrecord_spans(path)):
            f.seek(offset + 12)
            fields = example_fields(f"{path}{SEP}{k}", f.read(length))
            rows.append({n: _text(fields[n]) for n in wanted if n in fields})
    return pd.DataFrame(rows, columns=[n for n in wanted if any(n in r for r in rows)]).assign(
        _key=range(len(rows)))


def _hdf5(path, spec, wanted):
    import h5py
    with h5py.File(path, "r") as f:
        keys = list(f.keys())
    return pd.DataFrame({spec.id_column: keys, "_key": keys})


def _numpy(path, spec, wanted):
    if path.suffix == ".npy":
        return pd.DataFrame({"_key": range(len(np.load(path, mmap_mode="r")))})
    with np.load(path) as archive:
        n = len(archive[spec.record_image]) if spec.record_image in archive else 0
        columns = {f: [_text(v) for v in archive[f]] for f in wanted if f in archive and len(archive[f]) == n}
    return pd.DataFrame({**columns, "_key": range(n)})


def _text(value):
    if isinstance(value, bytes):
        return value.decode()
    return str(value.item() if hasattr(value, "item") else value)


LISTERS = {"pixels": _pixels, "parquet": _parquet, "tfrecord": _tfrecord, "hdf5": _hdf5, "numpy": _numpy}
