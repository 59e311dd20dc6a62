"""Submission CSVs shaped exactly like the competition's sample submission (its format: kit/sample_format.py),
their validation, and the ensemble's submission (the command behind `make ensemble`)."""
import dataclasses
import datetime
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from kit import KitError
from kit.data import load_classes, load_ids
from kit.ensemble import apply, choose, labels_of, load_members
from kit.files import read_csv, write_csv, write_text
from kit.layouts import split_long
from kit.metrics import METRICS, class_matrix, hard_labels
from kit.metrics import postprocess as clipped
from kit.postprocess import decide, fit
from kit.runs import probabilities
from kit.sample_format import submission_format

FLOAT = "%.8g"  # probabilities as written: 0.88659335, not 0.8865933500000001 (1e-8 is finer than any score)


def frame(spec, sample, classes, test_ids, p, params=None):
    """The submission: the sample's columns and id order, values in the format it asks for,
    decided from probabilities `p` with post-processing `params` (None: as the spec says)."""
    id_column, fmt = sample.columns[0], submission_format(spec, sample, classes)
    position = pd.Series(range(len(test_ids)), index=pd.Index(test_ids))
    images, row_classes = (split_long(sample[id_column], classes) if fmt == "long" else
                           (sample[id_column], None))
    missing = pd.Index(images).difference(position.index)
    extra = position.index.difference(pd.Index(images))
    if len(missing) or len(extra):
        raise KitError(f"the sample submission's ids do not match the test images: {len(missing)} ids "
                       f"have no prediction{f' (e.g. {missing[0]})' if len(missing) else ''}, {len(extra)} "
                       f"predictions are not in it{f' (e.g. {extra[0]})' if len(extra) else ''}")
    p = p[position[images].to_numpy()]
    out = pd.DataFrame({id_column: sample[id_column]})
    hard = METRICS[spec.metric].hard
    if fmt in ("long", "per_class"):  # a value per image and class: 0/1 where the metric scores labels
        if hard:
            labels = decide(spec, params, p)
            matrix = labels if labels.ndim == 2 else np.eye(len(classes), dtype=int)[labels]
        else:
            matrix = class_matrix(spec.task, decide(spec, params, p) if spec.metric == "log_loss"
                                  else clipped(spec, p))
        if fmt == "long":  # each row: its image's value for its class
            out[sample.columns[1]] = matrix[np.arange(len(out)), [classes.index(c) for c in row_classes]]
        for column in sample.columns[1:] if fmt == "per_class" else []:
            out[column] = matrix[:, classes.index(str(column))]
        return out
    if fmt == "probability":  # post-processed only where it gives probabilities
        out[sample.columns[1]] = decide(spec, params, p) if spec.metric == "log_loss" else clipped(spec, p)
        return out
    labels = decide(spec, params, p) if hard else hard_labels(spec.task, p, spec.threshold)
    if fmt == "labels":
        out[sample.columns[1]] = [" ".join(c for c, on in zip(classes, row) if on) for row in labels]
    else:
        out[sample.columns[1]] = [classes[k] for k in labels]
    return out


def submitted(spec, sample, classes, test_ids, tests, method, ensemble, postprocess):
    """The submission of the members' test predictions `tests` (each its runs' member_test),
    combined by `method` with its fitted `ensemble` parameters, post-processed with `postprocess`:
    what make ensemble writes, and what a release writes where it runs (kit/kaggle/infer.py)."""
    return frame(spec, sample, classes, test_ids, apply(spec.task, method, ensemble, tests), postprocess)


def write(spec, submission, method, about, folder="submissions"):
    """submissions/<slug>-<UTC time>-<method>.csv (atomically), with a .json of what made it."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    Path(folder).mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = Path(folder) / f"{spec.slug}-{stamp}-{method}{f'-{n}' if n > 1 else ''}.csv"
        try:  # the name taken at once: two processes in the same second never overwrite each other
            path.open("x").close()
            break
        except FileExistsError:
            continue
    try:
        write_csv(path, submission, FLOAT)
        write_text(path.with_suffix(".json"), json.dumps(about, indent=1) + "\n")
    except BaseException:  # no empty file left for make submit to take as the newest submission
        path.unlink(missing_ok=True)
        raise
    return path


def problems(path, sample, spec, classes):
    """Every way the CSV at `path` differs from what the sample submission asks for."""
    try:
        got = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        return [f"cannot read it as CSV ({str(e).strip().splitlines()[0]})"]
    found = []
    want = list(sample.columns)
    missing = [c for c in want if c not in got.columns]
    extra = [c for c in got.columns if c not in want]
    found += [f"column {c!r} is missing" for c in missing]
    found += [f"column {c!r} is not in the sample" for c in extra]
    if not missing and not extra and list(got.columns) != want:
        found.append(f"columns are in another order than the sample's: {', '.join(want)}")
    if len(got) != len(sample):
        found.append(f"{len(got)} rows; the sample submission has {len(sample)}")
    id_column = want[0]
    if id_column in got.columns:
        ids, expected = got[id_column], sample[id_column].astype(str)
        duplicated = ids[ids.duplicated()]
        if len(duplicated):
            found.append(f"{len(duplicated)} duplicated ids, e.g. {duplicated.iloc[0]!r}")
        absent, unknown = set(expected) - set(ids), set(ids) - set(expected)
        if absent:
            found.append(f"{len(absent)} ids of the sample are missing, e.g. {sorted(absent)[0]!r}")
        if unknown:
            found.append(f"{len(unknown)} ids are not in the sample, e.g. {sorted(unknown)[0]!r}")
        if not absent and not unknown and not len(duplicated) and ids.tolist() != expected.tolist():
            row = next(i for i, (a, b) in enumerate(zip(ids, expected)) if a != b)
            found.append(f"ids are in another order than the sample's (first at row {row + 2})")
    fmt = submission_format(spec, sample, classes)
    for column in [c for c in want[1:] if c in got.columns]:
        found += [f"column {column!r}: {p}" for p in _value_problems(got[column], fmt, classes,
                                                                     METRICS[spec.metric].hard)]
    return found


def _value_problems(values, fmt, classes, hard):
    if fmt in ("probability", "per_class") or fmt == "long" and not hard:
        numbers = pd.to_numeric(values, errors="coerce")
        bad = []
        if numbers.isna().sum():
            bad.append(f"{int(numbers.isna().sum())} values are not numbers (empty, NaN or text), "
                       f"e.g. row {int(np.flatnonzero(numbers.isna())[0]) + 2}")
        finite = numbers[numbers.notna()]
        if np.isinf(finite).sum():
            bad.append(f"{int(np.isinf(finite).sum())} values are infinite")
        outside = ((finite < 0) | (finite > 1)) & ~np.isinf(finite)
        if outside.sum():
            bad.append(f"{int(outside.sum())} probabilities are outside [0, 1]")
        return bad
    if fmt in ("label", "long"):
        allowed = ["0", "1"] if fmt == "long" else classes
        unknown = values[~values.isin(allowed)]
        if len(unknown):
            return [f"{len(unknown)} values are not class labels, e.g. {unknown.iloc[0]!r}"]
        return []
    tokens = {t for cell in values for t in cell.split()}
    unknown = sorted(tokens - set(classes))
    return [f"{len(unknown)} labels are not classes, e.g. {unknown[0]!r}"] if unknown else []


def check(path, spec):
    """Validate the CSV at `path` against the sample submission and the classes (read off the
    labels: no image is touched); problems are printed one per line and fail the command."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"no submission file at {path}")
    at = spec.data_path / spec.sample_submission
    if not at.is_file():
        raise KitError(f"no sample submission of competition {spec.slug} at {at}: competition=<slug> names "
                       f"the one {path.name} is for")
    sample = read_csv(at, "sample submission")
    found = problems(path, sample, spec, load_classes(spec))
    if found:
        raise KitError(f"{path} is not a valid submission ({len(found)} problems):\n"
                       + "\n".join(f"  - {p}" for p in found))
    print(f"{path}: valid ({len(sample)} rows, columns {', '.join(sample.columns)})")


def ensemble_submission(spec, method="auto"):
    """Ensemble whatever runs are finished into submissions/<slug>-<time>-<method>.csv: by
    `method`, or (auto) by the one whose honest CV is best; post-processed as the spec says
    (auto: when its honest CV is better), with the parameters refitted on every fold's OOF.
    Runs of the spec not finished (missing, or training now) make it -partial.csv, and say so."""
    data = load_ids(spec)  # the predictions are made: no image is looked at
    members, missing = load_members(spec, data)
    chosen, choices = choose(spec, members, labels_of(data), method)
    e = chosen.ensemble
    params = fit(spec, e.y, e.oof) if chosen.apply_postprocess else None
    name = e.method + ("+pp" if params else "")
    runs = [f"{part}/fold{k}" for m in members for part, k in m.runs]  # each seed averaged
    about = {"competition": spec.slug, "method": name, "metric": spec.metric, "cv": round(chosen.score, 6),
             "cv_without_postprocess": round(chosen.cv, 6), "members": [m.name for m in members],
             "ensemble": e.params, "postprocess": params, "runs": runs, "missing": missing,
             "partial": bool(missing), "spec": dataclasses.asdict(spec)}  # make validate reads it
    sample = read_csv(spec.data_path / spec.sample_submission, "sample submission")
    tests = [probabilities(spec.task, m.test) for m in members]
    ids = data.test["id"].tolist()
    submission = submitted(spec, sample, data.classes, ids, tests, e.method, e.params, params)
    path = write(spec, submission, name + ("-partial" if missing else ""), about)
    if method == "auto":
        others = ", ".join(f"{c.ensemble.method}{'+pp' if c.apply_postprocess else ''} {c.score:.5f}"
                           for c in choices if c is not chosen)
        print(f"chose {name}: the best honest CV ({chosen.score:.5f}{'; ' + others if others else ''})")
    print(f"ensemble ({name}) of {len(runs)} runs: {', '.join(runs)}")
    if "weights" in e.params and e.method == "weighted":
        print("weights: " + ", ".join(f"{m.name} {w:.4g}" for m, w in zip(members, e.params["weights"])))
    if params:
        print(f"post-processing (fitted on every fold's OOF): {params}")
    print(f"OOF {spec.metric} (honest): {chosen.score:.5f} on {len(e.ids)} images")
    print(f"wrote {path}")
    if missing:  # last: a partial submission validates and would otherwise pass for the final one
        print(f"partial: {len(missing)} of {len(missing) + len(runs)} runs are not finished "
              f"({', '.join(missing)}): not the final submission; make ensemble again once they are")
    return path
