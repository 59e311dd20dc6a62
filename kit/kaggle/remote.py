"""Kaggle from here: folds trained on Kaggle's GPUs (one kernel per fold x backbone, pushed,
watched and collected), a code competition's submission (the release published as a dataset,
the inference kernel pushed, run and submitted), and the wheels dataset of what kernels need
beyond Kaggle's image.

`collect` puts each finished kernel's run folder where a local run would be
(runs/<slug>/<backbone>/fold<K>/), so `cv` and `ensemble` use them alike.
"""
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kit import KitError
from kit.files import replace_folder, write_text
from kit.kaggle import client
from kit.kaggle.bundle import WHEELS_DATASET, build_bundle, build_inference_bundle, bundles, kernel_id
from kit.kaggle.release import load_release, release_dir
from kit.members import check_members
from kit.runs import run_of, variants
from kit.runtime import IMAGE_PYTHON, MANIFEST, WHEELS, pins

# Kaggle's notebooks run on x86_64 Linux: wheels of these platforms install there.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


def push(spec, backbone, fold, user):
    folder = build_bundle(spec, backbone, fold, user)
    url, version = client.push(folder)
    print(f"pushed {kernel_id(folder)} (version {version}): {url}")


def push_all(spec, user, force=False):
    """One kernel per fold x member; folds finished here are not pushed again unless forced."""
    check_members(spec)
    for member in (v.name for v in variants(spec)):
        for fold in range(spec.n_folds):
            if run_of(spec, member, fold).finished() and not force:
                print(f"{member}/fold{fold} is finished here: not pushed (force=1 pushes it)")
                continue
            push(spec, member, fold, user)


def publish(spec, message=""):
    """runs/<slug>/release/ as a Kaggle dataset: created, or a new version when it changed since
    the last publish (runs/<slug>/published.json remembers what was sent)."""
    release = load_release(release_dir(spec))
    sent = {"dataset": release.dataset, "digest": release.digest}
    if _published(spec) == sent:
        print(f"{release.dataset}: the release has not changed since it was published; nothing sent")
        return
    recipe = release.recipe
    models = sum(len(m["runs"]) for m in recipe["members"])
    notes = message or f"{recipe['method']} of {models} models, CV {recipe['metric']} {recipe['cv']}"
    done = client.publish(release.folder, release.dataset, notes)
    write_text(spec.runs_path / "published.json", json.dumps(sent) + "\n")
    print(f"{release.dataset}: {done} ({notes}); its inference kernel: make inference-kernel")


def _published(spec):
    path = spec.runs_path / "published.json"
    return json.loads(path.read_text()) if path.is_file() else None


def submit_code(spec, user, message, version=0, timeout=540, poll=60):
    """Push the inference kernel, wait until its run is COMPLETE, submit that version's
    submission.csv. `version`: submit a version pushed before instead (no push, no wait). The
    release must hold the current runs and be published as it is."""
    release = load_release(release_dir(spec))
    stale = release.stale(spec)
    if stale:
        raise KitError(f"retrained since make release: {', '.join(stale)}: make release and make publish "
                       f"again")
    if _published(spec) != {"dataset": release.dataset, "digest": release.digest}:
        raise KitError(f"{release.folder} is not published as it is now: make publish first (the kernel "
                       f"reads the dataset {release.dataset})")
    folder = build_inference_bundle(spec, user)
    kernel = kernel_id(folder)
    if not version:
        url, version = client.push(folder)
        print(f"pushed {kernel} (version {version}): {url}", flush=True)
        _wait(kernel, timeout, poll)
    try:
        answer, ref = client.submit_code(spec.slug, kernel, version, message or f"{kernel} v{version}")
    except KitError as e:
        raise KitError(f"{e} (a kernel pushed a moment ago may not be accepted yet: submit the same "
                       f"version again with make submit-code version={version})") from None
    print(f"{answer} (submission {ref}): {kernel} version {version}")


def _wait(kernel, timeout, poll):
    """Poll the kernel's run until it ends; COMPLETE, or one error with its log's tail."""
    deadline, last = time.monotonic() + timeout * 60, None
    while True:
        state, failure = client.kernel_status(kernel)
        if state != last:
            print(f"{kernel}: {state}", flush=True)
            last = state
        if state == "COMPLETE":
            return
        if state in ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED"):
            raise KitError(f"{kernel} ended in {state.lower()}{': ' + failure if failure else ''}\n"
                           f"{_log_tail(kernel)}")
        if time.monotonic() > deadline:
            raise KitError(f"{kernel} is still {state} after {timeout} minutes: look again with make "
                           f"submit-code version=<its version> once it is COMPLETE")
        time.sleep(poll)


def status(spec):
    for backbone, fold, kernel in bundles(spec):
        state, failure = client.kernel_status(kernel)
        print(f"{backbone}/fold{fold}  {kernel}  {state}{'  ' + failure if failure else ''}")


def collect(spec, force=False):
    """Download finished kernels' run folders; a kernel that ended in error shows its log's tail."""
    errors = []
    for backbone, fold, kernel in bundles(spec):
        state, failure = client.kernel_status(kernel)
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


def _fetch(spec, member, fold, kernel, out):
    with run_of(spec, member, fold).claim() as mine:
        if not mine:
            print(f"{member}/fold{fold}: being trained here by another process: not replaced")
            return
        _replace(spec, member, fold, kernel, out)


def _replace(spec, backbone, fold, kernel, out):
    spec.runs_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spec.runs_path, prefix=".collect-") as tmp:
        client.kernel_output(kernel, tmp)
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
        client.kernel_output(kernel, tmp, pattern="^$")  # no files, just the log
        logs = list(Path(tmp).glob("*.log"))
        text = logs[0].read_text() if logs else ""
    try:
        text = "".join(record.get("data", "") for record in json.loads(text))
    except (ValueError, TypeError, AttributeError):
        pass
    return "\n".join("  | " + line for line in text.rstrip().splitlines()[-lines:]) or "  | (no log)"


def wheels_dir(spec):
    return Path(spec.runs_dir) / WHEELS_DATASET


def build_wheels(spec, user, source=""):
    """runs/kit-wheels/: the wheels of kit/kaggle-wheels.txt for Kaggle's image (its Python, x86_64
    Linux), with their manifest and dataset-metadata.json (<user>/kit-wheels), swapped in whole.
    `source`: a folder of wheels to take them from instead of the package index."""
    wheels, folder = pins(WHEELS), wheels_dir(spec)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".kit-wheels-", dir=folder.parent))
    try:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--no-deps", "--only-binary=:all:", "--python-version", IMAGE_PYTHON,
                   *(f"--platform={p}" for p in PLATFORMS), "--dest", str(tmp),
                   *(["--no-index", "--find-links", str(source)] if source else []),
                   *(f"{name}=={version}" for name, version in wheels.items())]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise KitError(f"cannot download the wheels of kit/{WHEELS}: {last}")
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp.glob("*.whl"))}
        manifest = {"python": IMAGE_PYTHON, "packages": wheels, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        metadata = {"id": f"{user}/{WHEELS_DATASET}", "title": "kit wheels for Kaggle's image",
                    "description": f"Wheels of {', '.join(wheels)} for Python {IMAGE_PYTHON} on x86_64 "
                                   f"Linux, which kit kernels install offline; each under its own licence.",
                    "licenses": [{"name": "other"}]}
        (tmp / "dataset-metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def publish_wheels(spec):
    """runs/kit-wheels/ as the private dataset <user>/kit-wheels: created, then new versions."""
    folder = wheels_dir(spec)
    if not (folder / MANIFEST).is_file():
        raise KitError(f"no wheels at {folder}: make wheels first")
    dataset = json.loads((folder / "dataset-metadata.json").read_text())["id"]
    packages = json.loads((folder / MANIFEST).read_text())["packages"]
    done = client.publish(folder, dataset, ", ".join(f"{p} {v}" for p, v in packages.items()))
    print(f"{dataset}: {done}; kernels that need it attach it (make kernel, make inference-kernel)")
