"""`make bench`: speed and memory of the kit on this machine, against its targets.

    pipeline     images/s of decode + augment at 224 px on the same 256 photos: a single-threaded
                 loop; plain thread and process pools running the kit's own functions with 1, 2
                 and every core's worker (the ceiling; threads k / 1: how it scales to more
                 cores); the kit's stream without the image cache       >= 0.9x the best pool
                 and as it trains (decoded once, augmented each epoch)  >= 2x the loop
    records      images/s of the image cache's filling pass over those photos as files and as
                 an HDF5 of their encoded bytes keyed by name (ISIC 2024's)  >= 0.8x the files
    overhead     one epoch of the kit's training (its stream, callbacks and checkpoint) vs raw
                 model.fit on the same model and in-memory arrays                      <= 1.05x
                 (and with the default augmentation, which on a CPU shares the cores with the
                 model: reported, no target)
    head         the default head-only phase (20 epochs) on cached features vs end to end  >= 5x
    prefix       the default fine-tuning phase (top:1, 20 epochs) on the frozen prefix's cached
                 outputs vs end to end, VGG16 and ResNet50, no augmentation, extraction counted
                                                                                        >= 3x
    options      an epoch (top:2) with each training option (focal, smoothing, ema, accumulate,
                 lr_mult, mixup) against the plain one
    tta          prediction with 5 test-time views, images/s
    scaling      one fold at 1x, 4x and 16x the images, each in a fresh process: peak memory
                 while the fold runs (16x <= 1.3x the 1x) and wall time (every point within
                 20% of the least-squares line through them: linear growth)
    make all     the peak memory of 3 rounds of vgg16 + resnet50 runs in one process against
                 one round: finished runs are released                             <= 1.1x
    tables       a competition's tables (labels CSV, sample submission, an empty file per image)
                 read as training does (load_data: every image found) and as CV and the ensemble
                 do (load_ids: none looked up), 10k and 200k training ids (as many test ids):
                 time grows as the ids, 200k / 10k (linear: 20x; sets and dicts of 200k ids,
                 past the CPU's caches, cost ~1.3x more an id here; quadratic: 400x) <= 30x
    backbones    images/s of a frozen base's forward pass, a handful of backbones at one size
                 (`make bench backbones=1`, or a list: backbones=efficientnetb0,convnext_tiny):
                 their costs compared on this machine

Results: a table on stdout and runs/bench/bench.csv. Synthetic JPEGs, random-init backbones.
Times are the best of several runs (as timeit does): a shared machine only ever adds time.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import yaml
from PIL import Image

from kit.bench import timings
from kit.files import atomic_path, write_csv, write_text

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


def hdf5_photos(paths, path):
    """The photos' encoded bytes as an HDF5 file of one entry per photo, keyed by its name, as
    ISIC 2024's (made once); the records' names."""
    if not path.is_file():
        import h5py
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            for p in paths:
                f.create_dataset(Path(p).stem, data=np.bytes_(Path(p).read_bytes()))
    return [f"{path}::{Path(p).stem}" for p in paths]


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


def tables(folder, n):
    """The spec of a competition of n training ids (labels in a CSV) and n test ids (the sample
    submission's), each image an empty file: the tables' cost, not the images' (made once)."""
    data = Path(folder) / f"tables-{n}"
    if not (data / "sample_submission.csv").is_file():  # written last: the folder is whole
        ids = [f"{i:07d}" for i in range(n)]
        for side, prefix in (("train", ""), ("test", "t")):
            (data / side).mkdir(parents=True, exist_ok=True)
            for i in ids:
                (data / side / f"{prefix}{i}.jpg").touch()
        pd.DataFrame({"id": ids, "label": ["a", "b"] * (n // 2)}).to_csv(data / "train.csv", index=False)
        pd.DataFrame({"id": [f"t{i}" for i in ids], "a": 0.5}).to_csv(data / "sample_submission.csv",
                                                                      index=False)
    from kit.config import Spec

    return Spec("bench", data_dir=str(data), task="binary", metric="log_loss")


def scale_run(n, folder, backbones=("vgg16",), rounds=1):
    """One fold on the first n photos (of each backbone, `rounds` times, as make all would),
    streaming from disk (no caches): prints seconds and peak memory as JSON. Run in a fresh
    process by _fresh."""
    from kit.train import run_fold

    phase = {"name": "ft", "trainable": "top:1", "epochs": 1, "lr": 1e-4, "patience": 0}
    spec = competition(folder, n, image_size=64, batch_size=32, n_folds=2, augment=[], schedule=[phase],
                       image_cache="off", feature_cache=False, prefix_cache="off")  # stream from disk
    sampler = _RssSampler()
    start = time.perf_counter()
    for round in range(rounds):
        for backbone in backbones:
            run_fold(spec, backbone, round % 2, force=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"images": n, "seconds": seconds, "run_peak_mb": sampler.stop(),
                      "process_peak_mb": _high_water_mb()}))


def _high_water_mb():
    """This process's peak resident memory since it started (VmHWM: ru_maxrss would count the
    parent's memory at the fork that started it)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


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
    code = f"from kit.bench.bench import scale_run; scale_run(*{args!r})"
    runs = []
    for _ in range(times):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"seconds": min(r["seconds"] for r in runs), "run_peak_mb": max(r["run_peak_mb"] for r in runs),
            "process_peak_mb": max(r["process_peak_mb"] for r in runs)}


class Table:
    """The rows measured: printed as they come, saved as bench.csv (measure, value, unit, target,
    pass). A quick run's sizes are too small for its targets: it passes none and fails none."""

    def __init__(self, quick=False):
        self.rows, self.quick = [], quick

    def __call__(self, name, value, unit, target=None, ok=None):
        verdict = "" if ok is None else "quick" if self.quick else "yes" if ok else "NO"
        self.rows.append({"measure": name, "value": round(value, 3), "unit": unit, "target": target or "",
                          "pass": verdict})
        print(f"{name:52s} {value:10.3f} {unit:10s} {target or '':12s} {self.rows[-1]['pass']}", flush=True)


def run(quick=False, backbones=()):
    """Every measurement, printed and saved; quick=True is a smoke run with tiny sizes.
    `backbones`: only the frozen-base comparison, of those backbones at 224 px."""
    from kit.augment import Augmenter, serialized
    from kit.backbones import COMPARED
    from kit.config import Spec

    keras.utils.set_random_seed(0)
    row = Table(quick and not backbones)
    side = 224 if backbones or not quick else 112
    quick_ones = ("efficientnetb0", "dinov2_small", "swin_tiny")  # one of each kind of base
    chosen = backbones or (quick_ones if quick else COMPARED)
    for name, at, rate in timings.bench_backbones(chosen, side, 8 if quick else 16, 1 if quick else 3):
        row(f"frozen base forward pass: {name} at {at}px", rate, "images/s")
    if backbones:
        return _save(row.rows, "bench.csv")
    augment = Augmenter(serialized(Spec("bench").augment))
    _pipeline(row, augment, quick)
    _training(row, augment, quick)
    _memory(row, quick)
    _tables(row, quick)
    return _save(row.rows, "quick.csv" if quick else "bench.csv")  # a quick run keeps the full one


def _pipeline(row, augment, quick):
    n, size = (32, 32) if quick else (256, 224)
    paths = photos(ROOT / "photos", n)
    rates, counts = timings.bench_pipeline(paths, size, augment)
    for name, rate in rates.items():
        row(f"pipeline at {size}px: {name}", rate, "images/s")
    pools = [f"{kind} {k}" for kind in ("threads", "processes") for k in counts]
    best = max(pools, key=rates.get)
    ratio = rates["no cache"] / rates[best]
    row(f"pipeline: kit without the image cache / best pool ({best})", ratio, "x", ">= 0.9",
        ratio >= 0.9)
    for k in counts[1:]:
        row(f"pipeline: plain threads, {k} workers / 1", rates[f"threads {k}"] / rates["threads 1"], "x")
    ratio = rates["kit"] / rates["loop"]
    row("pipeline: kit as it trains (decoded once) / loop", ratio, "x", ">= 2", ratio >= 2)
    rates = timings.bench_records(paths, hdf5_photos(paths, ROOT / f"photos-{n}.hdf5"), size)
    row(f"records at {size}px: image files", rates["files"], "images/s")
    row(f"records at {size}px: HDF5 of the same images", rates["records"], "images/s")
    ratio = rates["records"] / rates["files"]
    row("records: HDF5 / image files, decode rate", ratio, "x", ">= 0.8", ratio >= 0.8)


def _training(row, augment, quick):
    from kit.folds import load_fold

    n, size, batch = (32, 32, 8) if quick else (768, 96, 32)

    def fold_of(n, size=size):
        return load_fold(competition(ROOT / "fold", n, image_size=size, n_folds=4, image_cache="memory"),
                         "resnet50", 0)
    epoch = timings.bench_overhead(fold_of(n), augment, batch, ROOT, 1 if quick else 5)
    row("training epoch: raw model.fit on arrays", epoch["raw"], "s")
    row("training epoch: kit, same images", epoch["kit"], "s")
    overhead = epoch["kit"] / epoch["raw"]
    row("training epoch: kit / raw", overhead, "x", "<= 1.05", overhead <= 1.05)
    row("training epoch: kit with default augmentation", epoch["augmented"], "s")
    row("training epoch: augmented kit / raw", epoch["augmented"] / epoch["raw"], "x")
    head_epochs = 2 if quick else default_epochs(0)
    small = fold_of(min(n, 256))
    end_to_end, cached = timings.bench_head(small, augment, batch, head_epochs)
    row("head phase: end to end", end_to_end, "s")
    row("head phase: cached features (incl. extraction)", cached, "s")
    row("head phase: speed-up", end_to_end / cached, "x", ">= 5", end_to_end / cached >= 5)
    top_epochs = 2 if quick else default_epochs(1)
    prefix_fold = fold_of(min(n, 256), 32 if quick else 160)
    for backbone in ("vgg16", "resnet50"):
        end_to_end, cached = timings.bench_prefix(prefix_fold, batch, top_epochs, backbone)
        row(f"top:1 phase, {backbone}: end to end", end_to_end, "s")
        row(f"top:1 phase, {backbone}: frozen prefix cached (incl. extraction)", cached, "s")
        row(f"top:1 phase, {backbone}: speed-up", end_to_end / cached, "x", ">= 3", end_to_end / cached >= 3)
    for name, seconds in (options := timings.bench_options(small, batch, 1 if quick else 3, quick)).items():
        row(f"training option {name}: epoch / plain", seconds / options["plain"], "x")
    rate, n_views = timings.bench_tta(small, augment, batch)
    row(f"prediction with {n_views} TTA views", rate, "images/s")


def default_epochs(phase):
    """The epochs of the default schedule's phase: what a user's phase runs by default."""
    from kit.config import Spec
    return Spec("bench").schedule[phase].epochs


def _memory(row, quick):
    base = 16 if quick else 128
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
    pair, rounds = ("vgg16", "resnet50"), (1, 2 if quick else 3)
    one, many = (_fresh(1, base, pair, r)["run_peak_mb"] for r in rounds)
    row(f"make all: peak memory of {rounds[1] * 2} runs", many, "MB")
    row(f"make all: {rounds[1] * 2} runs / {rounds[0] * 2} runs, peak memory", many / one, "x", "<= 1.1",
        many / one <= 1.1)


def _tables(row, quick):
    small, big = (500, 10000) if quick else (10000, 200000)
    seconds = timings.bench_tables({n: tables(ROOT / "tables", n) for n in (small, big)}, 2 if quick else 5)
    for (read, n), value in seconds.items():
        row(f"tables of {n} ids: {read}", value, "s")
    for read in ("load_data", "load_ids"):
        growth = seconds[read, big] / seconds[read, small]
        row(f"tables: {read}, {big} / {small} ids", growth, "x", "<= 30", growth <= 30)


def _save(rows, name):
    write_csv(ROOT / name, pd.DataFrame(rows))
    print(f"saved {ROOT / name}")
    return pd.DataFrame(rows)
