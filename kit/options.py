"""Command-line options: `key=value` pairs, typed, and the competition spec the other keys
override; shared by every command (kit/cli.py, kit/kaggle/commands.py)."""
import atexit
import functools
import json
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

from kit import KitError
from kit.config import check_fold, load_spec, spec_from
from kit.data import load_data
from kit.folds import fold_warnings
from kit.members import member_spec
from kit.runs import variants


def pairs(args):
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise KitError(f"expected key=value, got {arg!r}")
        options[key] = value
    return options


def integer(options, key, default):
    value = options.pop(key, None)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise KitError(f"{key}: expected a whole number, got {value!r}") from None


def flag(options, key):
    return options.pop(key, "0").lower() in ("1", "true", "yes", "on")


def spec_of(options, submission=""):
    """The spec of competition=; for a `submission` file without it, the spec that made the file
    (its .json records it), else the spec of the competition its name says; else the demo's.
    The other keys override it."""
    named = options.pop("competition", None)
    if named or not submission:
        return load_spec(named or "demo", options)
    submission = Path(submission)
    about = submission.with_suffix(".json")
    try:
        made = json.loads(about.read_text()) if about.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KitError(f"{about}: not the JSON the kit wrote beside {submission.name}: give "
                       f"competition=<slug>") from None
    if isinstance(made.get("spec"), dict):  # its own sample_submission, data folder and format, as made
        return spec_from(made["spec"], str(about), options)
    found = re.match(r"(.+)-\d{8}T\d{6}Z-", submission.name)
    named = made.get("competition") or (found and found[1])
    if not named and submission.is_file():  # a missing file is said by the command, as it is
        raise KitError(f"{submission} names no competition (no {about.name} beside it, and its name is not "
                       f"<competition>-<time>-<method>.csv): give competition=<slug>")
    return load_spec(named or "demo", options)


def check_data(spec):
    """The data read as the spec says before any work (a wrong key is one line now, not after
    TensorFlow's start), and what would silently waste a run said on stderr. Returns the Data."""
    quiet_records(spec)
    data = load_data(spec)
    for line in fold_warnings(spec, data):
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return data


def quiet_records(spec):
    """TFRecords' parser imports TensorFlow: started here, its start-up lines parked."""
    if "tfrecord" in (spec.image_form, spec.test_image_form):
        start_tensorflow()


@functools.cache  # once a process
def start_tensorflow():
    """Import TensorFlow and find its devices with file descriptor 2 parked in a temporary file:
    its C++ start-up messages ignore TF_CPP_MIN_LOG_LEVEL (absl logs them before it is set up).
    They are shown only if the start fails."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_logical_devices()
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.buffer.write(sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    _quiet_tensorflow()


# What TensorFlow prints that is no news to a user: its C++ runtime noting an attribute its op
# registry predates or a CPU without AVX-512 (on building Swin), and Python notes on retracing the
# prediction function of each new model.
HARMLESS = (b"NodeDef mentions attribute use_unbounded_threadpool",
            b"oneDNN supports DT_INT32 only on platforms with AVX-512")


def _quiet_tensorflow():
    """File descriptor 2 through a pipe that drops the HARMLESS lines (TensorFlow's runtime
    writes there directly); every other line passes, in order, flushed at exit."""
    import logging

    retracing = "triggered tf.function retracing"
    logging.getLogger("tensorflow").addFilter(lambda record: retracing not in record.getMessage())
    read, write = os.pipe()
    real, keep = os.dup(2), os.dup(2)  # the pump writes to one; the other is put back at exit
    os.dup2(write, 2)
    os.close(write)

    def pump():
        with os.fdopen(read, "rb") as pipe, os.fdopen(real, "wb", buffering=0) as out:
            for line in pipe:
                if not any(h in line for h in HARMLESS):
                    out.write(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        os.dup2(keep, 2)  # the pipe's last writer goes: the pump reads to its end
        thread.join(timeout=5)
    atexit.register(restore)


def fold_args(options):
    """(spec, member, fold): fold=0 and backbone=<the spec's first> unless given (a backbone, or a
    member such as vgg16-seed1-384px), checked before TensorFlow's slow import so that a typo
    fails at once."""
    fold, member = integer(options, "fold", 0), options.pop("backbone", "")
    spec = spec_of(options)
    member = member or spec.backbones[0]
    member_spec(spec, member)
    check_fold(spec, fold)
    if member not in {v.name for v in variants(spec)}:
        print(f"note: {member} is not one of the spec's members (backbones x seeds x image_sizes): cv and "
              f"ensemble leave it out", flush=True)
    return spec, member, fold


def submission_file(spec, file):
    """The file given, or the newest submission of the competition (never a -partial one)."""
    if file:
        return Path(file)
    found = sorted(Path("submissions").glob(f"{spec.slug}-*.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise KitError(f"no submission of {spec.slug} under submissions/: make ensemble first, or give file=")
    if found[-1].stem.endswith("-partial"):  # of unfinished runs: submitted only when named
        raise KitError(f"the newest submission of {spec.slug}, {found[-1]}, is of unfinished runs (its .json "
                       f"lists them): make ensemble once they are, or give file= to submit it anyway")
    print(f"file: {found[-1]} (the newest for {spec.slug})")
    return found[-1]
