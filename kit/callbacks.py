"""What happens at the end of every epoch: validation, the history line, the schedule's best
weights, early stopping and the checkpoint; and each phase's learning rate."""
import math

import keras
import numpy as np

from kit.metrics import as_columns, from_columns
from kit.model import accuracy_name, loss_and_accuracy


def history_columns(task, metric):
    """history.csv's columns after epoch, phase and lr; the competition's metric is scored on
    the validation images only (the training images are seen augmented, through dropout)."""
    acc = accuracy_name(task)
    return list(dict.fromkeys(["loss", acc, "val_loss", f"val_{acc}", f"val_{metric}"]))


class Validation(keras.callbacks.Callback):
    """One prediction pass over the validation data per epoch gives val_loss and val_<accuracy>,
    as Keras computes them, and the competition's metric from the same predictions.

    The pass stops at the pooled features and applies the head here: the loss is computed from
    the head's logits, as Keras' own validation does (probabilities that round to 0 would cap
    it). `x`: validation images, or their pooled features (`features=True`, cached phases), or
    what `pooled` (a model to the pooled features) takes (the frozen prefix's outputs)."""

    def __init__(self, x, y, batch_size, task, metric, score, features=False, pooled=None):
        super().__init__()
        self.x, self.y, self.batch_size, self.task = x, y, batch_size, task
        self.metric, self.score, self.features = metric, score, features
        self.loss, self.accuracy = loss_and_accuracy(task, from_logits=True)
        self.pooled = pooled

    def on_epoch_end(self, epoch, logs=None):
        if self.features:
            pooled = self.x
        else:
            self.pooled = self.pooled or keras.Model(self.model.inputs, self.model.get_layer("pool").output)
            pooled = self.pooled.predict(self.x, batch_size=self.batch_size, verbose=0)[:len(self.y)]
        head = self.model.get_layer("head")
        logits = keras.ops.matmul(keras.ops.cast(pooled, "float32"), head.kernel) + head.bias
        p = keras.ops.softmax(logits) if self.task == "multiclass" else keras.ops.sigmoid(logits)
        y = as_columns(self.task, self.y)
        self.accuracy.reset_state()
        self.accuracy.update_state(y, p)
        logs["val_loss"] = float(self.loss(y, logits))
        logs[f"val_{self.accuracy.name}"] = float(self.accuracy.result())
        logs[f"val_{self.metric}"] = self._score(from_columns(self.task, keras.ops.convert_to_numpy(p)))

    def _score(self, p):
        if not np.isfinite(p).all():  # a diverged epoch: the metric is as undefined as the loss
            return math.nan
        try:
            return self.score(self.y, p)
        except ValueError:  # labels sklearn refuses to score (ROC AUC's undefined folds are NaN already)
            return math.nan


class Tracker(keras.callbacks.Callback):
    """After every epoch of a phase: a history line, the schedule's best weights, early stopping
    on val_loss, plateau decay, and a checkpoint of `full` (the model being fit may be its head
    alone). Keras' EarlyStopping and ReduceLROnPlateau reset their counters when fit begins, so
    they cannot resume; the RunState keeps them (and is their only writer)."""

    def __init__(self, state, phase, checkpoint, full, columns):
        super().__init__()
        self.state, self.phase, self.checkpoint = state, phase, checkpoint
        self.full, self.columns = full, columns

    def on_epoch_end(self, epoch, logs=None):
        s, phase, optimizer = self.state, self.phase, self.model.optimizer
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        row = {"epoch": epoch + 1, "phase": phase.name, "lr": lr, **{c: logs[c] for c in self.columns}}
        best, stop = s.end_epoch(row, logs["loss"], logs["val_loss"], phase.patience)
        if stop:
            self.model.stop_training = True
        if phase.decay == "plateau" and s.plateau(logs["val_loss"], phase.patience):
            if lr > np.float32(phase.lr / 1000):  # x0.2, down to the phase's rate / 1000
                optimizer.learning_rate = max(lr * 0.2, phase.lr / 1000)
        self.checkpoint.save(s, self.full, best)


class AverageWeights(keras.callbacks.Callback):
    """`ema`: each epoch is validated, kept as the best and checkpointed with the moving average
    of the weights. It swaps places with the weights at the end of the epoch (before the other
    callbacks) and swaps back when the next begins; a checkpoint is always taken swapped, so a
    resumed run swaps back too."""

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer  # before its first step, the average holds nothing yet
        if optimizer.built and int(keras.ops.convert_to_numpy(optimizer.iterations)):
            self._swap()

    def on_epoch_end(self, epoch, logs=None):
        self._swap()

    def _swap(self):
        optimizer = self.model.optimizer
        for weight, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            raw = keras.ops.convert_to_numpy(weight)
            weight.assign(average)
            average.assign(raw)


def phase_callbacks(phase, start):
    """The learning rate of one phase (epochs count from the phase's start; plateau decay is the
    Tracker's), and a stop as soon as the loss turns NaN (the best weights so far are put back)."""
    callbacks = [keras.callbacks.TerminateOnNaN()]
    if phase.warmup or phase.decay == "cosine":
        def lr(epoch, current):
            e = epoch - start
            if e < phase.warmup:
                return phase.lr * (e + 1) / (phase.warmup + 1)
            if phase.decay == "cosine":
                t = (e - phase.warmup) / max(1, phase.epochs - phase.warmup)
                return phase.lr * 0.5 * (1 + math.cos(math.pi * t))
            return current  # after warm-up: whatever plateau decay has made of it
        callbacks.append(keras.callbacks.LearningRateScheduler(lr))
    return callbacks
