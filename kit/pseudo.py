"""`make pseudo`: a pseudo-labelling round. Test images the round-1 members agree on with
confidence (`pseudo_threshold`) get their predicted labels and join the *training* images of
every fold in round 2, never its validation images: the OOF stays honest.

Fold k's pseudo-labels come from round 1's fold-k runs only (the mean of the members'), models
that never saw fold k's validation labels, so no label of fold k reaches its round-2 model
through the test images either. The labels go to runs/<slug>/pseudo.csv, the round-2 spec
(the spec plus `pseudo:`) to runs/<slug>/round2.yaml: its members are round 1's and the same
again with `-pseudo`, so `make all` with it trains only the new runs and `make cv` shows both
rounds side by side.
"""
import dataclasses

import numpy as np
import pandas as pd

from kit import KitError
from kit.config import dump
from kit.data import load_data
from kit.files import write_csv, write_text
from kit.metrics import column_names, hard_labels
from kit.runs import probabilities, pseudo_file, run_of, test_in_order, variants


def pseudo_round(spec):
    """Write the pseudo-labels and the round-2 spec; returns the spec's path."""
    data = load_data(spec)
    members = [v.name for v in variants(spec) if not v.pseudo]
    frames = []
    for fold in range(spec.n_folds):
        runs = {m: run_of(spec, m, fold) for m in members if run_of(spec, m, fold).finished()}
        if not runs:
            print(f"fold {fold}: no finished run of {', '.join(members)}: no pseudo-labels for it")
            continue
        p = np.mean([probabilities(spec.task, test_in_order(run.predictions()[1], data.test["id"], m, fold))
                     for m, run in runs.items()], 0)
        sure = _confident(spec, p)
        labels = _labels(spec, p[sure])
        columns = column_names(spec.task, data.classes)
        frames.append(pd.DataFrame({"id": data.test["id"].to_numpy()[sure], "fold": fold,
                                    **{c: labels[:, k] for k, c in enumerate(columns)}}))
        print(f"fold {fold}: {int(sure.sum())} of {len(p)} test images labelled (mean of {len(runs)} runs, "
              f"confidence >= {spec.pseudo_threshold})")
    if not frames:
        raise KitError(f"a pseudo round needs round 1's test predictions: no finished runs of "
                       f"{', '.join(members)} under {spec.runs_path}")
    write_csv(pseudo_file(spec), pd.concat(frames))
    path = spec.runs_path / "round2.yaml"
    write_text(path, dump(dataclasses.replace(spec, pseudo=str(pseudo_file(spec)))))
    print(f"wrote {pseudo_file(spec)} and {path}: make all competition={path} trains the -pseudo members")
    return path


def _confident(spec, p):
    """The rows whose every decision is at least `pseudo_threshold` sure."""
    if spec.task == "multiclass":
        return p.max(1) >= spec.pseudo_threshold
    sure = np.maximum(p, 1 - p) >= spec.pseudo_threshold
    return sure.all(1) if sure.ndim == 2 else sure


def _labels(spec, p):
    """Hard labels, one 0/1 column per stored class (binary: the positive one). A confident
    decision is on the same side of 0.5 whatever the spec's threshold."""
    hard = hard_labels(spec.task, p, 0.5)
    if spec.task == "multiclass":
        return np.eye(p.shape[1], dtype=int)[hard]
    return hard.reshape(len(p), p.shape[1] if p.ndim == 2 else 1)  # no row: still 2-D
