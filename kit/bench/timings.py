"""What `make bench` times (kit/bench/bench.py runs them, prints the table and keeps bench.csv): the
input pipeline against plain pools, records in a container against image files, a training epoch
against raw fit, the cached head and prefix phases against end to end, the training options, TTA,
frozen bases' forward passes, and reading a competition's tables. Times are the best of several
runs (as timeit does): a shared machine only ever adds time.
"""
import functools
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import keras
import numpy as np

from kit import KitError
from kit.env import cores


class Timer(keras.callbacks.Callback):
    """Seconds of each epoch; put last among the callbacks, so the kit's own ones count."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def bench_pipeline(paths, size, augment, epochs=4):
    """images/s of decode + augment on the same images for `epochs` epochs: a single-threaded
    loop; plain thread and process pools running the kit's own functions with 1, 2 and every
    core's worker (the ceiling); the kit's stream without the image cache (one worker per core)
    and as it trains (decoded once). Several epochs: a stream's start-up is paid once a phase."""
    from kit.cache import Images, load_images
    from kit.inputs import train_stream

    n, counts = len(paths), sorted({1, 2, cores()})
    jobs = [(paths[i % n], size, i // n, i % n) for i in range(epochs * n)]
    work = lambda job: _decoded_augmented(augment, *job)

    def pooled(kind, k):
        if kind == "threads":
            with ThreadPoolExecutor(k) as pool:
                return list(pool.map(work, jobs))
        with ProcessPoolExecutor(k, initializer=_process_augmenter, initargs=(augment.pipeline,)) as pool:
            return list(pool.map(_in_process, jobs, chunksize=8))

    def stream(images):
        ds, _ = train_stream(images, np.arange(n), np.zeros(n, np.float32), augment, 0, (0, epochs), 32)
        for _ in ds:
            pass
    cached, _ = load_images(paths, size, "memory")  # what the kit's check pass fills anyway
    runs = {"loop": lambda: [work(job) for job in jobs],
            **{f"{kind} {k}": functools.partial(pooled, kind, k) for kind in ("threads", "processes")
               for k in counts},
            "no cache": lambda: stream(Images(paths, size)), "kit": lambda: stream(cached)}
    for run in runs.values():
        run()  # warm: file cache, tracing
    seconds = {name: [] for name in runs}
    for _ in range(5):  # in turns: a drift in the machine's speed hits all alike; a target is near noise
        for name, run in runs.items():
            seconds[name].append(_best(run, 1))
    return {name: len(jobs) / min(s) for name, s in seconds.items()}, counts


def bench_records(paths, records, size, rounds=5):
    """images/s of the image cache's filling pass (a worker per core) over image files and over
    the same images as records of a container, in turns (a drift in the machine's speed hits both
    alike), after an untimed pass of each (the file cache)."""
    from kit.cache import load_images

    runs = {name: functools.partial(load_images, names, size, "memory")
            for name, names in (("files", paths), ("records", records))}
    for run in runs.values():
        run()
    seconds = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            seconds[name].append(_best(run, 1))
    return {name: len(paths) / min(s) for name, s in seconds.items()}


def _decoded_augmented(augment, path, size, epoch, i):
    from kit.decode import read_rgb
    return augment(read_rgb(path, size), 0, epoch, i)


_AUGMENT = {}  # a process pool worker's Augmenter (built once per process by its initializer)


def _process_augmenter(pipeline):
    from kit.augment import Augmenter
    _AUGMENT["augment"] = Augmenter(pipeline)


def _in_process(job):
    return _decoded_augmented(_AUGMENT["augment"], *job)


def _best(run, times):
    """Seconds of the fastest of `times` runs."""
    seconds = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def _model(size, trainable, objective=None, lr_mult=1.0, mix=None):
    from kit.backbones import BACKBONES
    from kit.model import build_model, compile_model
    from kit.pretrained import block_factors, set_trainable

    model, base = build_model("resnet50", "binary", 2, size, None, 0.3, mix)
    set_trainable(base, BACKBONES["resnet50"].blocks, trainable)
    if objective and lr_mult != 1:
        objective.lr_factors = block_factors(base, BACKBONES["resnet50"].blocks, trainable, lr_mult)
    compile_model(model, "binary", 1e-4, False, objective=objective)
    return model


def bench_options(fold, batch, rounds, quick=False):
    """{option: seconds per epoch} of the kit's stream training top:2 with each training option
    (the fastest epoch after an untimed first), beside the plain one. `quick`: those that add a
    step of their own (a callback, the optimizer's rates, the training step), not a loss's."""
    from kit.callbacks import AverageWeights
    from kit.inputs import train_stream
    from kit.model import Objective

    options = {"plain": {}, "loss: focal": {"loss": "focal"}, "ema: 0.999": {"ema": 0.999},
               "label_smoothing: 0.1": {"label_smoothing": 0.1}, "accumulate: 2": {"accumulate": 2},
               "lr_mult: 0.5": {}, "mixup: 0.2": {"mixing": True}}
    if quick:
        options = {name: options[name] for name in ("plain", "ema: 0.999", "lr_mult: 0.5", "mixup: 0.2")}
    seconds = {}
    for name, keys in options.items():
        lr_mult = 0.5 if name.startswith("lr_mult") else 1.0
        mix = ("mixup", 0.2, 0) if name.startswith("mixup") else None
        model, timer = _model(fold.size, "top:2", Objective(**keys), lr_mult, mix), Timer()
        for epoch in range(rounds + 1):
            stream, steps = train_stream(fold.images, fold.train_idx, fold.y[fold.train_idx], None, 0,
                                         (epoch, epoch + 1), batch)
            model.fit(stream, steps_per_epoch=steps, initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                      verbose=0, callbacks=[*([AverageWeights()] if "ema" in keys else []), timer])
        seconds[name] = min(timer.seconds[1:])
    return seconds


def bench_overhead(fold, augment, batch, folder, rounds=3):
    """Epochs of raw fit on arrays, of the kit (its stream, validation, callbacks and
    checkpoints) on the same images, and of the kit with the default augmentation, in turns (a
    drift in the machine's speed hits all alike): the fastest of each, after an untimed first
    (tracing). All validate on the same images."""
    from kit.callbacks import Tracker, Validation, history_columns
    from kit.checkpoint import Checkpoint, RunState
    from kit.config import Phase
    from kit.inputs import eval_batches, train_stream
    from kit.metrics import score
    from kit.runs import Run

    train, val, y = fold.train_idx, fold.val_idx, fold.y
    x = np.stack([fold.images[i] for i in range(len(fold.images))])
    validation = eval_batches(fold.images, val, batch)
    raw = (_model(fold.size, "top:1"), Timer())
    kits = {}
    for name, how in (("kit", None), ("augmented", augment)):
        model = _model(fold.size, "top:1")
        checkpoint = Checkpoint(Run(folder / name).checkpoint, Run(folder / name).history)
        tracker = Tracker(RunState(), Phase("bench", epochs=rounds + 1), checkpoint, model,
                          history_columns("binary", "log_loss"))
        validate = Validation(validation, fold.data.y[val], batch, "binary", "log_loss",
                              lambda y, p: score("log_loss", y, p))
        kits[name] = (model, Timer(), how, checkpoint, [validate, tracker])
    for epoch in range(rounds + 1):
        raw[0].fit(x[train], y[train], batch_size=batch, epochs=1, validation_data=(x[val], y[val]),
                   verbose=0, callbacks=[raw[1]])
        for model, timer, how, _, callbacks in kits.values():
            stream, steps = train_stream(fold.images, train, y[train], how, 0, (epoch, epoch + 1), batch)
            model.fit(stream, steps_per_epoch=steps, initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                      verbose=0, callbacks=[*callbacks, timer])
    for kit in kits.values():
        kit[3].clear()
    return {"raw": min(raw[1].seconds[1:]), **{k: min(v[1].seconds[1:]) for k, v in kits.items()}}


def bench_head(fold, augment, batch, epochs):
    """A head-only phase of `epochs`: end to end (with augmentation) vs on cached features
    (computed first, and counted)."""
    from kit.config import Spec
    from kit.features import fold_features, head_of, pooled_of
    from kit.inputs import eval_batches, feature_stream, train_stream
    from kit.model import compile_model

    train, val, y = fold.train_idx, fold.val_idx, fold.y
    model = _model(fold.size, "none")
    stream, steps = train_stream(fold.images, train, y[train], augment, 0, (0, 1), batch)
    model.fit(stream, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)  # tracing, untimed
    start = time.perf_counter()
    stream, steps = train_stream(fold.images, train, y[train], augment, 0, (0, epochs), batch)
    model.fit(stream, steps_per_epoch=steps, epochs=epochs, verbose=0, shuffle=False,
              validation_data=eval_batches(fold.images, val, batch, y[val]))
    end_to_end = time.perf_counter() - start
    start = time.perf_counter()
    features, val_features = fold_features(Spec("bench"), pooled_of(model), fold, augment, batch)
    head = head_of(model)
    compile_model(head, "binary", 1e-3, False)
    stream, steps = feature_stream(features, y[train], 0, (0, epochs), batch)
    head.fit(stream, steps_per_epoch=steps, epochs=epochs, verbose=0, shuffle=False,
             validation_data=(val_features, y[val]))
    return end_to_end, time.perf_counter() - start


def bench_prefix(fold, batch, epochs, backbone):
    """A `top:1` phase of `epochs` without augmentation: end to end vs on the frozen prefix's
    cached outputs, extraction (of the training and validation images) counted. Each phase is
    its fastest epoch after an untimed first (tracing) times `epochs`."""
    from kit.backbones import BACKBONES
    from kit.config import Spec
    from kit.features import fold_features
    from kit.inputs import feature_stream, train_stream
    from kit.model import build_model, compile_model
    from kit.prefix import cut, prefix_of, suffix_of
    from kit.pretrained import set_trainable

    train, y = fold.train_idx, fold.y[fold.train_idx]
    model, base = build_model(backbone, "binary", 2, fold.size, None, 0.3)
    set_trainable(base, BACKBONES[backbone].blocks, "top:1")
    compile_model(model, "binary", 1e-4, False)
    end_to_end = _epoch(model, lambda e: train_stream(fold.images, train, y, None, 0, (e, e + 1), batch))
    start = time.perf_counter()
    features, _ = fold_features(Spec("bench"), prefix_of(model, base, cut(base)), fold, None, batch)
    extraction = time.perf_counter() - start
    trained, _ = suffix_of(model, base, cut(base))
    compile_model(trained, "binary", 1e-4, False)
    cached = _epoch(trained, lambda e: feature_stream(features, y, 0, (e, e + 1), batch))
    return epochs * end_to_end, extraction + epochs * cached


def _epoch(model, stream_of, rounds=2):
    """Seconds of `model`'s fastest epoch on `stream_of(epoch)`, after an untimed first."""
    timer = Timer()
    for epoch in range(rounds + 1):
        stream, steps = stream_of(epoch)
        model.fit(stream, steps_per_epoch=steps, initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                  verbose=0, callbacks=[timer])
    return min(timer.seconds[1:])


def bench_tta(fold, augment, batch):
    from kit.config import Spec
    from kit.predict import predict, views

    model = _model(fold.size, "none")
    seen = views(Spec("bench", tta=["hflip", "vflip"], tta_augment=2), augment)
    every = np.arange(len(fold.images))
    predict(model, fold.images, every[:batch], batch, seen[:1])  # tracing
    start = time.perf_counter()
    predict(model, fold.images, every, batch, seen)
    return len(every) / (time.perf_counter() - start), len(seen)


def bench_backbones(names, size, batch, batches):
    """[(backbone, side, images/s)] of each frozen base's forward pass (random init: the cost, not
    the weights) at one input side (or the nearest its patches or windows take), the best of a few
    batches after a warm-up one."""
    from kit.backbones import BACKBONES
    from kit.model import released
    from kit.pretrained import build_base

    rates = []
    for name in names:
        entry = BACKBONES[name]
        side = max(-(-size // entry.step) * entry.step, entry.min_size)
        images = np.random.default_rng(0).uniform(0, 255, (batch, side, side, 3)).astype("float32")
        with released():
            try:
                base = build_base(name, side, None)
            except KitError as e:  # a keras-hub class this keras-hub lacks (Kaggle's image: Swin)
                print(f"not measured: {e}", flush=True)
                continue
            base.predict_on_batch(images)  # the first call traces
            forward = functools.partial(base.predict_on_batch, images)
            rates.append((name, side, batch / _best(forward, batches)))
    return rates


def bench_tables(specs, times=5):
    """{(reader, training ids): seconds} of reading each spec's tables ({ids: spec}) as training
    does (load_data: every image found on disk) and as CV and the ensemble do (load_ids: none
    looked up): the best of `times`, in turns (a drift in the machine's speed hits all alike)."""
    from kit.data import load_data, load_ids

    runs = {(read.__name__, n): functools.partial(read, spec) for n, spec in specs.items()
            for read in (load_data, load_ids)}
    seconds = {key: [] for key in runs}
    for _ in range(times):
        for key, run in runs.items():
            seconds[key].append(_best(run, 1))
    return {key: min(s) for key, s in seconds.items()}
