"""Resuming a fold killed mid-training (a time limit, a preempted machine).

After every epoch, <run>/checkpoint/ holds the model with its optimizer state, the best weights
so far, and the schedule's bookkeeping (state.json). Each file is written whole before
state.json names it, so a kill at any moment leaves a consistent checkpoint. Run the fold again
and it goes on from its last finished epoch; once the fold is finished the checkpoint is removed.
"""
import dataclasses
import json
import math
import shutil

import keras
import numpy as np
import pandas as pd

from kit.files import atomic_path, write_csv, write_text


@dataclasses.dataclass
class RunState:
    phase: int = 0  # index of the phase under way
    phase_start: int = 0  # the epoch it began at
    epoch: int = 0  # epochs finished, all phases together
    best: float = math.inf  # lowest val_loss of the schedule so far
    phase_best: float = math.inf  # lowest val_loss of this phase
    wait: int = 0  # epochs of this phase without a better val_loss
    stopped: bool = False  # the phase ended early (patience, or a NaN loss)
    rows: list = dataclasses.field(default_factory=list)  # history.csv
    model_file: str = ""  # checkpoint file of the model and optimizer after `epoch`
    best_file: str = ""  # checkpoint file of the weights with the `best` val_loss

    def start_phase(self, index):
        self.phase, self.phase_start, self.phase_best, self.wait = index, self.epoch, math.inf, 0
        self.stopped, self.model_file = False, ""

    def phase_done(self, phase):
        return self.stopped or self.epoch >= self.phase_start + phase.epochs


class Checkpoint:
    def __init__(self, folder):
        self.folder = folder

    def load(self):
        path = self.folder / "state.json"
        return RunState(**json.loads(path.read_text())) if path.is_file() else None

    def save(self, state, model, best_weights):
        self.folder.mkdir(parents=True, exist_ok=True)
        stale = []
        name = f"epoch{state.epoch}.weights.h5"
        with atomic_path(self.folder / name) as tmp:
            model.save_weights(tmp)  # with the optimizer's variables
        stale.append(state.model_file)
        state.model_file = name
        if best_weights is not None:
            best = f"best{state.epoch}.npz"
            with atomic_path(self.folder / best) as tmp:
                np.savez(tmp, *best_weights)
            stale.append(state.best_file)
            state.best_file = best
        write_text(self.folder / "state.json", json.dumps(dataclasses.asdict(state)))
        for old in stale:
            if old and old not in (state.model_file, state.best_file):
                (self.folder / old).unlink(missing_ok=True)

    def restore(self, model, state):
        """Weights and optimizer state as they were after `state.epoch` (model compiled)."""
        model.optimizer.build(model.trainable_variables)
        model.load_weights(self.folder / state.model_file)

    def best_weights(self, state):
        if not state.best_file:
            return None
        with np.load(self.folder / state.best_file) as saved:
            return [saved[f"arr_{k}"] for k in range(len(saved.files))]

    def clear(self):
        shutil.rmtree(self.folder, ignore_errors=True)


class Tracker(keras.callbacks.Callback):
    """After every epoch of a phase: a history.csv line, the schedule's best weights, early
    stopping on val_loss, and a checkpoint of `full` (the model being fit may be its head
    alone). Keras' EarlyStopping resets its counters when fit begins, so it cannot resume; this
    keeps them in the RunState."""

    def __init__(self, state, phase, checkpoint, history_path, full):
        super().__init__()
        self.state, self.phase, self.checkpoint, self.history_path = state, phase, checkpoint, history_path
        self.full = full

    def on_epoch_end(self, epoch, logs=None):
        s = self.state
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        s.rows.append({"epoch": epoch + 1, "phase": self.phase.name, "lr": lr, "loss": logs["loss"],
                       "metric": logs["accuracy"], "val_loss": logs["val_loss"],
                       "val_metric": logs["val_accuracy"]})
        val_loss = logs["val_loss"]
        best = self.full.get_weights() if val_loss < s.best else None  # False for NaN
        if best is not None:
            s.best = val_loss
        if val_loss < s.phase_best:
            s.phase_best, s.wait = val_loss, 0
        else:
            s.wait += 1
        s.epoch = epoch + 1
        diverged = math.isnan(logs["loss"]) or math.isnan(val_loss)
        if diverged or (self.phase.patience and s.wait >= self.phase.patience):
            s.stopped = self.model.stop_training = True
        self.checkpoint.save(s, self.full, best)
        write_csv(self.history_path, pd.DataFrame(s.rows))  # after: it never shows an unsaved epoch
