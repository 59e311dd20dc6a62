"""Competition metrics: sklearn's implementations, with their direction and the tasks they fit.

Predictions `p` are probabilities: binary (n,) P(positive); multiclass and multilabel (n, K).
Labels `y` are binary (n,) 0/1, multiclass (n,) class index, multilabel (n, K) 0/1.
"""
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class Metric:
    score: object  # (y, p, threshold) -> float
    higher_is_better: bool
    tasks: tuple
    hard: bool = True  # scores labels (probabilities thresholded or argmaxed), not probabilities


def _hard(y, p, threshold):
    """Probabilities to the labels a hard-label metric compares."""
    if p.ndim == 1 or y.ndim == 2:  # binary or multilabel
        return (p >= threshold).astype(int)
    return p.argmax(1)


def _log_loss(y, p, threshold):
    if y.ndim == 2:  # multilabel: mean column-wise log loss, as Kaggle scores it
        return float(np.mean([skm.log_loss(y[:, k], p[:, k], labels=[0, 1]) for k in range(y.shape[1])]))
    labels = [0, 1] if p.ndim == 1 else list(range(p.shape[1]))
    return float(skm.log_loss(y, p, labels=labels))


def _roc_auc(y, p, threshold):
    if p.ndim == 2 and y.ndim == 1:
        return float(skm.roc_auc_score(y, p, multi_class="ovr", labels=list(range(p.shape[1]))))
    return float(skm.roc_auc_score(y, p))  # binary, or macro over multilabel columns


def _hard_metric(fn, **kwargs):
    return lambda y, p, threshold: float(fn(y, _hard(y, p, threshold), **kwargs))


ALL = ("binary", "multiclass", "multilabel")
METRICS = {
    "log_loss": Metric(_log_loss, False, ALL, hard=False),
    "roc_auc": Metric(_roc_auc, True, ALL, hard=False),
    "accuracy": Metric(_hard_metric(skm.accuracy_score), True, ALL),
    "f1_micro": Metric(_hard_metric(skm.f1_score, average="micro"), True, ALL),
    "f1_macro": Metric(_hard_metric(skm.f1_score, average="macro"), True, ALL),
    "qwk": Metric(_hard_metric(skm.cohen_kappa_score, weights="quadratic"), True, ("binary", "multiclass")),
    "f2": Metric(_hard_metric(skm.fbeta_score, beta=2, average="samples", zero_division=0), True,
                 ("multilabel",)),
}


def score(name, y, p, threshold=0.5):
    return METRICS[name].score(np.asarray(y), np.asarray(p), threshold)


def postprocess(spec, p):
    """Predictions as they are submitted: log-loss probabilities clipped (rows renormalised)."""
    if spec.metric != "log_loss" or not spec.clip:
        return p
    p = np.clip(p, spec.clip, 1 - spec.clip)
    return p / p.sum(1, keepdims=True) if spec.task == "multiclass" else p


def spec_score(spec, y, p):
    """The competition's score of predictions as they would be submitted."""
    return score(spec.metric, y, postprocess(spec, np.asarray(p)), spec.threshold)
