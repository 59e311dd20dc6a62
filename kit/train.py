"""Train one fold of one backbone with the spec's schedule, then predict OOF and test.

    runs/<slug>/<backbone>/fold<k>/
        config.yaml   the resolved spec and this run's settings
        history.csv   epoch, phase, lr, loss, metric, val_loss, val_metric (one line per epoch)
        model.keras   the best weights of the whole schedule; takes raw RGB
        oof.csv       this fold's validation ids, one probability column per output
        test.csv      every test id, same columns
        curves.png    loss and accuracy, train and validation, phases marked
        log.txt       what was skipped, and the fold's score
        checkpoint/   while training: what a killed run resumes from (kit/checkpoint.py)
"""
import dataclasses
import math
import sys
from types import SimpleNamespace

import keras
import pandas as pd
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # disable_op_determinism is not public

from kit.augment import Augmenter, serialized
from kit.cache import competition_images
from kit.checkpoint import Checkpoint, RunState, Tracker
from kit.config import check_backbone, check_fold, dump, image_size
from kit.curves import plot_curves
from kit.data import load_data
from kit.features import feature_stream, fold_features, head_of
from kit.files import atomic_path, run_finished, write_csv, write_text
from kit.folds import load_folds
from kit.inputs import eval_batches, on_device, train_stream
from kit.kernel import resolve_weights
from kit.model import build_model, compile_model, set_trainable, setup_device, trainable_layers
from kit.predict import split, write_predictions

SKIPPED = "skipped.csv"  # the unreadable training images a run left out


def run_fold(spec, backbone, fold, force=False):
    entry = check_backbone(backbone)
    check_fold(spec, fold)
    out = spec.run_dir(backbone, fold)
    if run_finished(out) and not force:
        print(f"{out} is finished: force=1 trains it again", flush=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(out / "checkpoint", out / "history.csv")
    if force:
        checkpoint.clear()
    state = checkpoint.load()
    if state is None:  # a fresh start (a resumed run's log goes on)
        (out / "log.txt").unlink(missing_ok=True)
        state = RunState()
    log = _logger(out)
    f = _prepare(spec, backbone, fold, image_size(spec, entry), out, log)
    model, base, device = _build(spec, backbone, entry, f.images.size, len(f.data.classes), log)
    batch = spec.batch_size * device.strategy.num_replicas_in_sync
    augment = Augmenter(serialized(spec.augment))
    if state.epoch:
        log(f"resuming after epoch {state.epoch} (phase {spec.schedule[state.phase].name})")

    features = None  # the frozen base's outputs, while no phase has trained the base
    for index, phase in enumerate(spec.schedule):
        if index < state.phase:
            continue
        if index > state.phase:
            state.start_phase(index)
        set_trainable(base, entry.blocks, phase.trainable)
        cached = spec.feature_cache and phase.trainable == "none"
        with device.strategy.scope():  # recompiled: keras sees the new trainable set
            compile_model(model, spec.task, phase.lr, device.jit_compile)
            trainer = head_of(model) if cached else model
            if cached:
                compile_model(trainer, spec.task, phase.lr, device.jit_compile, optimizer=model.optimizer)
        if state.model_file:  # resumed in the middle of this phase
            checkpoint.restore(model, state)
        if not state.phase_done(phase):
            epochs = (state.epoch, state.phase_start + phase.epochs)
            limit, workers, y_train = spec.limit_batches, spec.workers, f.y[f.train_idx]
            if cached:
                features = features or fold_features(spec, model, f, augment, batch)
                train, steps = feature_stream(features[0], y_train, spec.seed, epochs, batch, limit, workers)
                val = (features[1], f.y[f.val_idx])
            else:
                features = None  # the base trains: its outputs change
                train, steps = train_stream(f.images, f.train_idx, y_train, augment, spec.seed, epochs, batch,
                                            limit, workers)
                if device.accelerator == "gpu" and device.strategy.num_replicas_in_sync == 1:
                    train = on_device(train, tf.config.list_logical_devices("GPU")[0].name)
                val = eval_batches(f.images, f.val_idx, batch, f.y[f.val_idx], workers)
            opened = sum(layer.trainable for layer in base.layers)
            how = ", head on cached features" if cached else ""
            log(f"phase {phase.name}: base trainable {phase.trainable} ({opened} of {len(base.layers)} "
                f"layers{how}), lr {phase.lr:g}, up to {phase.epochs} epochs")
            callbacks = [Tracker(state, phase, checkpoint, model),
                         *_phase_callbacks(phase, state.phase_start)]
            trainer.fit(train, steps_per_epoch=steps, validation_data=val, validation_batch_size=batch,
                        initial_epoch=epochs[0], epochs=epochs[1], shuffle=False, callbacks=callbacks,
                        verbose=1 if sys.stdout.isatty() else 2)
        # The next phase starts from the best weights so far, and so does prediction: a
        # fine-tuning phase that never beats the head leaves the head's weights.
        best = checkpoint.best_weights(state)
        if best is not None:
            model.set_weights(best)

    # Saved without the optimizer's state (twice the trainable weights): a twin built from the
    # config is uncompiled (clone_model would compile it, optimizer and all).
    inference = keras.Model.from_config(model.get_config())
    inference.set_weights(model.get_weights())
    with atomic_path(out / "model.keras") as tmp:
        inference.save(tmp)
    plot_curves(pd.DataFrame(state.rows), out / "curves.png", f"{spec.slug} / {backbone} / fold {fold}")
    fold_score = write_predictions(spec, model, f, batch, augment, out)
    checkpoint.clear()
    log(f"fold {fold} {spec.metric}: {fold_score:.5f} (best val_loss {state.best:.5f})")
    return out


def _prepare(spec, backbone, fold, size, out, log):
    """The fold's data: labels, images (decoded once into the cache, which finds the unreadable
    ones: skipped and listed in training, an error in test), train and validation indices. The
    resolved spec is saved in the run folder."""
    data = load_data(spec)
    fold_of = load_folds(spec, data)
    log(f"{spec.slug} / {backbone} / fold {fold}: {size}px, {len(data.train)} train images, "
        f"{len(data.test)} test images, classes: {', '.join(data.classes[:10])}")
    images, test_images, bad = competition_images(spec, data, size)
    (out / SKIPPED).unlink(missing_ok=True)
    if bad:
        write_csv(out / SKIPPED, pd.DataFrame({"path": list(bad), "reason": list(bad.values())}))
        path, reason = next(iter(bad.items()))
        log(f"skipped {len(bad)} unreadable training images (listed in {out / SKIPPED}), "
            f"e.g. {path}: {reason}")
    train_idx, val_idx = split(data, fold_of, fold, bad)
    resolved = dataclasses.replace(spec, image_size=size)
    write_text(out / "config.yaml", dump(resolved, backbone=backbone, fold=fold))
    y = data.y.reshape(-1, 1) if spec.task == "binary" else data.y
    return SimpleNamespace(data=data, images=images, test_images=test_images, y=y,
                           train_idx=train_idx, val_idx=val_idx)


def _build(spec, backbone, entry, size, n_classes, log):
    """(model, base, device): seeded, on the devices the spec asks for, in their precision."""
    # Same seed, same folds, same predictions: seeded, and deterministic ops on the CPU. Keras
    # quietly drops XLA while determinism is on, so asking for XLA trades determinism away.
    keras.utils.set_random_seed(spec.seed)
    device = setup_device(spec.strategy, spec.mixed_precision, spec.jit_compile)
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
            model, base = build_model(backbone, spec.task, n_classes, size, weights, spec.dropout)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    for phase in spec.schedule:  # a top:K beyond the backbone's blocks fails now, not hours in
        trainable_layers(base, entry.blocks, phase.trainable)
    replicas = device.strategy.num_replicas_in_sync
    log(f"device: {device.accelerator}, {replicas} replica(s) ({type(device.strategy).__name__}), "
        f"batch {spec.batch_size} per device ({spec.batch_size * replicas} in all), {device.policy}, "
        f"XLA {'on' if device.jit_compile else 'off'}, deterministic ops {'on' if deterministic else 'off'}")
    return model, base, device


def _logger(out):
    def log(message):
        print(message, flush=True)
        with open(out / "log.txt", "a") as f:
            f.write(message + "\n")
    return log


def _phase_callbacks(phase, start):
    """The learning rate of one phase (epochs count from the phase's start), and a stop as soon
    as the loss turns NaN (the best weights so far are put back)."""
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
    if phase.decay == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            factor=0.2, patience=max(1, phase.patience // 2), min_lr=phase.lr / 1000))
    return callbacks
