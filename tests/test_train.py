"""The schedule and the one-fold run, on a tiny competition with random-init backbones."""
import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from kit import KitError
from kit.backbones import BACKBONES
from kit.model import build_model
from kit.train import run_fold
from tests.helpers import write_competition

HEAD = {"name": "head", "trainable": "none", "epochs": 2, "lr": 1e-2, "patience": 0}


def _initial(spec, backbone, size):
    """The weights run_fold starts from: it seeds before building, so the same seed rebuilds them."""
    keras.utils.set_random_seed(spec.seed)
    return build_model(backbone, spec.task, 2, size, None, spec.dropout)


def _values(layer):
    return [keras.ops.convert_to_numpy(w).copy() for w in layer.weights]


def _trained(out):
    model = keras.saving.load_model(out / "model.keras")
    return model, model.get_layer("base").base


@pytest.mark.slow
def test_one_fold_writes_every_artefact(tiny):
    spec = tiny()
    out = run_fold(spec, "vgg16", 1)
    assert out == spec.runs_path / "vgg16" / "fold1"
    history = pd.read_csv(out / "history.csv")
    # the competition's metric is accuracy here: Keras' (argmax) accuracy is the same thing, kept once
    assert list(history.columns) == ["epoch", "phase", "lr", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == [1, 2] and history["phase"].tolist() == ["head", "finetune"]
    assert history["lr"].tolist() == pytest.approx([1e-3, 1e-4])
    folds = pd.read_csv(spec.runs_path / "folds.csv", dtype=str)
    oof, test = pd.read_csv(out / "oof.csv", dtype={"id": str}), pd.read_csv(out / "test.csv")
    assert oof["id"].tolist() == folds.loc[folds["fold"] == "1", "id"].tolist()
    assert list(oof.columns) == ["id", "a", "b"]
    assert test["id"].tolist() == [f"te{i:03d}" for i in range(8)]
    np.testing.assert_allclose(test[["a", "b"]].sum(1), 1, rtol=1e-5)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["backbone"], config["fold"], config["image_size"]) == ("vgg16", 1, 32)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    model, _ = _trained(out)  # the saved model takes raw RGB and reproduces the test predictions
    assert (out / "model.keras").stat().st_size < 1.05 * 4 * model.count_params()  # no optimizer state
    from kit.decode import read_rgb
    x = np.stack([read_rgb(p, 32) for p in sorted((spec.data_path / "test").iterdir())]).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), test[["a", "b"]].to_numpy(), atol=1e-5)


@pytest.mark.slow
def test_history_holds_the_competitions_metric_of_each_epochs_validation_predictions(tiny):
    """The best epoch's val_<metric> is the score of the OOF predictions (its weights, no TTA)."""
    from kit.metrics import spec_score

    spec = tiny(schedule=[{**HEAD, "epochs": 3, "lr": 3e-2}], task="binary", metric="log_loss")
    out = run_fold(spec, "vgg16", 0)
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["epoch", "phase", "lr", "loss", "binary_accuracy", "val_loss",
                                     "val_binary_accuracy", "val_log_loss"]
    oof = pd.read_csv(out / "oof.csv")
    y = (oof["id"].str[2:].astype(int) % 2).to_numpy()  # conftest labels images a, b, a, b, ...
    best = history.loc[history["val_loss"].idxmin()]
    assert best["val_log_loss"] == pytest.approx(spec_score(spec, y, oof["b"].to_numpy()), rel=1e-5)
    assert history["val_log_loss"].nunique() == 3  # a score per epoch, not one repeated


@pytest.mark.slow
def test_finished_fold_is_kept_unless_forced(tiny, capsys):
    spec = tiny(schedule=[{**HEAD, "epochs": 1}])
    out = run_fold(spec, "vgg16", 0)
    stamp = (out / "test.csv").stat().st_mtime_ns
    run_fold(spec, "vgg16", 0)
    assert "is finished: force=1 trains it again" in capsys.readouterr().out
    assert (out / "test.csv").stat().st_mtime_ns == stamp
    run_fold(spec, "vgg16", 0, force=True)
    assert (out / "test.csv").stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_a_forced_retrain_interrupted_leaves_no_finished_run_of_the_old_one(tiny, monkeypatch):
    from kit.train import Trainer

    spec = tiny(schedule=[{**HEAD, "epochs": 1}])
    out = run_fold(spec, "vgg16", 0)

    def interrupted(self, index, phase):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_phase", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_fold(spec, "vgg16", 0, force=True)
    assert not any((out / name).exists() for name in ("test.csv", "oof.csv", "model.keras"))
    assert (out / "log.txt").read_text().splitlines()[-1].startswith("interrupted (Ctrl-C): run again, it resumes")
    monkeypatch.undo()
    run_fold(spec, "vgg16", 0)  # not finished: it trains (resumes) without force
    assert (out / "test.csv").is_file()


@pytest.mark.slow
def test_same_seed_same_predictions(tiny, tmp_path):
    spec = tiny()
    first = pd.read_csv(run_fold(spec, "resnet50", 0) / "oof.csv")
    again = tiny(runs_dir=str(tmp_path / "again"))
    pd.testing.assert_frame_equal(first, pd.read_csv(run_fold(again, "resnet50", 0) / "oof.csv"))


@pytest.mark.slow
@pytest.mark.parametrize("keys", [{"feature_cache": True}, {"feature_cache": False},
                                  {"mixup": 0.4, "ema": 0.9}])  # mixing: end to end, not cached
def test_head_phase_leaves_the_base_bitwise_unchanged(tiny, keys):
    spec = tiny(schedule=[HEAD], **keys)
    model0, base0 = _initial(spec, "xception", 71)
    model, base = _trained(run_fold(spec, "xception", 0))
    for before, after in zip(_values(base0), _values(base)):
        np.testing.assert_array_equal(before, after)
    head0, head = _values(model0.get_layer("head")), _values(model.get_layer("head"))
    assert not np.array_equal(head0[0], head[0])


@pytest.mark.slow
def test_top_k_changes_only_its_blocks(tiny):
    spec = tiny(schedule=[{"name": "ft", "trainable": "top:1", "epochs": 2, "lr": 1e-3, "patience": 0}])
    _, base0 = _initial(spec, "vgg16", 32)
    _, base = _trained(run_fold(spec, "vgg16", 0))
    for layer0, layer in zip(base0.layers, base.layers):
        changed = any(not np.array_equal(a, b) for a, b in zip(_values(layer0), _values(layer)))
        assert changed == layer.name.startswith("block5_conv"), layer.name


@pytest.mark.slow
@pytest.mark.parametrize("phase, keys", [
    ({"trainable": "all", "epochs": 1}, {}),
    ({"trainable": "progressive", "epochs": 1, "max_blocks": 2, "lr_mult": 0.5}, {"cutmix": 1.0, "ema": 0.9}),
])
def test_batchnorm_statistics_never_move_while_gamma_and_beta_train(tiny, phase, keys):
    spec = tiny(schedule=[{"name": "all", "lr": 1e-3, "patience": 0, **phase}], batch_size=4, **keys)
    _, base0 = _initial(spec, "resnet50", 32)
    _, base = _trained(run_fold(spec, "resnet50", 0))
    norms = [(a, b) for a, b in zip(base0.layers, base.layers)
             if isinstance(b, keras.layers.BatchNormalization)]
    assert len(norms) == 53
    gammas_moved = 0
    for layer0, layer in norms:
        np.testing.assert_array_equal(_values(layer0)[2], _values(layer)[2])  # moving mean
        np.testing.assert_array_equal(_values(layer0)[3], _values(layer)[3])  # moving variance
        gammas_moved += not np.array_equal(_values(layer0)[0], _values(layer)[0])
    assert gammas_moved == len(norms) if phase["trainable"] == "all" else gammas_moved > 0


@pytest.mark.slow
def test_epochs_continue_across_phases_and_early_stopping_ends_a_phase(tiny):
    schedule = [{**HEAD, "epochs": 3, "lr": 1e-3},
                # A learning rate this high wrecks the model: early stopping ends the phase after
                # `patience` worse epochs, and the best (head) weights are what is saved.
                {"name": "wreck", "trainable": "all", "epochs": 6, "lr": 5.0, "patience": 1}]
    spec = tiny(schedule=schedule)
    out = run_fold(spec, "vgg16", 0)
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == list(range(1, len(history) + 1))
    assert history["phase"].tolist()[:3] == ["head"] * 3 and 3 < len(history) < 9
    best = history["val_loss"].min()
    wrecked = history.loc[history["phase"] == "wreck", "val_loss"]
    assert (wrecked.isna() | (wrecked > best)).all()  # diverged: worse, or NaN
    model, _ = _trained(out)
    from kit.cache import Images
    from kit.inputs import eval_batches
    from kit.model import compile_model
    compile_model(model, "multiclass", 1e-3, False)  # saved without its training state
    ids = pd.read_csv(out / "oof.csv", dtype=str)["id"]
    images = Images([str(spec.data_path / "train" / f"{i}.png") for i in ids], 32)
    y = np.array([int(i[2:]) % 2 for i in ids])  # conftest labels images a, b, a, b, ...
    loss = model.evaluate(eval_batches(images, np.arange(len(ids)), 8, y), verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(best, rel=1e-4)


@pytest.mark.slow
def test_warmup_and_cosine_shape_the_learning_rate(tiny):
    spec = tiny(schedule=[{**HEAD, "epochs": 4, "lr": 1e-3, "warmup": 1, "decay": "cosine"}])
    lr = pd.read_csv(run_fold(spec, "vgg16", 0) / "history.csv")["lr"].tolist()
    assert lr == pytest.approx([5e-4, 1e-3, 1e-3 * 0.75, 1e-3 * 0.25])


@pytest.mark.slow
def test_unreadable_and_missing_training_images_are_skipped_and_counted(tiny):
    spec = tiny(schedule=[{**HEAD, "epochs": 1}])
    (spec.data_path / "train" / "tr005.png").write_bytes(b"\x89PNG broken")
    (spec.data_path / "train" / "tr007.png").unlink()  # removed after the data was released
    out = run_fold(spec, "vgg16", 1)
    assert "skipped 2 unreadable training images" in (out / "log.txt").read_text()
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(skipped) == 2 and skipped["path"].str.endswith("tr005.png").any()
    assert skipped.loc[skipped["path"].str.contains("tr007"), "reason"].item() == "the file is missing"
    assert not {"tr005", "tr007"} & set(pd.read_csv(out / "oof.csv")["id"])


def test_an_unreadable_test_image_is_an_error_naming_it(tiny):
    spec = tiny(schedule=[{**HEAD, "epochs": 1}])
    (spec.data_path / "test" / "te003.png").write_bytes(b"nothing")
    with pytest.raises(KitError, match="1 test images cannot be read .*te003.png"):
        run_fold(spec, "vgg16", 0)


def test_a_sample_submission_of_other_classes_stops_before_any_training(tiny):
    spec = tiny(schedule=[{**HEAD, "epochs": 1}])
    sample = pd.read_csv(spec.data_path / "sample_submission.csv")
    sample.assign(c=0.5).to_csv(spec.data_path / "sample_submission.csv", index=False)
    with pytest.raises(KitError, match=r"columns \('a', 'b', 'c'\) are not the classes \('a', 'b'\); no "
                                       r"training image is labelled 'c'"):
        run_fold(spec, "vgg16", 0)
    assert not {"config.yaml", "history.csv", "log.txt"} & {p.name for p in (spec.runs_path / "vgg16" / "fold0").iterdir()}


def test_accumulate_on_several_devices_is_one_line_before_any_training(tiny):
    spec = tiny(strategy="mirrored", accumulate=2, schedule=[{**HEAD, "epochs": 1}])
    with pytest.raises(KitError, match="accumulate with several devices \\(MirroredStrategy\\): .*strategy=default"):
        run_fold(spec, "vgg16", 0)
    assert not (spec.runs_path / "vgg16" / "fold0" / "history.csv").exists()


def test_fold_out_of_range_and_unknown_backbone(tiny):
    with pytest.raises(KitError, match="fold 2 is out of range: n_folds is 2"):
        run_fold(tiny(), "vgg16", 2)
    with pytest.raises(KitError, match="unknown backbone 'vgg61'"):
        run_fold(tiny(), "vgg61", 0)


@pytest.mark.slow
def test_image_size_never_goes_below_the_backbones_minimum(tiny):
    spec = tiny(schedule=[{**HEAD, "epochs": 1}], image_size=32)
    config = yaml.safe_load((run_fold(spec, "xception", 0) / "config.yaml").read_text())
    assert config["image_size"] == BACKBONES["xception"].min_size == 71


@pytest.mark.slow
def test_multilabel_and_binary_tasks_train(tmp_path, tiny):
    spec = tiny(schedule=[{**HEAD, "epochs": 1}], task="binary", metric="log_loss")
    assert list(pd.read_csv(run_fold(spec, "vgg16", 0) / "test.csv").columns) == ["id", "b"]
    root = tmp_path / "ml"
    write_competition(root, classes=("a", "b", "c"))
    train = pd.read_csv(root / "train.csv")
    train.assign(label=["a b", "c", "b c"] * 8).to_csv(root / "train.csv", index=False)
    spec = tiny(schedule=[{**HEAD, "epochs": 1}], task="multilabel", metric="f2", data_dir=str(root),
                runs_dir=str(tmp_path / "mlruns"))
    test = pd.read_csv(run_fold(spec, "vgg16", 0) / "test.csv")
    assert list(test.columns) == ["id", "a", "b", "c"] and not np.allclose(test[["a", "b", "c"]].sum(1), 1)


@pytest.mark.slow
def test_a_new_backbone_is_one_registry_entry(tiny, monkeypatch):
    """The README's example entry, and nothing else, adds EfficientNetB0."""
    from kit.backbones import Backbone

    entry = Backbone("EfficientNetB0", "none", 224, 32,
                     ("block1", "block2", "block3", "block4", "block5", "block6", "block7", "top_"),
                     "efficientnetb0_notop.h5")
    monkeypatch.setitem(BACKBONES, "efficientnetb0", entry)
    spec = tiny(backbones=["efficientnetb0"], schedule=[
        {"name": "ft", "trainable": "top:2", "epochs": 1, "lr": 1e-3, "patience": 0}])
    _, base0 = _initial(spec, "efficientnetb0", 32)
    _, base = _trained(run_fold(spec, "efficientnetb0", 0))
    changed = {layer.name for layer0, layer in zip(base0.layers, base.layers)
               if any(not np.array_equal(a, b) for a, b in zip(_values(layer0), _values(layer)))}
    assert changed and all(name.startswith(("block7", "top_")) for name in changed)


def _progressive(**keys):
    return [{**HEAD, "epochs": 2}, {"name": "finetune", "trainable": "progressive", "epochs": 2, "patience": 0,
                                    "round_lr": 0.5, **keys}]


def _rounds(history):
    """(blocks open, its val_losses, the best val_loss before it) of each progressive round."""
    for k, rows in history[history["phase"] != "head"].groupby("phase", sort=False):
        yield int(k.removeprefix("finetune-top")), rows, history.loc[:rows.index[0] - 1, "val_loss"].min()


@pytest.mark.slow
@pytest.mark.parametrize("lr, max_blocks, opened", [(1e-4, 3, 3), (3e-3, 0, 1)])
def test_progressive_opens_a_block_per_round_until_a_round_does_not_beat_the_best(tiny, lr, max_blocks, opened):
    """Rounds top:1, top:2, ... each at round_lr x the previous rate, epochs continuing; a round
    follows only if the one before beat the best val_loss before it; max_blocks caps them."""
    out = run_fold(tiny(schedule=_progressive(lr=lr, max_blocks=max_blocks), batch_size=4), "vgg16", 0)
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == list(range(1, len(history) + 1))
    rounds = list(_rounds(history))
    assert [k for k, _, _ in rounds] == list(range(1, opened + 1))
    for k, rows, before in rounds:
        assert rows["lr"].tolist() == pytest.approx([lr * 0.5 ** (k - 1)] * 2)
        beaten = rows["val_loss"].min() < before
        assert beaten == (k < opened or k == max_blocks)  # the last round: the cap, or it did not beat
    log = (out / "log.txt").read_text()
    assert ("did not beat val_loss" in log) == (opened != max_blocks)
    kept = float(log.split("best val_loss ")[-1].split(")")[0])  # the weights saved: the schedule's best
    assert kept == pytest.approx(history["val_loss"].min(), abs=1e-5)
