"""Cross-validation and ensembling over whatever runs exist on disk: the maths (kit/report.py
prints the CV, kit/submission.py writes the ensemble's submission).

A member's folds are combined first: its OOF predictions are its folds' validation predictions
put together, its test predictions the mean over its folds. Members are then combined by mean,
rank mean, weights hill-climbed on the OOF predictions (Caruana et al., 2004), or a stacker
(kit/stack.py). Honest CV: whatever is fitted on the OOF (weights, the stacker, the
post-processing) is scored on each fold with what was fitted on the other folds only; the test
predictions use what is fitted on all of them.
"""
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kit import KitError, postprocess, stack
from kit.folds import load_folds
from kit.metrics import METRICS, column_names, score_decisions, spec_score
from kit.provenance import check_same_data, checksums, recorded, settings_of
from kit.runs import probabilities, run_of, test_in_order, trained_members, variants

METHODS = ("mean", "rank", "weighted", "stack")


@dataclass
class Member:
    """One member's predictions over the folds it has finished."""

    name: str
    folds: list
    oof: pd.DataFrame  # indexed by id
    oof_fold: np.ndarray  # the fold of each OOF row
    test: pd.DataFrame  # indexed by id: member_test of its runs
    fold_scores: dict
    runs: list  # (member, fold) of every run its test predictions average (several members: seeds averaged)

    @property
    def parts(self):
        """The members whose runs it is made of."""
        return list(dict.fromkeys(part for part, _ in self.runs))


def member_test(parts):
    """A member's test prediction from its runs' ({part: [each fold's prediction]}): each part's
    (a seed's) folds averaged, then the parts. The same here (make ensemble) as where a release
    runs (kit/kaggle/infer.py), whatever folds each seed finished."""
    means = [sum(folds) / len(folds) for folds in parts.values()]
    return sum(means) / len(means)


def load_members(spec, data):
    """(members, missing): each member of the spec (kit/runs.variants) with at least one finished
    fold, and the `member/fold<k>` runs that are not there (yet)."""
    labels = pd.Series(list(range(len(data.train))), index=data.train["id"])
    members, missing, names = [], [], [v.name for v in variants(spec)]
    now, columns = None, column_names(spec.task, data.classes)
    for name in names:
        oofs, tests, scores, settings = [], [], {}, {}
        for fold in range(spec.n_folds):
            run = run_of(spec, name, fold)
            if not run.finished():
                missing.append(f"{name}/fold{fold}")
                continue
            now = checksums(spec, data, load_folds(spec, data)) if now is None else now  # once, for all runs
            oof, test, config = *run.predictions(), recorded(run)
            check_same_data(spec, run, config, now, same_classes=list(oof.columns) == columns)
            settings[fold] = settings_of(config)
            if len(oof.index.difference(labels.index)):
                raise KitError(f"{run.path} was trained on other data than data/{spec.slug} holds now "
                               f"(ids differ): train it again with force=1")
            test = test_in_order(test, data.test["id"], name, fold)
            scores[fold] = spec_score(spec, data.y[labels[oof.index]], probabilities(spec.task, oof))
            oofs.append(oof)
            tests.append(test)
        _say_mixed(name, settings)
        if oofs:
            oof_fold = np.concatenate([np.full(len(o), k) for k, o in zip(sorted(scores), oofs)])
            members.append(Member(name, sorted(scores), pd.concat(oofs), oof_fold, member_test({name: tests}),
                                  scores, [(name, k) for k in sorted(scores)]))
    if not members:
        others = trained_members(spec)
        hint = f"; finished runs of {', '.join(others)} are there: backbones={','.join(others)} names them" \
            if others else ""
        raise KitError(f"no finished runs of {', '.join(names)} under {spec.runs_path}: train "
                       f"some folds first (make fold=0 backbone={names[0]} competition={spec.slug}){hint}")
    return (_average_seeds(spec, members, labels_of(data)) if spec.average_seeds else members), missing


def _say_mixed(name, settings):
    """One line when a member's folds were trained with different settings: its CV mixes them.
    A key only some configs have (recorded since) is not a difference."""
    first = min(settings, default=None)
    for fold, kept in settings.items():
        changed = [k for k in kept if k in settings[first] and kept[k] != settings[first][k]]
        if changed:
            keys = ", ".join(sorted(changed)[:4])
            print(f"{name}: fold{fold} was trained or predicted with other settings ({keys}) than "
                  f"fold{first}: its CV mixes them")


def _average_seeds(spec, members, y_of):
    """Members that differ only by seed, as one member: the mean of their predictions, OOF over
    the folds and images they all have, test over every fold each finished."""
    groups = {}
    for m in members:
        groups.setdefault(re.sub(r"-seed\d+", "", m.name), []).append(m)
    averaged = []
    for name, group in groups.items():
        if len(group) == 1:
            averaged.append(group[0])
            continue
        ids = group[0].oof.index
        for m in group[1:]:
            ids = ids.intersection(m.oof.index, sort=False)
        oof = sum(m.oof.loc[ids] for m in group) / len(group)
        fold = pd.Series(group[0].oof_fold, index=group[0].oof.index)[ids].to_numpy()
        scores = {int(k): spec_score(spec, y_of(ids[fold == k]), probabilities(spec.task, oof[fold == k]))
                  for k in np.unique(fold)}
        test = member_test({m.name: [m.test] for m in group})  # m.test: its folds' mean already
        averaged.append(Member(f"{name}-seeds", sorted(scores), oof, fold, test, scores,
                               [run for m in group for run in m.runs]))
    return averaged


def labels_of(data):
    """ids -> their labels."""
    position = pd.Series(range(len(data.train)), index=data.train["id"])
    return lambda ids: data.y[position[ids].to_numpy()]


@dataclass
class Ensemble:
    method: str
    ids: pd.Index  # the OOF ids every member predicted
    folds: np.ndarray  # the fold of each
    y: np.ndarray  # and its labels
    oof: np.ndarray  # honest: combined with what was fitted on the other folds
    test: np.ndarray  # combined with what was fitted on every fold
    params: dict  # that: {"weights": [...]} or {"stacker": {...}} (kit/stack.py)


def combine(spec, members, y_of, method):
    """The members' predictions combined by `method`, over the ids that every member predicted."""
    check_method(spec, method, members)
    ids = members[0].oof.index
    for m in members[1:]:
        ids = ids.intersection(m.oof.index, sort=False)
    folds = pd.Series(members[0].oof_fold, index=members[0].oof.index)[ids].to_numpy()
    oofs = [probabilities(spec.task, m.oof.loc[ids]) for m in members]
    tests = [probabilities(spec.task, m.test) for m in members]
    y = y_of(ids)
    fitted = lambda rows: _fit(spec, method, [p[rows] for p in oofs], y[rows])
    oof = np.empty_like(oofs[0])
    for k in np.unique(folds):
        oof[folds == k] = apply(spec.task, method, fitted(folds != k), [p[folds == k] for p in oofs])
    if method == "rank":  # ranks are of the whole OOF, not of each fold's share
        oof = apply(spec.task, method, fitted(folds >= 0), oofs)
    params = fitted(folds >= 0)
    return Ensemble(method, ids, folds, y, oof, apply(spec.task, method, params, tests), params)


def _fit(spec, method, predictions, y):
    if method == "stack":
        return {"stacker": stack.fit(spec.task, predictions, y)}
    if method == "weighted":
        score = lambda y, p: spec_score(spec, y, p)
        return {"weights": hill_climb(predictions, y, score, METRICS[spec.metric].higher_is_better).tolist()}
    return {"weights": [1 / len(predictions)] * len(predictions)}


def apply(task, method, params, predictions):
    """The members' predictions combined with fitted `params`: the same for the OOF, for the local
    test set and for a hidden one (kit/kaggle/infer.py)."""
    if method == "stack":
        return stack.apply(task, params["stacker"], predictions)
    if method == "rank":
        predictions = [_ranks(p) for p in predictions]
    return sum(w * p for w, p in zip(params["weights"], predictions))


def check_method(spec, method, members):
    if method not in METHODS:
        raise KitError(f"unknown ensemble method {method!r} (methods: auto, {', '.join(METHODS)})")
    if method == "rank" and spec.metric != "roc_auc":
        raise KitError(f"rank averaging gives ranks, not probabilities: it fits roc_auc, not {spec.metric}")
    if method == "stack" and len(members) < 2:
        raise KitError(f"a stack needs 2 members or more; this ensemble has only {members[0].name}")
    if method in ("weighted", "stack") and _shared_folds(members) < 2:
        raise KitError(f"{method} is fitted on the OOF and scored on other folds: it needs 2 folds that "
                       f"every member finished")


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


@dataclass
class Choice:
    """An ensemble method and whether post-processing goes with it, by honest CV."""

    ensemble: Ensemble
    cv: float  # without post-processing
    postprocessed: float | None  # with it, fitted on the other folds (None: none for this metric)
    apply_postprocess: bool

    @property
    def score(self):
        return self.postprocessed if self.apply_postprocess else self.cv


def evaluate(spec, members, y_of, method):
    """The honest CV of `method`, with and without post-processing, and the spec's decision."""
    e = combine(spec, members, y_of, method)
    cv = spec_score(spec, e.y, e.oof)
    if postprocess.kind(spec) is None or spec.postprocess == "off" or len(np.unique(e.folds)) < 2:
        return Choice(e, cv, None, False)
    decided = score_decisions(spec.metric, e.y, postprocess.honest(spec, e.y, e.oof, e.folds))
    better = decided > cv if METRICS[spec.metric].higher_is_better else decided < cv
    return Choice(e, cv, decided, spec.postprocess == "on" or better)


def choose(spec, members, y_of, method="auto"):
    """(chosen, every choice evaluated): `method`, or with "auto" the best honest CV."""
    methods = usable_methods(spec, members) if method == "auto" else [method]
    choices = [evaluate(spec, members, y_of, m) for m in methods]
    sign = 1 if METRICS[spec.metric].higher_is_better else -1
    return max(choices, key=lambda c: sign * c.score), choices


def cross_validate(spec, data):
    """(table, members, missing, choices): the score of every fold x member, every member's whole
    OOF, and each ensemble's honest OOF with and without post-processing, as rows of model, fold,
    score, images."""
    members, missing = load_members(spec, data)
    y_of = labels_of(data)
    rows = []
    for m in members:
        for fold in m.folds:
            rows.append((m.name, f"fold{fold}", m.fold_scores[fold], int((m.oof_fold == fold).sum())))
        oof = probabilities(spec.task, m.oof)
        rows.append((m.name, "oof", spec_score(spec, y_of(m.oof.index), oof), len(m.oof)))
    _, choices = choose(spec, members, y_of)
    for c in choices:
        rows.append((f"ensemble:{c.ensemble.method}", "oof", c.cv, len(c.ensemble.ids)))
        if c.postprocessed is not None:
            rows.append((f"ensemble:{c.ensemble.method}+pp", "oof", c.postprocessed, len(c.ensemble.ids)))
    table = pd.DataFrame(rows, columns=["model", "fold", "score", "images"])
    return table, members, missing, choices


def usable_methods(spec, members):
    """The ensemble methods worth reporting: rank only for a rank metric, fitted ones with 2+
    members and 2+ folds every member finished (fitted on one, scored on another)."""
    fitted = len(members) > 1 and _shared_folds(members) > 1
    return [m for m in METHODS
            if (m != "rank" or spec.metric == "roc_auc") and (m in ("mean", "rank") or fitted)]


def _shared_folds(members):
    return len(set.intersection(*(set(m.folds) for m in members)))
