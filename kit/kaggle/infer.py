"""A release (kit/kaggle/release.py) predicting the test images that are there when it runs: on a code
competition's re-run, Kaggle's hidden test set. What a code-competition kernel runs.

Test ids and images come from the data folder at run time, never from a list saved at build
time. Each model is built again from the registry and given its released weights
(kit/portable.py), one in memory at a time; the members' predictions become the submission by
the path `make ensemble` takes (ensemble.member_test, submission.submitted), checked against the
sample submission present at run time before the CSV is written, atomically.
"""
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from kit import KitError
from kit.augment import Augmenter, serialized
from kit.cache import test_images
from kit.data import load_test
from kit.ensemble import member_test
from kit.files import atomic_path, read_csv, write_text
from kit.kaggle.release import load_release
from kit.metrics import from_columns
from kit.model import released
from kit.portable import load_portable
from kit.predict import predict, views
from kit.submission import FLOAT, problems, submitted


def infer(folder, out, overrides=None, slug=None, log=print):
    """Predict the current test images with the release in `folder` (of competition `slug`, when
    given); the submission goes to `out`, what made it beside it (.json). Returns `out`."""
    if str(out).endswith(("/", os.sep)) or Path(out).is_dir():
        raise KitError(f"out={out} is a folder: give the submission's file, e.g. "
                       f"out={Path(out) / 'submission.csv'}")
    release = load_release(folder, overrides)
    spec, recipe = release.spec, release.recipe
    if slug and slug != spec.slug:
        raise KitError(f"{folder} is a release of {spec.slug}, not of {slug}")
    test = load_test(spec)  # the demo's data is generated first, as for training
    sample = read_csv(spec.data_path / spec.sample_submission, "sample submission")
    if list(sample.columns) != recipe["submission"]["columns"]:
        raise KitError(f"the sample submission's columns ({', '.join(sample.columns)}) are not the release's "
                       f"({', '.join(recipe['submission']['columns'])}): a release of another competition?")
    seen = views(spec, Augmenter(serialized(spec.augment)))
    runs = [(m["name"], run) for m in recipe["members"] for run in m["runs"]]
    how = recipe["method"] + ("+pp" if recipe["postprocess"] else "")  # as make release and make cv say it
    log(f"release {release.folder}: {how} of {', '.join(m['name'] for m in recipe['members'])}, "
        f"CV {recipe['metric']} {recipe['cv']}")
    log(f"{len(test)} test images; {len(runs)} models ({', '.join(m['name'] for m in recipe['members'])}) "
        f"x {len(seen)} test-time view(s); ensemble: {how}")
    images, predictions, started = {}, {}, time.perf_counter()
    for k, (name, run) in enumerate(runs):
        size = run["image_size"]
        if size not in images:
            images[size] = test_images(spec, test, size)
        start = time.perf_counter()
        with released():  # one model in memory at a time
            model = load_portable(release.folder / run["file"], run["backbone"], spec.task,
                                  len(recipe["classes"]), size)
            p = predict(model, images[size], np.arange(len(test)), spec.batch_size, seen, spec.workers)
            del model
        predictions.setdefault(name, {}).setdefault(run["member"], []).append(from_columns(spec.task, p))
        rate = len(test) * len(seen) / (time.perf_counter() - start)
        left = (len(runs) - k - 1) * len(test) * len(seen) / rate
        log(f"{name} fold {run['fold']}: {rate:.0f} images/s; about {left / 60:.1f} min left "
            f"for {len(runs) - k - 1} more model(s)")
    members = [member_test(parts) for parts in predictions.values()]
    submission = submitted(spec, sample, recipe["classes"], test["id"].tolist(), members, recipe["method"],
                           recipe["ensemble"], recipe["postprocess"])
    with atomic_path(out) as tmp:
        submission.to_csv(tmp, index=False, float_format=FLOAT)
        found = problems(tmp, sample, spec, recipe["classes"])
        if found:
            raise KitError(f"the submission would not be valid: {'; '.join(found)}")
    about = {"competition": spec.slug, "release": str(release.folder), "method": how,
             "metric": recipe["metric"], "cv": recipe["cv"],
             "runs": [f"{name}/fold{run['fold']}" for name, run in runs], "spec": dataclasses.asdict(spec)}
    write_text(Path(out).with_suffix(".json"), json.dumps(about, indent=1) + "\n")
    log(f"wrote {out}: {len(submission)} rows in {(time.perf_counter() - started) / 60:.1f} min")
    return out
