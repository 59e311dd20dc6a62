"""`make lr-find phase=<name>`: the learning rate of one phase of the schedule, found by a sweep.

The phase's setting (its trainable blocks and layer-wise rates, the spec's loss, smoothing and
accumulation; not ema or mixing, which change no step's loss; fold 0's training images
augmented as in training) trains for up to `steps` batches while the learning rate grows
exponentially from 1e-7 to 1; the sweep stops once the smoothed loss is 4x its lowest. The
suggestion is the rate where the smoothed loss falls fastest, if it falls at all. A phase after
the first starts from fold 0's trained model when there is one (its head has learnt something),
else from a fresh head. No run is changed: the sweep writes runs/<slug>/<member>/lr-find-<phase>.png/.csv.
"""
import math

import keras
import numpy as np
import pandas as pd

from kit import KitError
from kit.augment import Augmenter, serialized
from kit.checks import check_backbone
from kit.env import resolve_weights
from kit.files import write_csv
from kit.folds import load_fold
from kit.inputs import train_stream
from kit.members import member_spec
from kit.model import Objective, build_model, compile_model, released
from kit.plan import open_plan, phase_plans
from kit.plots import plot_lr_find
from kit.pretrained import load_model
from kit.runs import run_of


class Sweep(keras.callbacks.Callback):
    """After each batch: record (lr, loss), raise the rate, stop when the loss has blown up."""

    def __init__(self, low, high, steps):
        super().__init__()
        self.low, self.factor, self.steps = low, (high / low) ** (1 / max(1, steps - 1)), steps
        self.lrs, self.losses, self.smoothed, self.average = [], [], [], 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.low * self.factor ** len(self.lrs)

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        self.lrs.append(self.low * self.factor ** len(self.lrs))
        self.losses.append(loss)
        self.average = 0.98 * self.average + 0.02 * loss
        self.smoothed.append(self.average / (1 - 0.98 ** len(self.losses)))  # bias-corrected
        blown_up = not math.isfinite(loss) or self.smoothed[-1] > 4 * min(self.smoothed)
        if len(self.lrs) >= self.steps or blown_up:
            self.model.stop_training = True


def suggestion(lrs, smoothed):
    """The rate where the smoothed loss falls fastest (per log-lr) before its lowest point, the
    first tenth of the sweep left out (a few batches' noise); None if the loss never fell."""
    start = max(1, len(lrs) // 10)
    lowest = start + int(np.argmin(smoothed[start:]))
    if lowest - start < 2:
        return None
    slope = np.gradient(np.asarray(smoothed[start:lowest + 1]), np.log(lrs[start:lowest + 1]))
    return lrs[start + int(np.argmin(slope))]


def lr_find(spec, member, phase_name, steps=200, low=1e-7, high=1.0):
    """Sweep, plot, save, print; returns the suggested learning rate."""
    backbone, spec = member_spec(spec, member)
    names = [p.name for p in spec.schedule]
    if phase_name not in names:
        raise KitError(f"lr-find: no phase {phase_name!r} in the schedule (phases: {', '.join(names)})")
    index = names.index(phase_name)
    phase = spec.schedule[index]
    entry = check_backbone(backbone)
    with released():
        f = load_fold(spec, backbone, 0, member=member)
        keras.utils.set_random_seed(spec.seed)
        model, base = build_model(backbone, spec.task, len(f.data.classes), f.size,
                                  resolve_weights(spec.weights, entry), spec.dropout)
        trained = run_of(spec, member, 0).model
        start = "a fresh head"
        if index and trained.is_file():
            model.set_weights(load_model(trained).get_weights())
            start = f"{trained}"
        augment = Augmenter(serialized(spec.augment))
        plan = phase_plans(spec, phase, base, entry.blocks, augment)[0]  # progressive: its first round
        open_plan(base, entry.blocks, plan)
        trainable = plan.phase.trainable
        objective = Objective(spec.loss, spec.label_smoothing, 0.0, spec.accumulate, plan.factors)
        compile_model(model, spec.task, low, False, objective=objective)
        y = f.y[f.train_idx]
        if objective.one_hot(spec.task):
            y = np.eye(len(f.data.classes), dtype=np.float32)[y.astype(int)]
        per_epoch = math.ceil(len(f.train_idx) / spec.batch_size)
        epochs = math.ceil(steps / per_epoch)
        stream, _ = train_stream(f.images, f.train_idx, y, augment, spec.seed,
                                 (0, epochs), spec.batch_size)
        sweep = Sweep(low, high, steps)
        model.fit(stream, steps_per_epoch=per_epoch, epochs=epochs, callbacks=[sweep], shuffle=False,
                  verbose=0)
    smoothed = sweep.smoothed
    lr = suggestion(sweep.lrs, smoothed)
    folder = spec.runs_path / member
    figure = folder / f"lr-find-{phase_name}.png"
    write_csv(folder / f"lr-find-{phase_name}.csv",
              pd.DataFrame({"lr": sweep.lrs, "loss": sweep.losses, "smoothed": smoothed}))
    plot_lr_find(sweep.lrs, sweep.losses, smoothed, lr, figure,
                 f"{spec.slug} / {member} / phase {phase_name} ({trainable}), from {start}")
    found = (f"suggested lr {lr:.2g}" if lr else "the loss did not fall: no suggestion (a fine-tuning phase "
             "needs a trained head: train fold 0 first; or more steps=)")
    print(f"lr-find {member} phase {phase_name} ({trainable}, from {start}): {len(sweep.lrs)} batches, "
          f"{found} (phase's lr {phase.lr:g}); {figure}", flush=True)
    return lr
