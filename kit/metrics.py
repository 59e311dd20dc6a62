"""Probabilities and labels as the kit holds them, and the competition metrics (sklearn's
implementations, with their direction and the tasks they fit).

Probabilities `p`: binary (n,) P(positive class); multiclass and multilabel (n, K).
Labels `y`: binary (n,) 0/1, multiclass (n,) class index, multilabel (n, K) 0/1.
Keras and the prediction files hold a binary task as one column, (n, 1): `as_columns` and
`from_columns` cross that border, in this module only.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from kit import quoted


def as_columns(task, a):
    """Probabilities or labels as Keras and the prediction files hold them: binary (n, 1)."""
    a = np.asarray(a)
    return a.reshape(-1, 1) if task == "binary" else a


def from_columns(task, a):
    """A model's output, or a prediction file's values, as the kit holds them: binary (n,)."""
    a = np.asarray(a)
    return a[:, 0] if task == "binary" else a


def column_names(task, classes):
    """The prediction files' columns: binary keeps only P(the second, positive class)."""
    return list(classes[1:]) if task == "binary" else list(classes)


def class_matrix(task, p):
    """One probability column per class, binary included."""
    return np.stack([1 - p, p], 1) if task == "binary" else p


def hard_labels(task, p, threshold):
    """Probabilities to labels: thresholded (binary 0/1, multilabel 0/1 per class) or argmaxed."""
    return p.argmax(1) if task == "multiclass" else (p >= threshold).astype(int)


@dataclass(frozen=True)
class Metric:
    fn: object  # (y, values) -> float: values are labels for a hard metric, else probabilities
    higher_is_better: bool
    tasks: tuple
    hard: bool = True  # scores labels (probabilities thresholded or argmaxed), not probabilities
    kaggle: tuple = ()  # how Kaggle's competition pages name it (lower case; make init reads them)


def _task(y, p):
    return "multilabel" if y.ndim == 2 else "binary" if p.ndim == 1 else "multiclass"


def _log_loss(y, p):
    if _task(y, p) == "multilabel":  # mean column-wise log loss, as Kaggle scores it
        return np.mean([skm.log_loss(y[:, k], p[:, k], labels=[0, 1]) for k in range(y.shape[1])])
    return skm.log_loss(y, p, labels=[0, 1] if p.ndim == 1 else list(range(p.shape[1])))


def _roc_auc(y, p):
    # A class no image holds: sklearn warns (1.6+) or raises at every call; the kit scores NaN
    # quietly and `undefined` says why, once
    if _one_sided(y, 2 if p.ndim == 1 else p.shape[1]):
        return math.nan
    if _task(y, p) == "multiclass":
        return skm.roc_auc_score(y, p, multi_class="ovr", labels=list(range(p.shape[1])))
    return skm.roc_auc_score(y, p)  # binary, or macro over multilabel columns


ALL = ("binary", "multiclass", "multilabel")
METRICS = {
    "log_loss": Metric(_log_loss, False, ALL, hard=False,
                       kaggle=("log loss", "logloss", "multiclass loss", "multi class log loss",
                               "mean column-wise log loss", "binary crossentropy")),
    "roc_auc": Metric(_roc_auc, True, ALL, hard=False,
                      kaggle=("auc", "roc auc", "area under receiver operating characteristic curve",
                              "area under the roc curve", "mean column-wise auc")),
    "accuracy": Metric(skm.accuracy_score, True, ALL,
                       kaggle=("categorization accuracy", "accuracy", "classification accuracy")),
    "f1_micro": Metric(functools.partial(skm.f1_score, average="micro"), True, ALL,
                       kaggle=("micro f1", "f1 micro", "micro-averaged f1 score")),
    "f1_macro": Metric(functools.partial(skm.f1_score, average="macro"), True, ALL,
                       kaggle=("macro f1", "f1 macro", "macro f1 score", "macro-averaged f1 score")),
    "qwk": Metric(functools.partial(skm.cohen_kappa_score, weights="quadratic"), True,
                  ("binary", "multiclass"), kaggle=("quadratic weighted kappa", "qwk")),
    "f2": Metric(functools.partial(skm.fbeta_score, beta=2, average="samples", zero_division=0), True,
                 ("multilabel",), kaggle=("mean f2 score", "f2 score", "mean f2")),
}


def _one_sided(y, n_classes):
    """(class, whether every image holds it) of each class ROC AUC cannot rank among labels `y`:
    one no image holds, or (multilabel) one every image holds."""
    if y.ndim == 2:
        held = y.sum(0)
        return [(k, bool(h)) for k, h in enumerate(held) if h in (0, len(y))]
    present = set(np.unique(y).astype(int).tolist())
    return [(k, False) for k in range(n_classes) if k not in present]


def undefined(name, y, classes):
    """Why metric `name` is undefined on labels `y` (a fold's validation images: n_folds above a
    class's count leaves one without it), or "" when it is defined."""
    if name != "roc_auc":
        return ""
    sides = _one_sided(np.asarray(y), len(classes))
    none, every = [classes[k] for k, held in sides if not held], [classes[k] for k, held in sides if held]
    said = ([f"hold no {quoted(none)}"] if none else []) + ([f"all hold {quoted(every)}"] if every else [])
    return "; ".join(said)


def undefined_fold(name, fold, y, classes):
    """One line when metric `name` is undefined on fold `fold`'s validation labels `y`, else ""."""
    why = undefined(name, y, classes)
    return why and (f"fold {fold}'s validation images {why}: its {name} is undefined; CV is the pooled "
                    f"OOF score")


def kaggle_metric(listed):
    """The kit's name of the metric a competition page lists as `listed` ("Log Loss"), or None."""
    said = " ".join(listed.lower().replace("_", " ").split())
    return next((name for name, m in METRICS.items() if said in m.kaggle), None)


def score(name, y, p, threshold=0.5):
    """The metric of probabilities `p` (thresholded or argmaxed first for a hard metric)."""
    y, p = np.asarray(y), np.asarray(p)
    return score_decisions(name, y, hard_labels(_task(y, p), p, threshold) if METRICS[name].hard else p)


def score_decisions(name, y, decisions):
    """The metric of what is submitted: labels for a hard metric, else probabilities."""
    value = float(METRICS[name].fn(np.asarray(y), np.asarray(decisions)))
    return round(value, 12) + 0.0  # no -0.0, no 1e-16 deciding between two equal scores


def postprocess(spec, p):
    """Predictions as they are submitted: log-loss probabilities clipped (rows renormalised)."""
    if spec.metric != "log_loss" or not spec.clip:
        return p
    p = np.clip(p, spec.clip, 1 - spec.clip)
    return p / p.sum(1, keepdims=True) if spec.task == "multiclass" else p


def spec_score(spec, y, p):
    """The competition's score of predictions as they would be submitted."""
    return score(spec.metric, y, postprocess(spec, np.asarray(p)), spec.threshold)
