"""`make bench`: speed and memory of the kit on this machine, against its targets.

    pipeline     images/s of the kit's input pipeline as it trains (images decoded once, kept;
                 augmented each epoch) vs a single-threaded loop doing the same decode + augment
                 for every image                                        target: >= 2x
                 (also without the image cache: parallelism alone, which albumentations'
                 Python, holding the GIL, limits on 2 cores)
    overhead     one epoch of the kit's training (its stream, callbacks and checkpoint) vs raw
                 model.fit on the same model and in-memory arrays                      <= 1.05x
                 (and with the default augmentation, which on a CPU shares the cores with the
                 model: reported, no target)
    head         the default head-only phase (20 epochs) on cached features vs end to end  >= 5x
    options      an epoch (top:2) with each training option (focal, smoothing, ema, accumulate,
                 lr_mult, mixup) against the plain one
    tta          prediction with 5 test-time views, images/s
    scaling      one fold at 1x, 4x and 16x the images, each in a fresh process: peak memory
                 while the fold runs (16x <= 1.3x the 1x) and wall time (every point within
                 20% of the least-squares line through them: linear growth)
    make all     the peak memory of 3 rounds of vgg16 + resnet50 runs in one process against
                 one round: finished runs are released                             <= 1.1x
    backbones    images/s of a frozen base's forward pass, a handful of backbones at one size
                 (`make bench backbones=1`, or a list: backbones=efficientnetb0,convnext_tiny):
                 their costs compared on this machine

Results: a table on stdout and runs/bench/bench.csv. Synthetic JPEGs, random-init backbones.
Times are the best of several runs (as timeit does): a shared machine only ever adds time.
"""
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import yaml
from PIL import Image

from kit.files import write_csv, write_text

ROOT = Path("runs/bench")


def photos(folder, n, side=(400, 300)):
    """n photo-sized JPEGs of smooth random colour (made once, then reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        if not path.is_file():
            small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize(side, Image.BICUBIC).save(path, quality=90)
        paths.append(str(path))
    return paths


class Timer(keras.callbacks.Callback):
    """Seconds of each epoch; put last among the callbacks, so the kit's own ones count."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def bench_pipeline(paths, size, augment):
    from kit.cache import Images, load_images
    from kit.decode import read_rgb
    from kit.inputs import train_stream

    def loop():
        for i, p in enumerate(paths):
            augment(read_rgb(p, size), 0, 0, i)

    def stream(images):
        ds, _ = train_stream(images, np.arange(len(paths)), np.zeros(len(paths), np.float32), augment, 0,
                             (0, 1), 32)
        for _ in ds:
            pass
    cached, _ = load_images(paths, size, "memory")  # what the kit's check pass fills anyway
    rates = {}
    for name, run in (("loop", loop), ("no cache", lambda: stream(Images(paths, size))),
                      ("kit", lambda: stream(cached))):
        run()  # warm: file cache, tracing
        rates[name] = len(paths) / _best(run, 3)
    return rates


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
    from kit.base import block_factors, set_trainable
    from kit.model import build_model, compile_model

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


def bench_overhead(fold, augment, batch, rounds=3):
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
        checkpoint = Checkpoint(Run(ROOT / name).checkpoint, Run(ROOT / name).history)
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
    from kit.features import fold_features, head_of
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
    features, val_features = fold_features(Spec("bench"), model, fold, augment, batch)
    head = head_of(model)
    compile_model(head, "binary", 1e-3, False)
    stream, steps = feature_stream(features, y[train], 0, (0, epochs), batch)
    head.fit(stream, steps_per_epoch=steps, epochs=epochs, verbose=0, shuffle=False,
             validation_data=(val_features, y[val]))
    return end_to_end, time.perf_counter() - start


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


def competition(folder, n, **keys):
    """The spec of a two-class competition of the first n photos (and 32 test photos), made
    once under `folder`, with the spec `keys` (a random-init binary task by default)."""
    folder = Path(folder)
    data = folder / f"data-{n}"
    if not data.is_dir():
        paths = photos(folder / "photos", n + 32)
        (data / "train").mkdir(parents=True)
        (data / "test").mkdir()
        for i, p in enumerate(paths):
            (data / ("train" if i < n else "test") / Path(p).name).symlink_to(Path(p).resolve())
        names = [Path(p).stem for p in paths]
        train = pd.DataFrame({"id": names[:n], "label": ["a", "b"] * (n // 2)})
        train.to_csv(data / "train.csv", index=False)
        sample = pd.DataFrame({"id": names[n:], "a": 0.5, "b": 0.5})
        sample.to_csv(data / "sample_submission.csv", index=False)
    spec = {"slug": "bench", "data_dir": str(data), "runs_dir": str(folder / f"runs-{n}"), "task": "binary",
            "metric": "log_loss", "weights": None, **keys}
    write_text(folder / f"bench-{n}.yaml", yaml.safe_dump(spec))
    from kit.config import load_spec

    return load_spec(str(folder / f"bench-{n}.yaml"))


def scale_run(n, folder, backbones=("vgg16",), rounds=1):
    """One fold on the first n photos (of each backbone, `rounds` times, as make all would),
    streaming from disk (no caches): prints seconds and peak memory as JSON. Run in a fresh
    process by _fresh."""
    from kit.train import run_fold

    phase = {"name": "ft", "trainable": "top:1", "epochs": 1, "lr": 1e-4, "patience": 0}
    spec = competition(folder, n, image_size=64, batch_size=32, n_folds=2, augment=[], schedule=[phase],
                       image_cache="off", feature_cache=False)  # stream from disk
    sampler = _RssSampler()
    start = time.perf_counter()
    for round in range(rounds):
        for backbone in backbones:
            run_fold(spec, backbone, round % 2, force=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"images": n, "seconds": seconds, "run_peak_mb": sampler.stop(),
                      "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


class _RssSampler:
    """The largest resident memory seen while the run goes on (every 20 ms): the process's
    lifetime peak is set by TensorFlow's start-up and would hide growth with the data."""

    def __init__(self):
        import threading

        self.peak, self.done = 0.0, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self.done.wait(0.02):
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page / 2**20)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.peak


def bench_scaling(base, scales=(1, 4, 16), times=3):
    """Each scale `times` times in a fresh process: the fastest wall time, the largest peak."""
    return [{"images": base * scale, **_fresh(times, base * scale)} for scale in scales]


def _fresh(times, n, backbones=("vgg16",), rounds=1):
    """scale_run `times` times, each in a fresh process: the fastest, the largest peaks."""
    args = (n, str(ROOT / "scaling"), backbones, rounds)
    code = f"from kit.bench import scale_run; scale_run(*{args!r})"
    runs = []
    for _ in range(times):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"seconds": min(r["seconds"] for r in runs), "run_peak_mb": max(r["run_peak_mb"] for r in runs),
            "process_peak_mb": max(r["process_peak_mb"] for r in runs)}


def bench_backbones(names, size, batch, batches):
    """[(backbone, side, images/s)] of each frozen base's forward pass (random init: the cost, not
    the weights) at one input side (or the nearest its patches or windows take), the best of a few
    batches after a warm-up one."""
    from kit.backbones import BACKBONES
    from kit.base import build_base
    from kit.model import released

    rates = []
    for name in names:
        entry = BACKBONES[name]
        side = max(-(-size // entry.step) * entry.step, entry.min_size)
        images = np.random.default_rng(0).uniform(0, 255, (batch, side, side, 3)).astype("float32")
        with released():
            base = build_base(name, side, None)
            base.predict_on_batch(images)  # the first call traces
            forward = functools.partial(base.predict_on_batch, images)
            rates.append((name, side, batch / _best(forward, batches)))
    return rates


def run(quick=False, backbones=()):
    """Every measurement, printed and saved; quick=True is a smoke run with tiny sizes.
    `backbones`: only the frozen-base comparison, of those backbones at 224 px."""
    from kit.augment import Augmenter, serialized
    from kit.backbones import COMPARED
    from kit.config import Spec

    keras.utils.set_random_seed(0)
    n, size, batch, base = (32, 32, 8, 16) if quick else (768, 96, 32, 128)
    rows = []

    def row(name, value, unit, target=None, ok=None):
        rows.append({"measure": name, "value": round(value, 3), "unit": unit, "target": target or "",
                     "pass": "" if ok is None else ("yes" if ok else "NO")})
        print(f"{name:48s} {value:10.3f} {unit:10s} {target or '':12s} {rows[-1]['pass']}", flush=True)

    side = 224 if backbones or not quick else 112
    quick_ones = ("efficientnetb0", "dinov2_small", "swin_tiny")  # one of each kind of base
    chosen = backbones or (quick_ones if quick else COMPARED)
    for name, at, rate in bench_backbones(chosen, side, 8 if quick else 16, 1 if quick else 3):
        row(f"frozen base forward pass: {name} at {at}px", rate, "images/s")
    if backbones:
        return _save(rows)
    augment = Augmenter(serialized(Spec("bench").augment))
    paths = photos(ROOT / "photos", n)

    rates = bench_pipeline(paths, 128 if not quick else 32, augment)
    row("pipeline: single-threaded loop", rates["loop"], "images/s")
    row("pipeline: kit without the image cache", rates["no cache"], "images/s")
    row("pipeline: kit without cache / loop", rates["no cache"] / rates["loop"], "x")
    row("pipeline: kit as it trains (decoded once)", rates["kit"], "images/s")
    row("pipeline: kit / loop", rates["kit"] / rates["loop"], "x", ">= 2", rates["kit"] / rates["loop"] >= 2)
    from kit.folds import load_fold

    def fold_of(n):
        return load_fold(competition(ROOT / "fold", n, image_size=size, n_folds=4, image_cache="memory"),
                         "resnet50", 0)
    epoch = bench_overhead(fold_of(n), augment, batch, 1 if quick else 3)
    row("training epoch: raw model.fit on arrays", epoch["raw"], "s")
    row("training epoch: kit, same images", epoch["kit"], "s")
    overhead = epoch["kit"] / epoch["raw"]
    row("training epoch: kit / raw", overhead, "x", "<= 1.05", overhead <= 1.05)
    row("training epoch: kit with default augmentation", epoch["augmented"], "s")
    row("training epoch: augmented kit / raw", epoch["augmented"] / epoch["raw"], "x")
    head_epochs = 2 if quick else Spec("bench").schedule[0].epochs
    small = fold_of(min(n, 256))
    end_to_end, cached = bench_head(small, augment, batch, head_epochs)
    row("head phase: end to end", end_to_end, "s")
    row("head phase: cached features (incl. extraction)", cached, "s")
    row("head phase: speed-up", end_to_end / cached, "x", ">= 5", end_to_end / cached >= 5)
    for name, seconds in (options := bench_options(small, batch, 1 if quick else 3, quick)).items():
        row(f"training option {name}: epoch / plain", seconds / options["plain"], "x")
    rate, n_views = bench_tta(small, augment, batch)
    row(f"prediction with {n_views} TTA views", rate, "images/s")
    scaled = bench_scaling(base, times=1 if quick else 3)
    for r in scaled:
        row(f"scaling: {r['images']} images, wall time", r["seconds"], "s")
        row(f"scaling: {r['images']} images, peak memory of the run", r["run_peak_mb"], "MB")
        row(f"scaling: {r['images']} images, peak memory of the process", r["process_peak_mb"], "MB")
    memory = scaled[-1]["run_peak_mb"] / scaled[0]["run_peak_mb"]
    row("scaling: peak memory 16x / 1x", memory, "x", "<= 1.3", memory <= 1.3)
    seconds, counts = np.array([r["seconds"] for r in scaled]), np.array([r["images"] for r in scaled])
    slope, intercept = np.polyfit(counts, seconds, 1)
    off = np.abs(seconds / (intercept + slope * counts) - 1).max()
    row("scaling: time, largest gap to a straight line", off, "fraction", "<= 0.2", off <= 0.2)
    row("scaling: time per extra image", slope * 1000, "ms")
    pair, rounds = ("vgg16", "resnet50"), (1, 3)
    one, many = (_fresh(1, base, pair, r)["run_peak_mb"] for r in rounds)
    row(f"make all: peak memory of {rounds[1] * 2} runs", many, "MB")
    row(f"make all: {rounds[1] * 2} runs / {rounds[0] * 2} runs, peak memory", many / one, "x", "<= 1.1",
        many / one <= 1.1)
    return _save(rows)


def _save(rows):
    write_csv(ROOT / "bench.csv", pd.DataFrame(rows))
    print(f"saved {ROOT / 'bench.csv'}")
    return pd.DataFrame(rows)
