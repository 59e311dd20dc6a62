"""Train one fold of one backbone with the spec's schedule, then predict its OOF and test images.
What a run writes, and where, is kit/runs.py's."""
import dataclasses
import sys
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # disable_op_determinism is not public

from kit import KitError
from kit.augment import Augmenter, serialized
from kit.callbacks import AverageWeights, Tracker, Validation, history_columns, phase_callbacks
from kit.checkpoint import Checkpoint, RunState
from kit.checks import check_backbone
from kit.config import Spec, check_fold
from kit.data import load_data, load_ids
from kit.env import cores, resolve_weights
from kit.features import WITHOUT, cache_bytes, fold_features, head_of, pooled_of, room
from kit.files import atomic_path, size_text, write_csv
from kit.folds import Fold, load_fold
from kit.inputs import eval_batches, feature_stream, on_device, train_stream
from kit.members import member_spec
from kit.metrics import spec_score
from kit.model import Device, Objective, build_model, compile_model, releasing, setup_device
from kit.plan import check_room, open_plan, schedule_plans
from kit.plots import plot_curves
from kit.predict import write_predictions
from kit.prefix import prefix_of, suffix_of
from kit.provenance import check_trained_on, record_trained_on
from kit.runs import Run, cache_dir, run_of
from kit.sample_format import check_sample


@releasing
def run_fold(spec, member, fold, force=False, wait=False):
    """Train fold `fold` of `member` (a backbone, or a variant of one: kit/runs.Variant) and return
    its run folder; None when another process is at it, or with `wait`, once that one is done
    (what it finished is kept, what it left unfinished resumes here). A finished run is kept
    unless `force`, and a killed one resumes, as long as the data and the settings are still
    those it was trained with."""
    backbone, spec = member_spec(spec, member)
    check_fold(spec, fold)
    run = run_of(spec, member, fold)
    with run.claim(wait) as mine:
        if not mine:
            print(f"{run.path} is being trained by another process: skipped", flush=True)
            return None
        kept = run.finished() and not force
        data = load_ids(spec) if kept else load_data(spec)  # a finished run's checks need no image found
        check_sample(spec, data.classes)
        if (run.finished() or run.checkpoint.is_dir()) and not force:
            check_trained_on(spec, backbone, run, data)
        if kept:
            print(f"{run.path} is finished{' (by the process waited for)' if wait else ''}: force=1 trains "
                  f"it again", flush=True)
            return run.path
        try:
            return _train(spec, member, backbone, fold, run, force, data)
        except KeyboardInterrupt:  # the screen says it too, once, for the whole command
            run.log("interrupted (Ctrl-C): run again, it resumes after the last finished epoch", screen=False)
            raise


def _train(spec, member, backbone, fold, run, force, data):
    """The recipe: load the fold, build the model, train it phase by phase, keep the best
    weights, predict."""
    entry = check_backbone(backbone)
    checkpoint, state = _resume(run, force)
    f = load_fold(spec, backbone, fold, log=run.log, data=data, member=member)
    _record(spec, member, f, run)
    model, base, device = _build(spec, backbone, entry, f, run.log)
    t = Trainer(spec, f, model, base, entry.blocks, device, Augmenter(serialized(spec.augment)), checkpoint,
                state, run.log)
    plans = schedule_plans(spec, base, entry.blocks, t.augment)  # each phase resolved once, before any work
    check_room(spec, plans, base, len(f.train_idx))
    if spec.workers > cores():
        run.log(f"workers {spec.workers}: this machine has {cores()} cores, {cores()} threads used")
    on = [f"{k} {getattr(spec, k)}" for k in OPTIONS if getattr(spec, k) != OPTION_DEFAULTS[k]]
    if on:
        run.log(f"training options: {', '.join(on)}")
    if force:  # the old run goes once the new one can train: interrupted, the folder resumes the new
        for old in (run.test, run.oof, run.model):  # test.csv first: it marks a run finished
            old.unlink(missing_ok=True)
    if state.epoch:
        where = f", round top:{state.round}" if state.round else ""
        run.log(f"resuming after epoch {state.epoch} (phase {spec.schedule[state.phase].name}{where})")
    for index, rounds in enumerate(plans):
        if index >= state.phase:
            t.train_phase(index, rounds)
    _export(model, run)
    plot_curves(pd.DataFrame(state.rows), run.curves, f"{spec.slug} / {member} / fold {fold}")
    score = write_predictions(spec, model, f, t.batch, t.augment, run)
    checkpoint.clear()
    run.log(f"fold {fold} {spec.metric}: {score:.5f} (best val_loss {state.best:.5f})")
    return run.path


@dataclass
class Trainer:
    """What every phase of one run shares."""

    spec: Spec
    fold: Fold
    model: keras.Model
    base: keras.Model
    blocks: tuple  # the backbone's registry blocks, for `top:K`
    device: Device
    augment: Augmenter
    checkpoint: Checkpoint
    state: RunState
    log: object
    features: tuple | None = None  # the frozen base's outputs, while no phase has trained the base

    @property
    def batch(self):
        return self.spec.batch_size * self.device.strategy.num_replicas_in_sync

    def train_phase(self, index, rounds):
        """One phase of the schedule, as planned (kit/plan.py); a progressive one opens one more
        block per round (top:1, top:2, ...), each at `round_lr` times the previous round's rate,
        until a round does not beat the best val_loss before it: the model has begun to overfit,
        and the best weights so far are kept."""
        s, name = self.state, self.spec.schedule[index].name
        if not rounds[0].round:
            if index > s.phase:
                s.start_phase(index)
            return self._fit(rounds[0])
        if index > s.phase or not s.round:
            s.start_phase(index, round=1)
        while True:
            k = s.round
            self._fit(rounds[k - 1])
            if not s.best < s.round_best:
                self.log(f"phase {name}: top:{k} did not beat val_loss {s.round_best:.5f}: no more "
                         f"blocks opened (the best weights are kept)")
                return
            if k == len(rounds):
                self.log(f"phase {name}: all {k} blocks it may open are open")
                return
            s.start_phase(index, round=k + 1)

    def _fit(self, plan):
        """Open the base as planned, recompile, train until val_loss stops improving or the
        epochs are done; then go back to the best weights of the schedule so far (a fine-tuning
        phase that never beats the head leaves the head's weights)."""
        s, phase, mode = self.state, plan.phase, plan.source
        open_plan(self.base, self.blocks, plan)
        trainer, pooled = self._compile(plan)
        if s.model_file:  # resumed in the middle of this phase
            self.checkpoint.restore(self.model, s)
        if not s.phase_done(phase):
            epochs = (s.epoch, s.phase_start + phase.epochs)
            if plan.why:
                self.log(f"prefix_cache on: phase {phase.name} trains end to end ({plan.why})")
            opened = sum(int(np.prod(v.shape)) for v in self.base.trainable_weights) / 1e6
            how = {None: "", "head": ", head on cached features",
                   "prefix": f", on the frozen prefix's cached outputs "
                             f"({'x'.join(map(str, trainer.inputs[0].shape[1:]))})"}[mode]
            self.log(f"phase {phase.name}: base trainable {phase.trainable} ({opened:.2f}M of "
                     f"{self.base.count_params() / 1e6:.2f}M parameters{how}), lr {phase.lr:g}"
                     f"{f' (x{phase.lr_mult:g} per block down)' if phase.lr_mult != 1 else ''}, up to "
                     f"{epochs[1] - epochs[0]} epochs"
                     f"{f' (of {phase.epochs}: resumed)' if epochs[0] > s.phase_start else ''}")
            train, steps, validation = self._inputs(epochs, plan, pooled)  # logs the cache size
            columns = history_columns(self.spec.task, self.spec.metric)
            average = [AverageWeights()] if self.spec.ema else []  # first: the others see the average
            callbacks = [*average, validation, Tracker(s, phase, self.checkpoint, self.model, columns),
                         *phase_callbacks(phase, s.phase_start)]
            trainer.fit(train, steps_per_epoch=steps, initial_epoch=epochs[0], epochs=epochs[1],
                        shuffle=False, callbacks=callbacks, class_weight=self._class_weight(),
                        verbose=1 if sys.stdout.isatty() else 2)
        best = self.checkpoint.best_weights(s)
        if best is not None:
            self.model.set_weights(best)

    def _compile(self, plan):
        """(what fits, its pooled features when validation needs them): the model recompiled
        (keras sees the new trainable set), or the part of it that trains on cached outputs,
        sharing the model's layers and optimizer."""
        jit, spec, objective = self.device.jit_compile, self.spec, self._objective(plan.factors)
        with self.device.strategy.scope():
            compile_model(self.model, spec.task, plan.phase.lr, jit, objective=objective)
            if plan.source is None:
                return self.model, None
            trained, pooled = (head_of(self.model), None) if plan.source == "head" else \
                suffix_of(self.model, self.base, plan.cut)
            compile_model(trained, spec.task, plan.phase.lr, jit, optimizer=self.model.optimizer,
                          objective=objective)
            return trained, pooled

    def _objective(self, lr_factors=None):
        spec = self.spec
        return Objective(spec.loss, spec.label_smoothing, spec.ema, spec.accumulate, lr_factors or {},
                         mixing=bool(spec.mixup or spec.cutmix))

    def _class_weight(self):
        if self.spec.class_weight == "none":
            return None
        return balanced_weights(self.fold.y[self.fold.train_idx], len(self.fold.data.classes))

    def _outputs(self, net, mode):
        """(training, validation) outputs of a frozen part of the model, `mode` head or prefix: its
        size and room said first."""
        f, copies = self.fold, self.spec.feature_copies
        need = cache_bytes(net, len(f.train_idx) * (copies + 1) + len(f.val_idx), 1)
        where = room(need, self.spec.cache_mb, cache_dir(self.spec), WITHOUT[mode])
        what = "head features" if mode == "head" else "frozen prefix"
        self.log(f"{what}: {size_text(need)} of outputs for {len(f.train_idx)} images x {copies + 1} "
                 f"view(s), {'in memory' if where == 'memory' else f'on disk in {where}'}")
        return fold_features(self.spec, net, f, self.augment, self.batch, cache_dir(self.spec), mode)

    def _inputs(self, epochs, plan, pooled):
        """(training stream, steps per epoch, validation callback) for `epochs` of a phase."""
        spec, f, batch, mode = self.spec, self.fold, self.batch, plan.source
        y_train, y_val, stream = f.y[f.train_idx], f.data.y[f.val_idx], (spec.limit_batches, spec.workers)
        if self._objective().one_hot(spec.task):
            y_train = np.eye(len(f.data.classes), dtype=np.float32)[y_train.astype(int)]
        if mode == "head":
            self.features = self.features or self._outputs(pooled_of(self.model), mode)
            train_x, val_x = self.features
        else:
            self.features = None  # the base trains: its outputs change
        if mode == "prefix":  # computed anew each phase: the cut moves with the opened blocks
            train_x, val_x = self._outputs(prefix_of(self.model, self.base, plan.cut), mode)
        if mode:
            train, steps = feature_stream(train_x, y_train, spec.seed, epochs, batch, spec.limit_batches)
        else:
            train, steps = train_stream(f.images, f.train_idx, y_train, self.augment, spec.seed, epochs,
                                        batch, *stream)
            if self.device.accelerator == "gpu" and self.device.strategy.num_replicas_in_sync == 1:
                train = on_device(train, tf.config.list_logical_devices("GPU")[0].name)
            val_x = eval_batches(f.images, f.val_idx, batch, workers=spec.workers, pad=True)
        score = lambda y, p: spec_score(spec, y, p)
        return train, steps, Validation(val_x, y_val, batch, spec.task, spec.metric, score,
                                        features=mode == "head", pooled=pooled)


def balanced_weights(y, n_classes):
    """class_weight: balanced: {class: n / (classes x its count)} of a fold's training labels
    (binary: the two outcomes): sklearn's formula, kept finite for a class missing in the fold."""
    counts = np.bincount(np.asarray(y).astype(int), minlength=max(2, n_classes))
    return dict(enumerate((len(y) / (len(counts) * np.maximum(counts, 1))).tolist()))


def _resume(run, force):
    """(checkpoint, state): where a killed run left off, or a fresh start (a resumed run's log
    goes on; a fresh one's starts anew)."""
    run.path.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(run.checkpoint, run.history)
    if force:
        checkpoint.clear()
    state = checkpoint.load()
    if state is None:
        run.log_file.unlink(missing_ok=True)
        state = RunState()
    return checkpoint, state


def _record(spec, member, f, run):
    """The unreadable training images left out (skipped.csv), and the resolved spec."""
    run.skipped.unlink(missing_ok=True)
    if f.skipped:
        write_csv(run.skipped, pd.DataFrame({"path": list(f.skipped), "reason": list(f.skipped.values())}))
        path, reason = next(iter(f.skipped.items()))
        run.log(f"skipped {len(f.skipped)} unreadable training images (listed in {run.skipped}), "
                f"e.g. {path}: {reason}")
    record_trained_on(spec, member, f, run)


OPTIONS = ("loss", "label_smoothing", "class_weight", "ema", "accumulate", "mixup", "cutmix")
OPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Spec) if f.name in OPTIONS}

def _build(spec, backbone, entry, f, log):
    """(model, base, device): seeded, on the devices the spec asks for, in their precision."""
    # Same seed, same folds, same predictions: seeded, and deterministic ops on the CPU. Keras
    # quietly drops XLA while determinism is on, so asking for XLA trades determinism away.
    keras.utils.set_random_seed(spec.seed)
    mixing = bool(spec.mixup or spec.cutmix)
    device = setup_device(spec.strategy, spec.mixed_precision, spec.jit_compile, mixing)
    if spec.accumulate > 1 and isinstance(device.strategy, tf.distribute.MirroredStrategy):
        raise KitError("accumulate with several devices (MirroredStrategy): its conditional step cannot "
                       "all-reduce; use strategy=default, or a bigger batch_size instead")
    deterministic = device.accelerator == "cpu" and not device.jit_compile
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()  # the process may have turned it on for an earlier run
    weights = resolve_weights(spec.weights, entry)
    if weights != spec.weights:
        log(f"weights: {weights} (ImageNet, attached)")
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(device.policy)
    try:
        with device.strategy.scope():
            mix = ("mixup", spec.mixup, spec.seed) if spec.mixup else ("cutmix", spec.cutmix, spec.seed)
            model, base = build_model(backbone, spec.task, len(f.data.classes), f.size, weights, spec.dropout,
                                      mix if spec.mixup or spec.cutmix else None)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    replicas = device.strategy.num_replicas_in_sync
    log(f"device: {device.accelerator}, {replicas} replica(s) ({type(device.strategy).__name__}), "
        f"batch {spec.batch_size} per device ({spec.batch_size * replicas} in all), {device.policy}, "
        f"XLA {'on' if device.jit_compile else 'off'}, deterministic ops {'on' if deterministic else 'off'}")
    return model, base, device


def _export(model, run: Run):
    """model.keras without the optimizer's state (twice the trainable weights): a twin built
    from the config is uncompiled (clone_model would compile it, optimizer and all)."""
    inference = keras.Model.from_config(model.get_config())
    inference.set_weights(model.get_weights())
    with atomic_path(run.model) as tmp:
        inference.save(tmp)
