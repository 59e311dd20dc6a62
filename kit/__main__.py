"""Command line: python -m kit <command> [key=value ...]. The Makefile is a thin wrapper.

Every key that is not one of the command's own (competition, fold, backbone, force, ...) overrides
the competition spec: `python -m kit train fold=0 backbone=xception epochs_head=3`.
"""
import os
import sys
import tempfile

from kit import KitError

USAGE = """usage: python -m kit <command> [key=value ...]

commands:
  train   one fold of one backbone      competition=demo fold=0 backbone=<first of the spec> force=0
  all     every fold x backbone of the spec
  folds   make runs/<slug>/folds.csv
  spec    print the resolved spec

any other key=value overrides the spec (epochs_head=3 image_size=128 weights=null ...)"""


def _pairs(args):
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise KitError(f"expected key=value, got {arg!r}")
        options[key] = value
    return options


def _int(options, key, default):
    value = options.pop(key, None)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise KitError(f"{key}: expected a whole number, got {value!r}") from None


def _flag(options, key):
    return options.pop(key, "0").lower() in ("1", "true", "yes", "on")


def _spec(options):
    from kit.config import load_spec

    return load_spec(options.pop("competition", None) or "demo", options)


def _start_tensorflow():
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


def cmd_train(options):
    from kit.config import check_backbone, check_fold

    fold, force = _int(options, "fold", 0), _flag(options, "force")
    backbone = options.pop("backbone", "")
    spec = _spec(options)
    backbone = backbone or spec.backbones[0]
    check_backbone(backbone)
    check_fold(spec, fold)  # before TensorFlow's slow import: a typo fails at once
    _start_tensorflow()
    from kit.train import run_fold

    run_fold(spec, backbone, fold, force)


def cmd_all(options):
    force = _flag(options, "force")
    spec = _spec(options)
    _start_tensorflow()
    from kit.train import run_fold

    for backbone in spec.backbones:
        for fold in range(spec.n_folds):
            run_fold(spec, backbone, fold, force)


def cmd_folds(options):
    spec = _spec(options)
    from kit.data import load_data
    from kit.folds import load_folds

    fold = load_folds(spec, load_data(spec))
    print(f"{spec.runs_path / 'folds.csv'}: {len(fold)} images in {spec.n_folds} folds "
          f"of {', '.join(str(n) for n in __import__('numpy').bincount(fold))}")


def cmd_spec(options):
    from kit.config import dump

    print(dump(_spec(options)), end="")


COMMANDS = {"train": cmd_train, "all": cmd_all, "folds": cmd_folds, "spec": cmd_spec}


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        COMMANDS[args[0]](_pairs(args[1:]))
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished folds and predictions are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
