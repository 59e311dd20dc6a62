"""The command line: python -m kit <command> [key=value ...]. The Makefile is a thin wrapper;
kernel bundles enter here too (run_bundle). Each command imports what it needs when it runs.

Every key that is not one of the command's own (competition, fold, backbone, force, ...) overrides
the competition spec: `python -m kit train fold=0 backbone=xception epochs_head=3`.
"""
import errno
import json
import os
import sys
import tempfile
from pathlib import Path

from kit import KitError

USAGE = """usage: python -m kit <command> [key=value ...]     (competition=demo unless given)

commands:
  train     one fold of one backbone            fold=0 backbone=<the spec's first> force=0
  predict   predict again with a trained fold   fold=0 backbone=...  (e.g. after changing tta)
  all       every fold x backbone, then cv and an ensemble submission
  cv        the CV table from whatever runs exist; runs/<slug>/cv.csv and report.md
  ensemble  a submission CSV under submissions/  method=mean|rank|weighted
  validate  check a CSV against the sample submission   file=submissions/....csv
  download  the competition's data into data/<slug>/ (official kaggle client)   force=0
  submit    validate, then submit with the official kaggle client
            file=<default: the newest for the competition> message=... dry_run=0
  kernel    a push-ready kernel folder under runs/<slug>/kernels/   fold=0 backbone=... user=
  push      build and push that kernel (kaggle kernels push)
  kernels   push one kernel per fold x backbone (finished folds skipped unless force=1)
  status    the state of each pushed kernel
  collect   finished kernels' outputs into runs/<slug>/, as local runs   force=0
  bench     speed and memory against the kit's targets; runs/bench/bench.csv   quick=0
  folds     make runs/<slug>/folds.csv
  spec      print the resolved spec

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


def _fold_args(options):
    """(spec, backbone, fold): fold=0 and backbone=<the spec's first> unless given, checked before
    TensorFlow's slow import so that a typo fails at once."""
    from kit.config import check_backbone, check_fold

    fold, backbone = _int(options, "fold", 0), options.pop("backbone", "")
    spec = _spec(options)
    backbone = backbone or spec.backbones[0]
    check_backbone(backbone)
    check_fold(spec, fold)
    return spec, backbone, fold


def cmd_train(options):
    force = _flag(options, "force")
    spec, backbone, fold = _fold_args(options)
    _start_tensorflow()
    from kit.train import run_fold

    run_fold(spec, backbone, fold, force)


def cmd_predict(options):
    spec, backbone, fold = _fold_args(options)
    _start_tensorflow()
    from kit.predict import predict_fold

    predict_fold(spec, backbone, fold)


def cmd_all(options):
    force = _flag(options, "force")
    spec = _spec(options)
    _start_tensorflow()
    from kit.report import cv_report
    from kit.submission import ensemble_submission
    from kit.train import run_fold

    for backbone in spec.backbones:
        for fold in range(spec.n_folds):
            run_fold(spec, backbone, fold, force)
    cv_report(spec)
    ensemble_submission(spec, "mean")


def cmd_cv(options):
    from kit.report import cv_report

    cv_report(_spec(options))


def cmd_ensemble(options):
    from kit.submission import ensemble_submission

    method = options.pop("method", "mean")
    ensemble_submission(_spec(options), method)


def cmd_validate(options):
    file = options.pop("file", "")
    spec = _spec(options)
    from kit.data import load_data
    from kit.submission import check

    check(_submission_file(spec, file), spec, load_data(spec))


def _submission_file(spec, file):
    """The file given, or the newest submission of the competition."""
    if file:
        return Path(file)
    found = sorted(Path("submissions").glob(f"{spec.slug}-*.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise KitError(f"no submission of {spec.slug} under submissions/: make ensemble first, or give file=")
    print(f"file: {found[-1]} (the newest for {spec.slug})")
    return found[-1]


def cmd_download(options):
    force = _flag(options, "force")
    spec = _spec(options)
    if spec.source == "synthetic":
        print(f"{spec.slug} is generated by the kit on first use: nothing to download")
        return
    from kit.kaggle_client import download

    download(spec.slug, spec.data_path, force)


def cmd_submit(options):
    file, message, dry_run = options.pop("file", ""), options.pop("message", ""), _flag(options, "dry_run")
    spec = _spec(options)
    from kit.data import load_data
    from kit.submission import check

    path = _submission_file(spec, file)
    check(path, spec, load_data(spec))
    about = path.with_suffix(".json")
    if not message and about.is_file():
        made = json.loads(about.read_text())
        message = f"{made['method']} of {len(made['runs'])} runs, CV {made['metric']} {made['cv']}"
    message = message or path.name
    if dry_run:
        print(f"dry run: would submit {path} ({path.stat().st_size} bytes) to {spec.slug} "
              f"with message {message!r}")
        return
    from kit.kaggle_client import submit

    answer, ref = submit(spec.slug, path, message)
    print(f"{answer} (submission {ref}); {path} is kept")


def cmd_folds(options):
    spec = _spec(options)
    import pandas as pd

    from kit.data import load_data
    from kit.folds import load_folds
    from kit.runs import folds_file

    sizes = pd.Series(load_folds(spec, load_data(spec))).value_counts().sort_index()
    print(f"{folds_file(spec)}: {sizes.sum()} images in {spec.n_folds} folds "
          f"of {', '.join(str(n) for n in sizes)}")


def cmd_spec(options):
    from kit.config import dump

    print(dump(_spec(options)), end="")


def _kernel_args(options):
    from kit.kaggle_client import kaggle_user

    user = options.pop("user", "")
    return (*_fold_args(options), kaggle_user(user))


def cmd_kernel(options):
    from kit.bundle import build_bundle

    spec, backbone, fold, user = _kernel_args(options)
    folder = build_bundle(spec, backbone, fold, user)
    print(f"{folder}: kernel.py and kernel-metadata.json; "
          f"push with make push fold={fold} backbone={backbone}")


def cmd_push(options):
    from kit.remote import push

    push(*_kernel_args(options))


def cmd_kernels(options):
    from kit.kaggle_client import kaggle_user
    from kit.remote import push_all

    user, force = options.pop("user", ""), _flag(options, "force")
    push_all(_spec(options), kaggle_user(user), force)


def cmd_status(options):
    from kit.remote import status

    status(_spec(options))


def cmd_collect(options):
    from kit.remote import collect

    force = _flag(options, "force")
    collect(_spec(options), force)


def cmd_bench(options):
    quick = _flag(options, "quick")
    if options:
        raise KitError(f"bench takes only quick=1, not {', '.join(options)}")
    _start_tensorflow()
    from kit.bench import run

    run(quick)


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "all": cmd_all, "cv": cmd_cv,
            "ensemble": cmd_ensemble, "validate": cmd_validate, "download": cmd_download,
            "submit": cmd_submit, "kernel": cmd_kernel, "push": cmd_push, "kernels": cmd_kernels,
            "status": cmd_status, "collect": cmd_collect, "bench": cmd_bench, "folds": cmd_folds,
            "spec": cmd_spec}


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return _run(lambda: COMMANDS[args[0]](_pairs(args[1:])))


def run_bundle(home, args, spec, folds=None, augment=None):
    """A kernel bundle's entry (kit/bundle.py): the command `args` on the bundled spec, with the
    bundled folds put in place first. `spec`, `folds`, `augment`: files in the folder `home`."""
    home = Path(home)
    print(f"kit from {home / 'kit'}", flush=True)
    overrides = {"augment": str(home / augment)} if augment else {}
    if folds:
        code = _run(lambda: _place_folds(home / folds, str(home / spec), overrides))
        if code:
            return code
    return main([*args, f"competition={home / spec}", *(f"{k}={v}" for k, v in overrides.items())])


def _place_folds(bundled, competition, overrides):
    """The folds every other run of the competition uses, where this run will read them."""
    from kit.config import load_spec
    from kit.runs import folds_file

    folds = folds_file(load_spec(competition, overrides))
    if not folds.is_file():
        folds.parent.mkdir(parents=True, exist_ok=True)
        folds.write_text(bundled.read_text())


def _run(action):
    """The exit code of `action`: a user's mistake or a full disk is one line, never a traceback."""
    try:
        action()
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left on the disk ({e.filename or 'writing'}): free some and run the same "
              "command again (finished folds, epochs and predictions are kept)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished folds and predictions are kept", file=sys.stderr)
        return 130
    return 0
