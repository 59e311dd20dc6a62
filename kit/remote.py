"""Folds on Kaggle's GPUs: one kernel per fold x backbone, pushed, watched and collected.

`collect` puts each finished kernel's run folder where a local run would be
(runs/<slug>/<backbone>/fold<K>/), so `cv` and `ensemble` use them alike.
"""
import json
import shutil
import tempfile
from pathlib import Path

from kit import KitError, kaggle_client
from kit.bundle import build_bundle, bundles, kernel_id
from kit.runs import run_of


def push(spec, backbone, fold, user):
    folder = build_bundle(spec, backbone, fold, user)
    url, version = kaggle_client.push(folder)
    print(f"pushed {kernel_id(folder)} (version {version}): {url}")


def push_all(spec, user, force=False):
    """One kernel per fold x backbone; folds finished here are not pushed again unless forced."""
    for backbone in spec.backbones:
        for fold in range(spec.n_folds):
            if run_of(spec, backbone, fold).finished() and not force:
                print(f"{backbone}/fold{fold} is finished here: not pushed (force=1 pushes it)")
                continue
            push(spec, backbone, fold, user)


def status(spec):
    for backbone, fold, kernel in bundles(spec):
        state, failure = kaggle_client.kernel_status(kernel)
        print(f"{backbone}/fold{fold}  {kernel}  {state}{'  ' + failure if failure else ''}")


def collect(spec, force=False):
    """Download finished kernels' run folders; a kernel that ended in error shows its log's tail."""
    errors = []
    for backbone, fold, kernel in bundles(spec):
        state, failure = kaggle_client.kernel_status(kernel)
        run = run_of(spec, backbone, fold)
        if state == "ERROR":
            reason = f": {failure}" if failure else ""
            errors.append(f"{kernel} ended in error{reason}\n{_log_tail(kernel)}")
        elif state != "COMPLETE":
            print(f"{backbone}/fold{fold}: {state}")
        elif run.finished() and not force:
            print(f"{backbone}/fold{fold}: finished here already, kept (force=1 replaces it)")
        else:
            _fetch(spec, backbone, fold, kernel, run.path)
    if errors:
        raise KitError("\n".join(errors))


def _fetch(spec, backbone, fold, kernel, out):
    spec.runs_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spec.runs_path, prefix=".collect-") as tmp:
        kaggle_client.kernel_output(kernel, tmp)
        got = run_of(spec, backbone, fold, root=Path(tmp) / "runs" / spec.slug)  # /kaggle/working/runs/...
        if not got.finished():
            raise KitError(f"{kernel} is COMPLETE but its output has no {got.test.relative_to(tmp)}")
        old = out.with_name(out.name + ".old")
        if out.exists():  # replaced only once the new folder is whole; kept until then
            out.rename(old)
        out.parent.mkdir(parents=True, exist_ok=True)
        got.path.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    print(f"{backbone}/fold{fold}: collected {kernel} into {out}")


def _log_tail(kernel, lines=15):
    """The last lines a kernel printed (Kaggle keeps its log as JSON records of stream output)."""
    with tempfile.TemporaryDirectory() as tmp:
        kaggle_client.kernel_output(kernel, tmp, pattern="^$")  # no files, just the log
        logs = list(Path(tmp).glob("*.log"))
        text = logs[0].read_text() if logs else ""
    try:
        text = "".join(record.get("data", "") for record in json.loads(text))
    except (ValueError, TypeError, AttributeError):
        pass
    return "\n".join("  | " + line for line in text.rstrip().splitlines()[-lines:]) or "  | (no log)"
