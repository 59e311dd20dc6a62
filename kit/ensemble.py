"""Cross-validation and ensembling over whatever runs exist on disk: the maths (kit/report.py
prints the CV, kit/submission.py writes the ensemble's submission).

A backbone's folds are combined first: its OOF predictions are its folds' validation predictions
put together, its test predictions the mean over its folds. Backbones are then combined by
mean, rank mean, or weights hill-climbed on the OOF predictions (Caruana et al., 2004).
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kit import KitError
from kit.metrics import METRICS, spec_score
from kit.runs import probabilities, run_of

METHODS = ("mean", "rank", "weighted")


@dataclass
class Member:
    """One backbone's predictions over the folds it has finished."""

    name: str
    folds: list
    oof: pd.DataFrame  # indexed by id
    oof_fold: np.ndarray  # the fold of each OOF row
    test: pd.DataFrame  # indexed by id
    fold_scores: dict


def load_members(spec, data):
    """(members, missing): each backbone of the spec with at least one finished fold, and the
    `backbone/fold<k>` runs that are not there (yet)."""
    labels = pd.Series(list(range(len(data.train))), index=data.train["id"])
    members, missing = [], []
    for backbone in spec.backbones:
        oofs, tests, scores = [], [], {}
        for fold in range(spec.n_folds):
            run = run_of(spec, backbone, fold)
            if not run.finished():
                missing.append(f"{backbone}/fold{fold}")
                continue
            oof, test = run.predictions()
            unknown = oof.index.difference(labels.index)
            if len(unknown) or not test.index.equals(pd.Index(data.test["id"])):
                raise KitError(f"{run.path} was trained on other data than data/{spec.slug} holds now "
                               f"(ids differ): train it again with force=1")
            scores[fold] = spec_score(spec, data.y[labels[oof.index]], probabilities(spec.task, oof))
            oofs.append(oof)
            tests.append(test)
        if oofs:
            test = sum(t for t in tests) / len(tests)
            oof_fold = np.concatenate([np.full(len(o), k) for k, o in zip(sorted(scores), oofs)])
            members.append(Member(backbone, sorted(scores), pd.concat(oofs), oof_fold, test, scores))
    if not members:
        raise KitError(f"no finished runs of {', '.join(spec.backbones)} under {spec.runs_path}: train "
                       f"some folds first (make fold=0 backbone={spec.backbones[0]} competition={spec.slug})")
    return members, missing


def labels_of(data):
    """ids -> their labels."""
    position = pd.Series(range(len(data.train)), index=data.train["id"])
    return lambda ids: data.y[position[ids].to_numpy()]


def combine(spec, members, y_of, method):
    """(ids, oof, test, weights) of the ensemble: probabilities (ranks for `rank`) over the ids
    that every member predicted. `y_of` maps OOF ids to labels (for fitting weights)."""
    check_method(spec, method)
    ids = members[0].oof.index
    for m in members[1:]:
        ids = ids.intersection(m.oof.index, sort=False)
    oofs = [probabilities(spec.task, m.oof.loc[ids]) for m in members]
    tests = [probabilities(spec.task, m.test) for m in members]
    weights = np.full(len(members), 1 / len(members))
    if method == "weighted":
        weights = hill_climb(oofs, y_of(ids), lambda y, p: spec_score(spec, y, p),
                             METRICS[spec.metric].higher_is_better)
    return ids, blend(method, weights, oofs), blend(method, weights, tests), weights


def check_method(spec, method):
    if method not in METHODS:
        raise KitError(f"unknown ensemble method {method!r} (methods: {', '.join(METHODS)})")
    if method == "rank" and spec.metric != "roc_auc":
        raise KitError(f"rank averaging gives ranks, not probabilities: it fits roc_auc, not {spec.metric}")


def blend(method, weights, predictions):
    """The members' predictions combined: weighted, after turning each into ranks for `rank`.
    The same for OOF, for the local test set and for a hidden one (kit/infer.py)."""
    if method == "rank":
        predictions = [_ranks(p) for p in predictions]
    return sum(w * p for w, p in zip(weights, predictions))


def _ranks(p):
    """Each column's values as their rank in (0, 1]."""
    return pd.DataFrame(p).rank(pct=True).to_numpy().reshape(p.shape)


def hill_climb(predictions, y, scorer, higher_is_better, rounds=100):
    """Greedy forward selection with replacement: add the member that improves the OOF score
    most, until none does. Weights are how often each member was picked."""
    sign = 1 if higher_is_better else -1
    counts = np.zeros(len(predictions), int)
    current, best = None, -np.inf
    for _ in range(rounds):
        trials = []
        for k, p in enumerate(predictions):
            blend = p if current is None else (current * counts.sum() + p) / (counts.sum() + 1)
            trials.append((sign * scorer(y, blend), k, blend))
        value, k, blend = max(trials, key=lambda t: t[0])
        if value <= best:
            break
        best, current = value, blend
        counts[k] += 1
    return counts / counts.sum()


def cross_validate(spec, data):
    """(table, members, missing, weights): the score of every fold x backbone, every backbone's whole
    OOF, and each ensemble method's OOF, as rows of model, fold, score, images."""
    members, missing = load_members(spec, data)
    y_of = labels_of(data)
    rows = []
    for m in members:
        for fold in m.folds:
            rows.append((m.name, f"fold{fold}", m.fold_scores[fold], int((m.oof_fold == fold).sum())))
        oof = probabilities(spec.task, m.oof)
        rows.append((m.name, "oof", spec_score(spec, y_of(m.oof.index), oof), len(m.oof)))
    weights = {}
    for method in usable_methods(spec, members):
        ids, oof, _, w = combine(spec, members, y_of, method)
        rows.append((f"ensemble:{method}", "oof", spec_score(spec, y_of(ids), oof), len(ids)))
        weights[method] = dict(zip((m.name for m in members), w.round(4).tolist()))
    table = pd.DataFrame(rows, columns=["model", "fold", "score", "images"])
    return table, members, missing, weights


def usable_methods(spec, members):
    """The ensemble methods worth reporting: rank only for a rank metric, weights with 2+ members."""
    return [m for m in METHODS if (m != "rank" or spec.metric == "roc_auc") and
            (m == "mean" or len(members) > 1)]
