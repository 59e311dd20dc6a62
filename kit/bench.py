"""`make bench`: speed and memory of the kit on this machine, against its targets.

    pipeline     images/s of the kit's input pipeline vs a single-threaded loop doing the same
                 decode + augment                                       target: >= 2x
    overhead     one epoch of the kit's training (its stream, augmentation, callbacks and
                 checkpoint) vs raw model.fit on the same model and in-memory arrays  <= 1.05x
    head         a head-only phase on cached features vs end to end                    >= 5x
    tta          prediction with 5 test-time views, images/s
    scaling      one fold at 1x, 4x and 16x the images, each in a fresh process: peak memory
                 (16x <= 1.3x the 1x) and wall time (cost per image within 20% of constant)

Results: a table on stdout and runs/bench/bench.csv. Synthetic JPEGs, random-init backbones.
"""
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
    from kit.cache import Images
    from kit.data import read_rgb
    from kit.inputs import train_stream

    def loop():
        for i, p in enumerate(paths):
            augment(read_rgb(p, size), 0, 0, i)

    def kit():
        ds, _ = train_stream(Images(paths, size), np.arange(len(paths)), np.zeros(len(paths), np.float32),
                             augment, 0, (0, 1), 32)
        for _ in ds:
            pass
    rates = {}
    for name, run in (("loop", loop), ("kit", kit)):
        run()  # warm: file cache, tracing
        start = time.perf_counter()
        run()
        rates[name] = len(paths) / (time.perf_counter() - start)
    return rates


def _model(size, trainable):
    from kit.backbones import BACKBONES
    from kit.model import build_model, compile_model, set_trainable

    model, base = build_model("resnet50", "binary", 2, size, None, 0.3)
    set_trainable(base, BACKBONES["resnet50"].blocks, trainable)
    compile_model(model, "binary", 1e-4, False)
    return model


def bench_overhead(images, y, augment, batch):
    """Two timed epochs each, after one untimed (tracing): the kit's stream + callbacks vs fit on
    arrays. Both validate on the same images."""
    from kit.checkpoint import Checkpoint, RunState, Tracker
    from kit.config import Phase
    from kit.inputs import eval_batches, train_stream

    n = len(images)
    train, val = np.arange(n - n // 4), np.arange(n - n // 4, n)
    x = np.stack([images[i] for i in range(n)])
    raw, kit = Timer(), Timer()
    model = _model(images.size, "top:1")
    model.fit(x[train], y[train], batch_size=batch, epochs=3, validation_data=(x[val], y[val]), verbose=0,
              callbacks=[raw])
    model = _model(images.size, "top:1")
    stream, steps = train_stream(images, train, y[train], augment, 0, (0, 3), batch)
    tracker = Tracker(RunState(), Phase("bench", epochs=3), Checkpoint(ROOT / "checkpoint"),
                      ROOT / "history.csv", model)
    validation = eval_batches(images, val, batch, y[val])
    model.fit(stream, steps_per_epoch=steps, epochs=3, validation_data=validation, verbose=0,
              callbacks=[tracker, kit])
    return sum(raw.seconds[1:]), sum(kit.seconds[1:])


def bench_head(images, y, augment, batch, epochs=8):
    """A head-only phase of `epochs`: end to end (with augmentation) vs on cached features
    (computed first, and counted)."""
    from types import SimpleNamespace

    from kit.config import Spec
    from kit.features import feature_stream, fold_features, head_of
    from kit.inputs import eval_batches, train_stream
    from kit.model import compile_model

    n = len(images)
    train, val = np.arange(n - n // 4), np.arange(n - n // 4, n)
    model = _model(images.size, "none")
    stream, steps = train_stream(images, train, y[train], augment, 0, (0, 1), batch)
    model.fit(stream, steps_per_epoch=steps, epochs=1, verbose=0)  # tracing, untimed
    start = time.perf_counter()
    stream, steps = train_stream(images, train, y[train], augment, 0, (0, epochs), batch)
    model.fit(stream, steps_per_epoch=steps, epochs=epochs, verbose=0,
              validation_data=eval_batches(images, val, batch, y[val]))
    end_to_end = time.perf_counter() - start
    start = time.perf_counter()
    fold = SimpleNamespace(images=images, train_idx=train, val_idx=val)
    features, val_features = fold_features(Spec("bench"), model, fold, augment, batch)
    head = head_of(model)
    compile_model(head, "binary", 1e-3, False)
    stream, steps = feature_stream(features, y[train], 0, (0, epochs), batch)
    head.fit(stream, steps_per_epoch=steps, epochs=epochs, verbose=0, validation_data=(val_features, y[val]))
    return end_to_end, time.perf_counter() - start


def bench_tta(images, augment, batch):
    from kit.config import Spec
    from kit.predict import predict, views

    model = _model(images.size, "none")
    seen = views(Spec("bench", tta=["hflip", "vflip"], tta_augment=2), augment)
    predict(model, images, np.arange(batch), batch, seen[:1])  # tracing
    start = time.perf_counter()
    predict(model, images, np.arange(len(images)), batch, seen)
    return len(images) / (time.perf_counter() - start), len(seen)


def scale_run(n, folder):
    """One fold on the first n photos, streaming from disk (no caches): prints seconds and peak
    memory as JSON. Run in a fresh process by bench_scaling."""
    from kit.config import load_spec
    from kit.train import run_fold

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
    write_text(folder / f"scale-{n}.yaml", yaml.safe_dump({
        "slug": "scale", "data_dir": str(data), "runs_dir": str(folder / f"runs-{n}"), "task": "binary",
        "metric": "log_loss", "weights": None, "image_size": 64, "batch_size": 32, "n_folds": 2,
        "augment": [], "image_cache": "off", "feature_cache": False,  # stream from disk
        "schedule": [{"name": "ft", "trainable": "top:1", "epochs": 1, "lr": 1e-4, "patience": 0}]}))
    spec = load_spec(str(folder / f"scale-{n}.yaml"))
    start = time.perf_counter()
    run_fold(spec, "vgg16", 0, force=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"images": n, "seconds": seconds,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_scaling(base, scales=(1, 4, 16)):
    results = []
    for scale in scales:
        code = f"from kit.bench import scale_run; scale_run({base * scale}, {str(ROOT / 'scaling')!r})"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def run(quick=False):
    """Every measurement, printed and saved; quick=True is a smoke run with tiny sizes."""
    from kit.augment import Augmenter, serialized
    from kit.cache import load_images
    from kit.config import Spec

    keras.utils.set_random_seed(0)
    n, size, batch, base = (32, 32, 8, 16) if quick else (256, 96, 32, 128)
    augment = Augmenter(serialized(Spec("bench").augment))
    paths = photos(ROOT / "photos", n)
    rows = []

    def row(name, value, unit, target=None, ok=None):
        rows.append({"measure": name, "value": round(value, 3), "unit": unit, "target": target or "",
                     "pass": "" if ok is None else ("yes" if ok else "NO")})
        print(f"{name:44s} {value:10.3f} {unit:10s} {target or '':12s} {rows[-1]['pass']}", flush=True)

    rates = bench_pipeline(paths, 128 if not quick else 32, augment)
    row("pipeline: single-threaded loop", rates["loop"], "images/s")
    row("pipeline: kit", rates["kit"], "images/s")
    row("pipeline: kit / loop", rates["kit"] / rates["loop"], "x", ">= 2", rates["kit"] / rates["loop"] >= 2)
    images, _ = load_images(paths, size, "memory")
    y = (np.arange(n) % 2).astype(np.float32).reshape(-1, 1)
    raw, kit = bench_overhead(images, y, augment, batch)
    row("training epoch: raw model.fit on arrays", raw / 2, "s")
    row("training epoch: kit", kit / 2, "s")
    row("training epoch: kit / raw", kit / raw, "x", "<= 1.05", kit / raw <= 1.05)
    end_to_end, cached = bench_head(images, y, augment, batch, epochs=2 if quick else 8)
    row("head phase: end to end", end_to_end, "s")
    row("head phase: cached features (incl. extraction)", cached, "s")
    row("head phase: speed-up", end_to_end / cached, "x", ">= 5", end_to_end / cached >= 5)
    rate, n_views = bench_tta(images, augment, batch)
    row(f"prediction with {n_views} TTA views", rate, "images/s")
    scaled = bench_scaling(base)
    for r in scaled:
        row(f"scaling: {r['images']} images, wall time", r["seconds"], "s")
        row(f"scaling: {r['images']} images, peak memory", r["peak_mb"], "MB")
    memory = scaled[-1]["peak_mb"] / scaled[0]["peak_mb"]
    row("scaling: peak memory 16x / 1x", memory, "x", "<= 1.3", memory <= 1.3)
    (a, b, c), (na, nb, nc) = [r["seconds"] for r in scaled], [r["images"] for r in scaled]
    linearity = ((c - b) / (nc - nb)) / ((b - a) / (nb - na))
    row("scaling: cost per image, 4x-16x / 1x-4x", linearity, "x", "1 +- 0.2", abs(linearity - 1) <= 0.2)
    write_csv(ROOT / "bench.csv", pd.DataFrame(rows))
    print(f"saved {ROOT / 'bench.csv'}")
    return pd.DataFrame(rows)
