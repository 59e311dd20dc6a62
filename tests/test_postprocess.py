"""Post-processing and stacking fitted on OOF predictions, on predictions built so that the right
answer is known; and their honest CV (fitted on other folds) on pure noise."""
import dataclasses

import numpy as np
import pytest

from kit import KitError, postprocess, stack
from kit.checks import validate
from kit.config import Spec
from kit.metrics import score, score_decisions

rng = np.random.default_rng(0)


def _spec(**keys):
    return dataclasses.replace(Spec("t", weights=None), **keys)


def _folds(n, k=5):
    return np.arange(n) % k


def test_a_fitted_threshold_recovers_the_planted_one():
    p = rng.random(2000)
    y = (p >= 0.3).astype(int)  # every image above 0.3 is positive: accuracy 1 at that threshold only
    spec = _spec(task="binary", metric="accuracy")
    params = postprocess.fit(spec, y, p)
    assert params["threshold"] == pytest.approx(0.3, abs=0.01)
    assert score("accuracy", y, p, 0.5) < 0.85
    assert score_decisions("accuracy", y, postprocess.honest(spec, y, p, _folds(len(y)))) > 0.99


def test_cut_points_on_the_expected_grade_beat_argmax_on_an_ordinal_scale():
    """Probabilities pulled towards the middle grade (as a softmax over an ordinal scale often
    is): argmax rarely says 0 or 4, the expected grade still orders the images."""
    truth = rng.integers(0, 5, 3000)
    centre = 2 + 0.45 * (truth - 2) + rng.normal(0, 0.3, len(truth))
    p = np.exp(-((np.arange(5)[None] - centre[:, None]) ** 2) / 1.5)
    p /= p.sum(1, keepdims=True)
    spec = _spec(task="multiclass", metric="qwk")
    argmax = score("qwk", truth, p)
    honest = score_decisions("qwk", truth, postprocess.honest(spec, truth, p, _folds(len(truth))))
    assert honest > argmax + 0.05
    assert postprocess.kind(spec) == "cuts" and len(postprocess.fit(spec, truth, p)["cuts"]) == 4


@pytest.mark.parametrize("task, metric, kind", [("binary", "f1_macro", "threshold"),
                                                ("multiclass", "f1_macro", "bias"),
                                                ("multiclass", "accuracy", "bias")])
def test_post_processing_fitted_on_noise_flatters_in_sample_and_not_honestly(task, metric, kind):
    """Balanced classes and predictions that know nothing: no decision rule beats the spec's."""
    n, k = 2000, 4
    y = rng.integers(0, 2, n) if task == "binary" else rng.integers(0, k, n)
    p = rng.random(n) if task == "binary" else rng.dirichlet(np.ones(k), n)
    spec = _spec(task=task, metric=metric)
    assert postprocess.kind(spec) == kind
    plain = score_decisions(metric, y, postprocess.decide(spec, None, p))
    in_sample = score_decisions(metric, y, postprocess.decide(spec, postprocess.fit(spec, y, p), p))
    honest = score_decisions(metric, y, postprocess.honest(spec, y, p, _folds(n)))
    assert in_sample > plain  # fitted and scored on the same predictions, noise looks like skill
    assert honest < in_sample and honest < plain + 0.01  # scored on folds it never saw, it does not


def test_one_threshold_per_class_recovers_each_planted_one():
    p = rng.random((3000, 3))
    planted = np.array([0.2, 0.5, 0.7])
    y = (p >= planted).astype(int)
    params = postprocess.fit(_spec(task="multilabel", metric="f1_micro"), y, p)
    np.testing.assert_allclose(params["thresholds"], planted, atol=0.03)


def test_temperature_calms_overconfident_probabilities():
    truth = rng.integers(0, 3, 2000)
    logits = rng.normal(0, 1, (2000, 3))
    logits[np.arange(2000), truth] += 1.0
    p = np.exp(4 * logits)  # four times too sharp
    p /= p.sum(1, keepdims=True)
    spec = _spec(task="multiclass", metric="log_loss")
    params = postprocess.fit(spec, truth, p)
    assert params["temperature"] == pytest.approx(4, rel=0.25)
    honest = score_decisions("log_loss", truth, postprocess.honest(spec, truth, p, _folds(2000)))
    assert honest < score("log_loss", truth, postprocess.decide(spec, None, p)) - 0.3


def test_multilabel_bounds_hold_without_fitted_thresholds_too():
    spec = _spec(task="multilabel", metric="f2", min_labels=1)
    labels = postprocess.decide(spec, None, rng.random((20, 4)) * 0.4)  # nothing reaches the 0.5 threshold
    assert (labels.sum(1) == 1).all()


def test_multilabel_thresholds_keep_at_least_and_at_most_the_labels_asked_for():
    p = rng.random((50, 6)) * 0.4  # nothing reaches 0.5
    spec = _spec(task="multilabel", metric="f2", min_labels=1, max_labels=2)
    labels = postprocess.decide(spec, {"thresholds": [0.1] * 6}, p)
    assert (1 <= labels.sum(1)).all() and (labels.sum(1) <= 2).all()
    top = p.argmax(1)
    assert labels[np.arange(50), top].all()  # the most probable label is always kept


def test_the_stacker_learns_to_ignore_a_member_that_is_noise():
    y = rng.integers(0, 2, 2000)
    good = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.2, 2000), 0.01, 0.99)
    noise = rng.random(2000)
    stacker = stack.fit("binary", [good, noise], y)
    coef = np.asarray(stacker["coef"])[0]
    assert abs(coef[1]) < 0.05 * abs(coef[0])
    p = stack.apply("binary", stacker, [good, noise])
    assert score("roc_auc", y, p) == pytest.approx(score("roc_auc", y, good), abs=0.01)
    multi = stack.fit("multiclass", [np.eye(3)[np.arange(30) % 3] * 0.8 + 0.1] * 2, np.arange(30) % 3)
    assert np.asarray(multi["coef"]).shape == (3, 6)


def test_what_has_no_post_processing_says_so():
    with pytest.raises(KitError, match="postprocess: on, but roc_auc has no post-processing"):
        validate(_spec(task="binary", metric="roc_auc", postprocess="on"))
    with pytest.raises(KitError, match="max_labels: 1 is below min_labels 2"):
        validate(_spec(task="multilabel", metric="f2", min_labels=2, max_labels=1))


@pytest.mark.parametrize("y, p, classes, why", [
    (np.zeros(6), rng.random(6), ["a", "b"], "hold no 'b'"),  # binary: no positive
    (np.array([0, 0, 1, 1]), rng.dirichlet(np.ones(3), 4), ["a", "b", "c"], "hold no 'c'"),
    (np.array([[0, 1], [1, 1], [0, 1]]), rng.random((3, 2)), ["x", "y"], "all hold 'y'"),  # multilabel
])
def test_roc_auc_of_images_lacking_a_class_is_undefined_says_why_and_sklearn_says_nothing(y, p, classes, why):
    """A fold's validation images without a positive (n_folds above a class's count): sklearn
    warns (1.6+) or raises (before); the kit scores NaN quietly and says why in one line."""
    import warnings

    from kit.metrics import undefined

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(score("roc_auc", y, p))
    assert undefined("roc_auc", y, classes) == why
    assert undefined("roc_auc", np.arange(4) % 2, ["a", "b"]) == "" and undefined("log_loss", y, classes) == ""
