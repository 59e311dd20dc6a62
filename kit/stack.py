"""The level-2 model of `method: stack`: a logistic regression (scikit-learn) on the members'
out-of-fold predictions, as log-odds (binary, and each class of a multilabel task on its own)
or log-probabilities (multiclass). Fitted by sklearn, applied here from its coefficients, so a
release (kit/kaggle/infer.py) predicts exactly as the local ensemble without pickles."""
import warnings

import numpy as np
from scipy import special
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

EPS = 1e-7


def fit(task, predictions, y):
    """{"coef", "intercept"} (per class for multilabel) of the stacker of `predictions` (one
    array per member) on labels `y`."""
    if task == "multilabel":
        fits = [_fit(_features("binary", [p[:, k] for p in predictions]), y[:, k]) for k in range(y.shape[1])]
        return {"coef": [f["coef"] for f in fits], "intercept": [f["intercept"] for f in fits]}
    if task == "multiclass":
        return _multiclass(_features(task, predictions), y, predictions[0].shape[1])
    return _fit(_features(task, predictions), y)


def apply(task, stacker, predictions):
    """The stacker's probabilities for `predictions` (one array per member)."""
    if task == "multilabel":
        return np.stack([apply("binary", {"coef": c, "intercept": b}, [p[:, k] for p in predictions])
                         for k, (c, b) in enumerate(zip(stacker["coef"], stacker["intercept"]))], 1)
    logits = _features(task, predictions) @ np.asarray(stacker["coef"]).T + np.asarray(stacker["intercept"])
    if task == "multiclass":
        return special.softmax(logits, axis=1)
    return special.expit(logits[:, 0])


def _features(task, predictions):
    if task == "multiclass":
        return np.hstack([np.log(np.clip(p, EPS, 1)) for p in predictions])
    return np.column_stack([special.logit(np.clip(p, EPS, 1 - EPS)) for p in predictions])


def _multiclass(x, y, k, absent=-30.0):
    """A softmax over all k classes, though a fold's OOF may lack some: those get a logit of
    `absent`; with two classes present, sklearn's one logit becomes theirs."""
    present = np.unique(y)
    coef, intercept = np.zeros((k, x.shape[1])), np.full(k, absent)
    if len(present) == 1:
        intercept[present[0]] = 0.0
    else:
        found = _fit(x, np.searchsorted(present, y), binary=False)
        rows = np.asarray(found["coef"]), np.asarray(found["intercept"])
        if len(present) == 2:  # one logit: the second class's against the first's
            rows = np.vstack([np.zeros_like(rows[0]), rows[0]]), np.concatenate([[0.0], rows[1]])
        coef[present], intercept[present] = rows
    return {"coef": coef.tolist(), "intercept": intercept.tolist()}


def _fit(x, y, binary=True):
    if binary and len(np.unique(y)) < 2:  # one outcome only: a constant at its log-odds
        value = float(special.logit(np.clip(np.mean(y), EPS, 1 - EPS)))
        return {"coef": [[0.0] * x.shape[1]], "intercept": [value]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=1.0, max_iter=1000).fit(x, np.asarray(y).astype(int))
    return {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()}
