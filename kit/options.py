"""Command-line options: `key=value` pairs, typed, and the competition spec the other keys
override; shared by every command (kit/cli.py, kit/kaggle_commands.py)."""
import os
import sys
import tempfile
from pathlib import Path

from kit import KitError
from kit.config import check_fold, load_spec, member_spec


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


def spec_of(options):
    """The spec of competition= (default: the demo), the other keys overriding it."""
    return load_spec(options.pop("competition", None) or "demo", options)


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


def fold_args(options):
    """(spec, member, fold): fold=0 and backbone=<the spec's first> unless given (a backbone, or a
    member such as vgg16-seed1-384px), checked before TensorFlow's slow import so that a typo
    fails at once."""
    fold, member = integer(options, "fold", 0), options.pop("backbone", "")
    spec = spec_of(options)
    member = member or spec.backbones[0]
    member_spec(spec, member)
    check_fold(spec, fold)
    return spec, member, fold


def submission_file(spec, file):
    """The file given, or the newest submission of the competition."""
    if file:
        return Path(file)
    found = sorted(Path("submissions").glob(f"{spec.slug}-*.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise KitError(f"no submission of {spec.slug} under submissions/: make ensemble first, or give file=")
    print(f"file: {found[-1]} (the newest for {spec.slug})")
    return found[-1]
