"""A fold killed mid-training resumes from its last finished epoch, optimizer state and all."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from unittest import mock

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from kit import KitError
from kit.backbones import BACKBONES
from kit.checkpoint import Checkpoint, RunState
from kit.model import build_model, compile_model
from kit.pretrained import set_trainable
from tests.helpers import ROOT, spec_file, write_competition

SCHEDULE = [{"name": "head", "trainable": "none", "epochs": 4, "lr": 1e-3, "patience": 0},
            # plateau decay keeps counters too (patience // 2 = 1 epoch): they must survive the kill
            {"name": "finetune", "trainable": "top:1", "epochs": 5, "lr": 3e-2, "patience": 3, "decay": "plateau"}]


def test_a_checkpoint_restores_weights_and_optimizer_state(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    y = np.arange(8).reshape(-1, 1) % 2
    model, _ = build_model("vgg16", "binary", 2, 32, None, 0.0)
    compile_model(model, "binary", 1e-3, False)
    model.fit(x, y, epochs=1, verbose=0)  # one step: the optimizer has state to restore
    checkpoint, state = Checkpoint(tmp_path / "checkpoint"), RunState(epoch=1)
    checkpoint.save(state, model, best=True)
    checkpoint.wait()
    again, base = build_model("vgg16", "binary", 2, 32, None, 0.0)
    compile_model(again, "binary", 1e-3, False)
    loaded = checkpoint.load()
    checkpoint.restore(again, loaded)
    assert loaded.model_file == loaded.best_file == "epoch1.npy" and int(again.optimizer.iterations) == 1
    for a, b in zip(model.optimizer.variables + model.weights, again.optimizer.variables + again.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert [p.name for p in sorted((tmp_path / "checkpoint").iterdir())] == ["epoch1.npy", "state.json"]
    for a, b in zip(checkpoint.best_weights(loaded), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    set_trainable(base, BACKBONES["vgg16"].blocks, "top:1")  # another trainable set: other optimizer slots
    compile_model(again, "binary", 1e-3, False)
    with pytest.raises(KitError, match="checkpoint holds the training state of another model or trainable set"):
        checkpoint.restore(again, loaded)


def _train(root, spec):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "kit", "train", f"competition={spec}", "backbone=vgg16"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(process, run, rows):
    """Kill the run once its history shows `rows` epochs; what it left: (history, checkpoint state).
    The checkpoint may be an epoch ahead of history.csv, written after it."""
    while process.poll() is None:
        if (run / "history.csv").is_file() and len(pd.read_csv(run / "history.csv")) >= rows:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return pd.read_csv(run / "history.csv"), json.loads((run / "checkpoint" / "state.json").read_text())
        time.sleep(0.05)
    raise AssertionError(f"the run ended before it was killed: {process.stderr.read()[-2000:]}")


@pytest.mark.slow
def test_killed_twice_it_resumes_and_ends_byte_for_byte_as_an_uninterrupted_run(tmp_path):
    """Weights, optimizer (step count, learning rate), dropout's random state and the schedule's
    counters are restored: the same history, model and predictions as a run never killed."""
    write_competition(tmp_path / "data")
    spec = spec_file(tmp_path, schedule=SCHEDULE, batch_size=4)
    run = tmp_path / "runs" / "tiny" / "vgg16" / "fold0"
    seen, states = zip(*[_kill_after(_train(tmp_path, spec), run, rows) for rows in (2, 6)])
    assert (run / "checkpoint" / "state.json").is_file() and not (run / "test.csv").exists()
    finished = _train(tmp_path, spec)
    out, err = finished.communicate(timeout=600)
    assert finished.returncode == 0, err[-3000:]
    assert "NodeDef mentions attribute" not in err and "retracing" not in err  # TensorFlow's noise stays out
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 10))
    assert history["phase"].tolist() == ["head"] * 4 + ["finetune"] * 5
    for before in seen:  # finished epochs are kept, not trained again
        pd.testing.assert_frame_equal(history.iloc[:len(before)], before)
    log = (run / "log.txt").read_text()
    assert log.count("tiny / vgg16 / fold 0") == 3  # the log of all three attempts
    for before, state in zip(seen, states):
        assert state["epoch"] in (len(before), len(before) + 1)
        phase = SCHEDULE[state["phase"]]["name"]
        assert f"resuming after epoch {state['epoch']} (phase {phase})" in log
    assert (run / "test.csv").is_file() and not (run / "checkpoint").exists()
    (tmp_path / "again").mkdir()
    uninterrupted = spec_file(tmp_path / "again", schedule=SCHEDULE, batch_size=4, data_dir=str(tmp_path / "data"))
    result = _train(tmp_path, uninterrupted)
    assert result.wait(timeout=600) == 0
    again = tmp_path / "again" / "runs" / "tiny" / "vgg16" / "fold0"
    pd.testing.assert_frame_equal(history, pd.read_csv(again / "history.csv"))
    assert history["lr"].nunique() > 2  # the plateau decay did cut the learning rate
    for name in ("oof.csv", "test.csv"):
        assert (run / name).read_bytes() == (again / name).read_bytes()
    assert "up to 3 epochs (of 5: resumed)" in log or "up to 2 epochs (of 5: resumed)" in log


def test_a_checkpoint_that_cannot_be_written_stops_training(tmp_path):
    model, _ = build_model("vgg16", "binary", 2, 32, None, 0.0)
    compile_model(model, "binary", 1e-3, False)
    (tmp_path / "checkpoint").write_text("a file where the folder should be")
    checkpoint = Checkpoint(tmp_path / "checkpoint")
    checkpoint.save(RunState(epoch=1), model, best=True)  # the write fails in its thread ...
    with pytest.raises(OSError):
        checkpoint.wait()  # ... and training hears of it at its next step
    checkpoint.wait()  # once


@pytest.mark.slow
def test_a_second_process_on_a_fold_being_trained_skips_it(tmp_path):
    """This test's process holds the run as a training process does; `kit train` in another
    process on the same fold leaves it alone and goes on, and trains it once it is free."""
    from kit.runs import Run

    write_competition(tmp_path / "data")
    spec = spec_file(tmp_path, schedule=SCHEDULE[:1], batch_size=4)
    run = tmp_path / "runs" / "tiny" / "vgg16" / "fold0"
    with Run(run).claim() as mine:
        assert mine
        out, err = _train(tmp_path, spec).communicate(timeout=600)
        assert f"{run} is being trained by another process: skipped" in out, err[-2000:]
        assert not (run / "history.csv").exists() and not (run / "checkpoint").exists()
    busy = _train(tmp_path, spec)
    assert busy.wait(timeout=600) == 0 and "skipped" not in busy.stdout.read()
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_finished_run_is_kept_only_while_its_data_and_settings_are_those_it_was_trained_on(tiny):
    from kit.train import run_fold

    head = [{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-3, "patience": 0}]
    out = run_fold(tiny(schedule=head), "vgg16", 0)
    stamp = (out / "test.csv").stat().st_mtime_ns
    run_fold(tiny(schedule=head, workers=1, tta=["hflip"]), "vgg16", 0)  # how, not what: kept
    with pytest.raises(KitError, match="fold0 was trained on other settings \\(schedule\\) than the spec and data "
                                       "give now: force=1 trains it again"):
        run_fold(tiny(schedule=[{**head[0], "epochs": 2}]), "vgg16", 0)
    with pytest.raises(KitError, match="trained on other settings \\(dropout\\)"):
        run_fold(tiny(schedule=head, dropout=0.5), "vgg16", 0)
    csv = tiny().data_path / "train.csv"
    labels = pd.read_csv(csv)
    labels.assign(label=labels["label"].map({"a": "b", "b": "a"})).to_csv(csv, index=False)  # same ids, classes
    with pytest.raises(KitError, match="fold0 was trained on other labels than the spec and data give now"):
        run_fold(tiny(schedule=head), "vgg16", 0)
    labels.to_csv(csv, index=False)
    moved = dataclasses.replace(BACKBONES["vgg16"], blocks=BACKBONES["vgg16"].blocks[1:])
    with mock.patch.dict(BACKBONES, {"vgg16": moved}):
        run_fold(tiny(schedule=head), "vgg16", 0)  # the blocks do not matter to a head-only run: kept
    assert (out / "test.csv").stat().st_mtime_ns == stamp
    run_fold(tiny(schedule=[{**head[0], "epochs": 2}]), "vgg16", 0, force=True)
    assert (out / "test.csv").stat().st_mtime_ns != stamp


def test_a_run_is_stale_when_the_blocks_its_top_k_opened_are_not_the_registry_s(tiny):
    """Recorded in config.yaml; a run from before they were recorded had a ResNet's five stages.
    (A head-only run does not depend on them: the finished-run test above.)"""
    from kit.data import load_data
    from kit.folds import load_fold
    from kit.provenance import check_trained_on, record_trained_on
    from kit.runs import run_of

    spec = tiny(schedule=SCHEDULE)
    data = load_data(spec)
    for backbone in ("vgg16", "resnet50"):
        run = run_of(spec, backbone, 0)
        run.path.mkdir(parents=True)
        record_trained_on(spec, backbone, load_fold(spec, backbone, 0, data=data), run)
        check_trained_on(spec, backbone, run, data)  # as recorded: kept
        moved = dataclasses.replace(BACKBONES[backbone], blocks=BACKBONES[backbone].blocks[1:])
        with mock.patch.dict(BACKBONES, {backbone: moved}), \
                pytest.raises(KitError, match=f"trained on other blocks of {backbone} \\(what top:K opens.*force=1"):
            check_trained_on(spec, backbone, run, data)
        config = yaml.safe_load(run.config.read_text())
        del config["blocks"]  # as written before 2026-11-28
        run.config.write_text(yaml.safe_dump(config, sort_keys=False))
        if backbone == "vgg16":
            check_trained_on(spec, backbone, run, data)  # its blocks are those of then
        else:
            with pytest.raises(KitError, match="trained on other blocks of resnet50"):
                check_trained_on(spec, backbone, run, data)


PROGRESSIVE = [SCHEDULE[0], {"name": "finetune", "trainable": "progressive", "epochs": 2, "lr": 1e-4,
                              "patience": 0, "round_lr": 0.5, "max_blocks": 3}]


@pytest.mark.slow
@pytest.mark.parametrize("keys, phases", [
    ({"schedule": PROGRESSIVE}, ["head"] * 4 + [f"finetune-top{k}" for k in (1, 1, 2, 2, 3, 3)]),
    ({"schedule": [SCHEDULE[0], {**SCHEDULE[1], "lr_mult": 0.5}], "ema": 0.9, "mixup": 0.4}, ["head"] * 4 + ["finetune"] * 5),
])
def test_killed_in_a_progressive_round_or_with_averaged_weights_it_resumes_byte_for_byte(tmp_path, keys, phases):
    """A progressive phase resumes in its round; the weights' average (ema) and the layer-wise
    rates resume with the optimizer, MixUp's random state with the model."""
    write_competition(tmp_path / "data")
    spec = spec_file(tmp_path, batch_size=4, **keys)
    run = tmp_path / "runs" / "tiny" / "vgg16" / "fold0"
    _, state = _kill_after(_train(tmp_path, spec), run, 7)  # inside the second phase
    assert state["epoch"] >= 7 and state["phase"] == 1
    finished = _train(tmp_path, spec)
    assert finished.wait(timeout=600) == 0, finished.stderr.read()[-3000:]
    (tmp_path / "again").mkdir()
    result = _train(tmp_path, spec_file(tmp_path / "again", batch_size=4, data_dir=str(tmp_path / "data"), **keys))
    assert result.wait(timeout=600) == 0
    again = tmp_path / "again" / "runs" / "tiny" / "vgg16" / "fold0"
    history = pd.read_csv(run / "history.csv")
    assert history["phase"].tolist()[:len(phases)] == phases[:len(history)]
    pd.testing.assert_frame_equal(history, pd.read_csv(again / "history.csv"))
    for name in ("oof.csv", "test.csv"):
        assert (run / name).read_bytes() == (again / name).read_bytes()
