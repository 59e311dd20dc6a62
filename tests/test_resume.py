"""A fold killed mid-training resumes from its last finished epoch, optimizer state and all."""
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pandas as pd
import pytest

from kit.checkpoint import Checkpoint, RunState
from kit.model import build_model, compile_model
from tests.helpers import ROOT, spec_file, write_competition

SCHEDULE = [{"name": "head", "trainable": "none", "epochs": 4, "lr": 1e-3, "patience": 0},
            {"name": "finetune", "trainable": "top:1", "epochs": 4, "lr": 1e-4, "patience": 0}]


def test_a_checkpoint_restores_weights_and_optimizer_state(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    y = np.arange(8).reshape(-1, 1) % 2
    model, _ = build_model("vgg16", "binary", 2, 32, None, 0.0)
    compile_model(model, "binary", 1e-3, False)
    model.fit(x, y, epochs=1, verbose=0)  # one step: the optimizer has state to restore
    checkpoint, state = Checkpoint(tmp_path / "checkpoint"), RunState(epoch=1)
    checkpoint.save(state, model, best=True)
    checkpoint.wait()
    again, _ = build_model("vgg16", "binary", 2, 32, None, 0.0)
    compile_model(again, "binary", 1e-3, False)
    loaded = checkpoint.load()
    checkpoint.restore(again, loaded)
    assert loaded.model_file == loaded.best_file == "epoch1.npy" and int(again.optimizer.iterations) == 1
    for a, b in zip(model.optimizer.variables + model.weights, again.optimizer.variables + again.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert [p.name for p in sorted((tmp_path / "checkpoint").iterdir())] == ["epoch1.npy", "state.json"]
    for a, b in zip(checkpoint.best_weights(loaded), model.get_weights()):
        np.testing.assert_array_equal(a, b)


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
def test_killed_twice_it_resumes_and_ends_with_the_epochs_of_an_uninterrupted_run(tmp_path):
    write_competition(tmp_path / "data")
    spec = spec_file(tmp_path, schedule=SCHEDULE, batch_size=4)
    run = tmp_path / "runs" / "tiny" / "vgg16" / "fold0"
    seen, states = zip(*[_kill_after(_train(tmp_path, spec), run, rows) for rows in (2, 6)])
    assert (run / "checkpoint" / "state.json").is_file() and not (run / "test.csv").exists()
    finished = _train(tmp_path, spec)
    out, err = finished.communicate(timeout=600)
    assert finished.returncode == 0, err[-3000:]
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 9))
    assert history["phase"].tolist() == ["head"] * 4 + ["finetune"] * 4
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
    assert len(pd.read_csv(tmp_path / "again" / "runs" / "tiny" / "vgg16" / "fold0" / "history.csv")) == len(history)


def test_a_checkpoint_that_cannot_be_written_stops_training(tmp_path):
    model, _ = build_model("vgg16", "binary", 2, 32, None, 0.0)
    compile_model(model, "binary", 1e-3, False)
    (tmp_path / "checkpoint").write_text("a file where the folder should be")
    checkpoint = Checkpoint(tmp_path / "checkpoint")
    checkpoint.save(RunState(epoch=1), model, best=True)  # the write fails in its thread ...
    with pytest.raises(OSError):
        checkpoint.wait()  # ... and training hears of it at its next step
    checkpoint.wait()  # once
