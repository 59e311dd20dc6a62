"""Resuming a fold killed mid-training (a time limit, a preempted machine): the schedule's
bookkeeping (RunState) and the checkpoint it is saved in.

After every epoch, <run>/checkpoint/ gets the model's weights with its optimizer state and the
schedule's bookkeeping (state.json). The epoch's arrays are copied at once; writing them to disk
happens beside training, in a thread, in this order: the arrays (epoch<k>.npy: .npy records one
after another, no zip and no checksum to compute, written whole), then state.json naming them,
then history.csv. A kill at any moment leaves a consistent
checkpoint. Run the fold again and it goes on from its last saved epoch; once the fold is
finished the checkpoint is removed.
"""
import dataclasses
import json
import math
import shutil
import threading

import keras
import numpy as np
import pandas as pd

from kit import KitError
from kit.files import atomic_path, write_csv, write_text


@dataclasses.dataclass
class RunState:
    phase: int = 0  # index of the phase under way
    phase_start: int = 0  # the epoch it began at
    epoch: int = 0  # epochs finished, all phases together
    best: float = math.inf  # lowest val_loss of the schedule so far
    phase_best: float = math.inf  # lowest val_loss of this phase
    wait: int = 0  # epochs of this phase without a better val_loss
    plateau_best: float = math.inf  # decay: plateau: the val_loss to beat by 1e-4 ...
    plateau_wait: int = 0  # ... and the epochs it has not been
    stopped: bool = False  # the phase ended early (patience, or a NaN loss)
    round: int = 0  # progressive phase: the blocks open in the round under way ...
    round_best: float = math.inf  # ... and the best val_loss before it, which it must beat
    rows: list = dataclasses.field(default_factory=list)  # history.csv
    model_file: str = ""  # checkpoint file of the model and optimizer after `epoch`
    best_file: str = ""  # checkpoint file holding the weights with the `best` val_loss

    # Its only writers are these methods: the trainer starts phases, the epoch's end records it,
    # the checkpoint names its files.

    def start_phase(self, index, round=0):
        self.phase, self.phase_start, self.phase_best, self.wait = index, self.epoch, math.inf, 0
        self.plateau_best, self.plateau_wait, self.stopped, self.model_file = math.inf, 0, False, ""
        self.round, self.round_best = round, self.best

    def phase_done(self, phase):
        return self.stopped or self.epoch >= self.phase_start + phase.epochs

    def end_epoch(self, row, loss, val_loss, patience):
        """An epoch's history line (`row`) and losses: (is val_loss the schedule's best so far,
        does the phase stop: `patience` epochs without a better one, or a NaN loss)."""
        self.rows.append(row)
        best = val_loss < self.best  # False for NaN
        if best:
            self.best = val_loss
        if val_loss < self.phase_best:
            self.phase_best, self.wait = val_loss, 0
        else:
            self.wait += 1
        self.epoch = row["epoch"]
        if math.isnan(loss) or math.isnan(val_loss) or (patience and self.wait >= patience):
            self.stopped = True
        return best, self.stopped

    def plateau(self, val_loss, patience):
        """decay: plateau: whether the learning rate goes down now, after patience // 2 epochs
        without a val_loss 1e-4 better (as Keras' ReduceLROnPlateau counts)."""
        if val_loss < self.plateau_best - 1e-4:
            self.plateau_best, self.plateau_wait = val_loss, 0
            return False
        self.plateau_wait += 1
        if self.plateau_wait < max(1, patience // 2):
            return False
        self.plateau_wait = 0
        return True

    def saved(self, best):
        """This epoch's checkpoint file becomes the one to resume from (and the best weights', when
        `best`): the files no longer needed."""
        stale = {self.model_file, self.best_file}
        self.model_file = f"epoch{self.epoch}.npy"
        if best:
            self.best_file = self.model_file
        return stale - {self.model_file, self.best_file}


class Checkpoint:
    def __init__(self, folder, history_path=None):
        self.folder, self.history_path = folder, history_path
        self._writing, self._failed = None, None

    def load(self):
        path = self.folder / "state.json"
        return RunState(**json.loads(path.read_text())) if path.is_file() else None

    def save(self, state, model, best):
        """Copy the model's weights and optimizer state now; write them beside training.
        `best`: these are the best weights so far."""
        weights = model.get_weights()  # copies
        optimizer = [keras.ops.convert_to_numpy(v) for v in _training_state(model)]
        self.wait()  # one write at a time, in epoch order
        stale = state.saved(best)
        snapshot = json.dumps(dataclasses.asdict(state))
        self._writing = threading.Thread(target=self._write, args=(weights, optimizer, snapshot, stale))
        self._writing.start()

    def _write(self, *args):
        try:
            self._write_files(*args)
        except OSError as error:  # a full disk: raised in training's thread, at the next wait()
            self._failed = error

    def _write_files(self, weights, optimizer, snapshot, stale):
        self.folder.mkdir(parents=True, exist_ok=True)
        state = json.loads(snapshot)
        with atomic_path(self.folder / state["model_file"]) as tmp, open(tmp, "wb") as f:
            np.save(f, np.array([len(weights), len(optimizer)]))
            for array in (*weights, *optimizer):
                np.save(f, array)
        write_text(self.folder / "state.json", snapshot)
        if self.history_path:  # after: history.csv never shows an epoch that was not saved
            write_csv(self.history_path, pd.DataFrame(state["rows"]))
        for old in filter(None, stale):
            (self.folder / old).unlink(missing_ok=True)

    def wait(self):
        if self._writing is not None:
            self._writing.join()
            self._writing = None
        if self._failed:
            error, self._failed = self._failed, None
            raise error

    def restore(self, model, state):
        """Weights and optimizer state as they were after `state.epoch` (model compiled)."""
        self.wait()
        model.optimizer.build(model.trainable_variables)
        weights, optimizer = _read(self.folder / state.model_file)
        variables = _training_state(model)
        shapes = lambda arrays: [tuple(a.shape) for a in arrays]
        if shapes(weights) != shapes(model.weights) or shapes(optimizer) != shapes(variables):
            raise KitError(f"{self.folder} holds the training state of another model or trainable set (the "
                           f"backbone's blocks may have changed since): force=1 trains the fold again")
        model.set_weights(weights)
        for variable, value in zip(variables, optimizer):
            variable.assign(value)

    def best_weights(self, state):
        self.wait()
        return _read(self.folder / state.best_file, optimizer=False)[0] if state.best_file else None

    def clear(self):
        self.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _training_state(model):
    """What decides the next step besides the weights: the optimizer's variables (its step count
    and learning rate among them), then the random generators' states (dropout's), which
    `get_weights` leaves out; a resumed run draws what an uninterrupted one would have."""
    seen = {id(v) for v in model.weights}
    mixer = getattr(model, "mixer", None)  # MixUp's, which keras 3.13 leaves out of model.variables
    states = []
    for v in [*model.variables, *(mixer.variables if mixer else [])]:
        if id(v) not in seen:
            seen.add(id(v))
            states.append(v)
    return [*model.optimizer.variables, *states]


def _read(path, optimizer=True):
    """(model weights, optimizer variables) from a checkpoint file."""
    with open(path, "rb") as f:
        n_weights, n_optimizer = np.load(f)
        weights = [np.load(f) for _ in range(n_weights)]
        return weights, [np.load(f) for _ in range(n_optimizer)] if optimizer else []
