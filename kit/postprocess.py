"""Post-processing fitted on out-of-fold predictions: the decision the competition's metric
rewards, learnt from the OOF and applied to the test predictions.

    metric              task                  what is fitted
    log_loss            any                   a temperature on the logits, and the clip
    accuracy, f1_*, qwk binary                the decision threshold
    accuracy, f1_*      multiclass            a bias per class, added to the log-probabilities
    accuracy, f1_*, f2  multilabel            a threshold per class (at least min_labels, at
                                              most max_labels per image, when the spec says)
    qwk                 multiclass (ordinal)  cut points on the expected grade (optimised rounding)
    roc_auc             any                   none: a ranking metric is blind to monotone changes

`decide` turns probabilities into what is submitted: probabilities for log loss, labels (the
kit's convention) for the hard metrics. `honest` scores a fit on folds it never saw.
"""
import numpy as np
from scipy import optimize, special

from kit import KitError
from kit.metrics import METRICS, hard_labels, postprocess, score_decisions

EPS = 1e-7


def kind(spec):
    """The post-processing the spec's metric and task call for, or None."""
    if spec.metric == "roc_auc":
        return None
    if spec.metric == "log_loss":
        return "temperature"
    if spec.task == "binary":
        return "threshold"
    if spec.task == "multilabel":
        return "thresholds"
    return "cuts" if spec.metric == "qwk" else "bias"


def check(spec):
    if spec.postprocess == "on" and kind(spec) is None:
        raise KitError(f"postprocess: on, but {spec.metric} has no post-processing (a ranking metric is "
                       f"blind to monotone changes): use auto or off")


def decide(spec, params, p):
    """What is submitted for probabilities `p`: with fitted `params`, or as the spec says (None)."""
    if params is None and spec.task == "multilabel" and METRICS[spec.metric].hard:
        return _labels(p, np.full(p.shape[1], spec.threshold), spec.min_labels, spec.max_labels)
    if params is None:  # as the spec says: clipped (log loss), thresholded or argmaxed (hard)
        hard = METRICS[spec.metric].hard
        return hard_labels(spec.task, p, spec.threshold) if hard else postprocess(spec, p)
    if spec.metric == "log_loss":
        return _clip(spec, _temper(spec, p, params["temperature"]), params["clip"])
    if "threshold" in params:
        return (p >= params["threshold"]).astype(int)
    if "bias" in params:
        return (np.log(np.clip(p, EPS, 1)) + params["bias"]).argmax(1)
    if "cuts" in params:
        return np.searchsorted(np.sort(params["cuts"]), p @ np.arange(p.shape[1]))
    return _labels(p, np.asarray(params["thresholds"]), spec.min_labels, spec.max_labels)


def fit(spec, y, p):
    """The parameters of the spec's post-processing that score best on (y, p)."""
    how = kind(spec)
    score = lambda params: _signed(spec, y, decide(spec, params, p))
    if how == "temperature":
        t = optimize.minimize_scalar(lambda t: -score({"temperature": t, "clip": EPS}), bounds=(0.05, 20),
                                     method="bounded", options={"xatol": 1e-4}).x
        clips = sorted({spec.clip, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.025, 0.05} - {0})
        clip = max(clips, key=lambda c: score({"temperature": t, "clip": c}))
        return {"temperature": float(t), "clip": clip}
    if how == "threshold":
        return {"threshold": _best(lambda t: score({"threshold": t}), _candidates(p), spec.threshold)}
    if how == "cuts":
        start = np.arange(p.shape[1] - 1) + 0.5
        found = optimize.minimize(lambda c: -score({"cuts": c}), start, method="Nelder-Mead",
                                  options={"xatol": 1e-3, "maxiter": 400 * len(start)}).x
        return {"cuts": sorted(float(c) for c in found)}
    key, start = ("bias", 0.0) if how == "bias" else ("thresholds", spec.threshold)
    values = np.full(p.shape[1], start)
    grid = np.linspace(-3, 3, 25) if how == "bias" else None
    for _ in range(2):  # coordinate ascent: one class at a time, twice over
        for k in range(p.shape[1]):
            def trial(v, k=k):
                return score({key: np.concatenate([values[:k], [v], values[k + 1:]])})
            values[k] = _best(trial, grid if grid is not None else _candidates(p[:, k], 33), values[k])
    return {key: [float(v) for v in values]}


def honest(spec, y, p, folds, params_of=fit):
    """Decisions for every row made with parameters fitted on the other folds' rows only."""
    out = None
    for k in np.unique(folds):
        held = folds == k
        d = decide(spec, params_of(spec, y[~held], p[~held]), p[held])
        if out is None:
            out = np.empty((len(p), *d.shape[1:]), d.dtype)
        out[held] = d
    return out


def _signed(spec, y, decisions):
    value = score_decisions(spec.metric, y, decisions)
    return value if METRICS[spec.metric].higher_is_better else -value


def _best(score, candidates, default):
    """The candidate scoring best; among equals, the one nearest `default` (no move on a tie)."""
    scored = [(score(c), -abs(c - default), c) for c in [default, *candidates]]
    return float(max(scored)[2])


def _candidates(p, n=99):
    """Thresholds worth trying: between the predictions' quantiles."""
    return np.unique(np.quantile(np.asarray(p).ravel(), np.linspace(0.005, 0.995, n)))


def _temper(spec, p, t):
    if spec.task == "multiclass":
        return special.softmax(np.log(np.clip(p, EPS, 1)) / t, axis=1)
    p = np.clip(p, EPS, 1 - EPS)
    return special.expit(special.logit(p) / t)


def _clip(spec, p, clip):
    p = np.clip(p, clip, 1 - clip)
    return p / p.sum(1, keepdims=True) if spec.task == "multiclass" else p


def _labels(p, thresholds, least, most):
    """Multilabel labels: each class above its threshold; the top `least` at least, the top
    `most` at most (0: no bound)."""
    chosen = p >= thresholds
    order = np.argsort(-p, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(p.shape[1])[None].repeat(len(p), 0), axis=1)
    if least:
        chosen |= rank < least
    if most:
        chosen &= rank < most
    return chosen.astype(int)
