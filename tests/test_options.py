"""The training options winners use: each one reaches training, and does what it says (a test
here fails if an option is silently ignored)."""
import keras
import numpy as np
import pandas as pd
import pytest

from kit.backbones import BACKBONES
from kit.callbacks import AverageWeights
from kit.model import Objective, build_model, compile_model, training_loss
from kit.pretrained import block_factors, set_trainable
from kit.train import run_fold

P = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
Y = np.array([[1, 0, 0], [0, 1, 0]], np.float32)


def _loss(task, objective, y, p):
    return float(training_loss(task, objective)[0](y, p))


def test_label_smoothing_pulls_the_targets_toward_uniform_as_computed_by_hand():
    smoothed = Y * 0.9 + 0.1 / 3
    by_hand = -(smoothed * np.log(P)).sum(1).mean()
    assert _loss("multiclass", Objective(label_smoothing=0.1), Y, P) == pytest.approx(by_hand, rel=1e-5)
    assert _loss("multiclass", Objective(), Y.argmax(1), P) == pytest.approx(-np.log([0.7, 0.3]).mean(), rel=1e-5)
    yb, pb = np.array([[1.0], [0.0]]), np.array([[0.8], [0.4]], np.float32)
    t = yb * 0.8 + 0.1
    by_hand = -(t * np.log(pb) + (1 - t) * np.log(1 - pb)).mean()
    assert _loss("binary", Objective(label_smoothing=0.2), yb, pb) == pytest.approx(by_hand, rel=1e-5)


def test_focal_loss_down_weights_the_easy_examples_as_computed_by_hand():
    pt = (Y * P).sum(1)  # gamma 2: (1 - p_t)^2 x cross-entropy
    by_hand = ((1 - pt) ** 2 * -np.log(pt)).mean()
    assert _loss("multiclass", Objective(loss="focal"), Y, P) == pytest.approx(by_hand, rel=1e-5)
    yb, pb = np.array([[1.0], [0.0]]), np.array([[0.8], [0.4]], np.float32)
    pt = np.where(yb == 1, pb, 1 - pb)
    assert _loss("binary", Objective(loss="focal"), yb, pb) == pytest.approx(
        ((1 - pt) ** 2 * -np.log(pt)).mean(), rel=1e-5)


def test_balanced_class_weights_are_n_over_classes_times_count():
    from kit.train import balanced_weights

    assert balanced_weights([0] * 18 + [1] * 6, 2) == pytest.approx({0: 24 / 36, 1: 24 / 12})
    assert balanced_weights([0, 0, 2, 2], 3) == pytest.approx({0: 4 / 6, 1: 4 / 3, 2: 4 / 6})  # 1 absent


def _step(objective, trainable="top:2", batches=1):
    """A vgg16 at 32 px, compiled with `objective`: (weights before, weights after `batches` steps)."""
    keras.utils.set_random_seed(0)
    model, base = build_model("vgg16", "binary", 2, 32, None, 0.0)
    set_trainable(base, BACKBONES["vgg16"].blocks, trainable)
    compile_model(model, "binary", 1e-3, False, objective=objective)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in base.weights}
    history = []
    for _ in range(batches):
        model.train_on_batch(x, np.array([0, 1, 0, 1], "float32"))
        history.append({v.path: keras.ops.convert_to_numpy(v).copy() for v in base.weights})
    return model, base, before, history


def test_layerwise_rates_move_a_lower_block_less_than_a_higher_one_by_the_factor():
    _, base, before, (plain,) = _step(Objective())
    factors = block_factors(base, BACKBONES["vgg16"].blocks, "top:2", 0.1)
    _, _, _, (layerwise,) = _step(Objective(lr_factors=factors))
    ratio = {path: np.abs(layerwise[path] - before[path]).max() / np.abs(plain[path] - before[path]).max()
             for path in ("block5_conv3/kernel", "block4_conv3/kernel", "block4_conv1/bias")}
    assert ratio["block5_conv3/kernel"] == pytest.approx(1, rel=0.05)  # the top block: the phase's rate
    assert ratio["block4_conv3/kernel"] == pytest.approx(0.1, rel=0.05)  # one block down: x lr_mult
    assert ratio["block4_conv1/bias"] == pytest.approx(0.1, rel=0.05)
    assert factors["block5_conv1/kernel"] == 1 and "block3_conv1/kernel" not in factors
    assert np.array_equal(layerwise["block3_conv1/kernel"], before["block3_conv1/kernel"])
    every = block_factors(base, BACKBONES["vgg16"].blocks, "all", 0.5)
    assert every["block1_conv1/kernel"] == pytest.approx(0.5 ** 4) and len(every) == len(base.weights)


def test_gradient_accumulation_steps_every_k_batches():
    _, _, before, (one, two) = _step(Objective(accumulate=2), batches=2)
    assert all(np.array_equal(before[p], one[p]) for p in before)  # first batch: gradients kept
    assert not np.array_equal(before["block5_conv3/kernel"], two["block5_conv3/kernel"])


def test_the_average_of_the_weights_is_what_each_epoch_ends_with_and_training_goes_on_from_the_raw_ones():
    def fit(callbacks):
        keras.utils.set_random_seed(0)
        model, base = build_model("vgg16", "binary", 2, 32, None, 0.0)
        set_trainable(base, BACKBONES["vgg16"].blocks, "top:1")
        compile_model(model, "binary", 1e-2, False, objective=Objective(ema=0.5))
        x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
        seen = []
        record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
            [keras.ops.convert_to_numpy(v).copy() for v in model.optimizer._trainable_variables]))
        model.fit(x, np.arange(8) % 2, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[*callbacks, record])
        averages = [keras.ops.convert_to_numpy(v) for v in model.optimizer._model_variables_moving_average]
        return seen, averages

    swapped, raw_at_end = fit([AverageWeights()])
    plain, average_at_end = fit([])
    # at each epoch's end the model holds the average, not the raw weights; and the raw ones go
    # on training as if nothing had been swapped (the last epoch's raw weights are the same)
    assert not all(np.allclose(a, b) for a, b in zip(swapped[-1], plain[-1]))
    for a, b in zip(raw_at_end, plain[-1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(swapped[-1], average_at_end):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_each_option_reaches_training(tiny, tmp_path):
    """Same seed, same folds: each option changes what a fold learns (history), none is ignored.
    A quarter of the images are b: balanced class weights are not all 1."""
    labels = pd.read_csv(tmp_path / "data" / "train.csv")
    labels.assign(label=["b" if i % 4 == 1 else "a" for i in range(len(labels))]).to_csv(
        tmp_path / "data" / "train.csv", index=False)
    head = [{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-2, "patience": 0},
            {"name": "finetune", "trainable": "top:2", "epochs": 1, "lr": 1e-3, "patience": 0, "lr_mult": 0.5}]

    def history(**keys):
        spec = tiny(schedule=head, runs_dir=str(tmp_path / f"runs-{'-'.join(keys) or 'plain'}"), **keys)
        return pd.read_csv(run_fold(spec, "vgg16", 0) / "history.csv")

    plain = history()
    for keys in ({"loss": "focal"}, {"label_smoothing": 0.2}, {"class_weight": "balanced"}, {"ema": 0.5},
                 {"accumulate": 2}, {"mixup": 0.4}, {"cutmix": 1.0}):
        other = history(**keys)
        assert not np.allclose(other["loss"], plain["loss"]) or not np.allclose(
            other["val_loss"], plain["val_loss"]), keys


@pytest.mark.slow
def test_the_lr_finder_sweeps_exponentially_suggests_a_rate_and_changes_no_run(tiny):
    from kit import KitError
    from kit.lrfind import lr_find

    spec = tiny(batch_size=4)
    run = run_fold(spec, "vgg16", 0)  # the finetune phase starts from its trained head
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    lr = lr_find(spec, "vgg16", "finetune", steps=40)
    sweep = pd.read_csv(spec.runs_path / "vgg16" / "lr-find-finetune.csv")
    assert 10 <= len(sweep) <= 40 and sweep["lr"].iloc[0] == pytest.approx(1e-7)
    ratios = sweep["lr"].iloc[1:].to_numpy() / sweep["lr"].iloc[:-1].to_numpy()
    np.testing.assert_allclose(ratios, (1e7) ** (1 / 39), rtol=1e-6)  # 1e-7 to 1 over 40 batches
    assert sweep["lr"].min() <= lr <= sweep["lr"].max()
    assert lr < sweep["lr"].iloc[int(sweep["smoothed"].idxmin())] * 1.0001  # before the lowest loss
    assert (spec.runs_path / "vgg16" / "lr-find-finetune.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    with pytest.raises(KitError, match="lr-find: no phase 'fine' in the schedule \\(phases: head, finetune\\)"):
        lr_find(spec, "vgg16", "fine")


def test_suggestion_is_the_steepest_fall_before_the_lowest_loss():
    from kit.lrfind import suggestion

    lrs = list(np.logspace(-6, 0, 7))
    assert suggestion(lrs, [5, 4.9, 4.0, 2.0, 1.8, 3.0, 9.0]) == pytest.approx(lrs[2])
    assert suggestion(lrs, [1.0, 0.5, 0.6, 0.9, 2.0, 3.0, 9.0]) is None  # never fell after the noise


@pytest.mark.parametrize("mix, alpha", [("mixup", 0.4), ("cutmix", 1.0)])
def test_a_mixed_training_batch_is_a_convex_mix_of_two_labelled_images_and_prediction_is_not_mixed(
        mix, alpha, monkeypatch):
    """Images of one flat value each, one class each: a mixed image's pixels are the label's
    weights over those values (MixUp: blended; CutMix: a box of the other, weights by area)."""
    keras.utils.set_random_seed(0)
    model, _ = build_model("vgg16", "multiclass", 4, 32, None, 0.0, mix=(mix, alpha, 0))
    compile_model(model, "multiclass", 1e-3, False, objective=Objective(mixing=True))
    model.run_eagerly = True  # to look at the batch the step trains on
    values = np.array([0.0, 60.0, 120.0, 240.0], np.float32)
    x = np.broadcast_to(values[:, None, None, None], (4, 32, 32, 3)).copy()
    y = np.eye(4, dtype=np.float32)
    seen = []
    original = keras.Model.train_step
    monkeypatch.setattr(keras.Model, "train_step", lambda self, data: seen.append(data) or original(self, data))
    model.train_on_batch(x, y)
    images, labels = (keras.ops.convert_to_numpy(t) for t in seen[0][:2])
    assert not np.array_equal(images, x) and np.allclose(labels.sum(1), 1)
    assert ((labels > 1e-6).sum(1) <= 2).all()  # two images at most
    for image, weights in zip(images, labels):
        if mix == "mixup":
            np.testing.assert_allclose(image, weights @ values, rtol=1e-4, atol=1e-3)
        else:
            shares = [(np.isclose(image, v, atol=1e-3)).mean() for v in values]
            np.testing.assert_allclose(shares, weights, atol=0.02)
    plain = keras.Model.from_config(model.get_config())
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-6)
