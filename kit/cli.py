"""The command line: python -m kit <command> [key=value ...]. The Makefile is a thin wrapper;
kernel bundles enter here too (run_bundle). Each command imports what it needs when it runs.

Every key that is not one of the command's own (competition, fold, backbone, force, ...) overrides
the competition spec: `python -m kit train fold=0 backbone=xception epochs_head=3`.
"""
import errno
import re
import signal
import sys
import tempfile
from pathlib import Path

from kit import KitError, quoted
from kit.backbones import BACKBONES, COMPARED
from kit.checks import check_backbone
from kit.kaggle.commands import (
    cmd_collect,
    cmd_download,
    cmd_inference_kernel,
    cmd_init,
    cmd_kernel,
    cmd_kernels,
    cmd_publish,
    cmd_publish_wheels,
    cmd_push,
    cmd_release,
    cmd_status,
    cmd_submit,
    cmd_submit_code,
    cmd_wheels,
)
from kit.members import check_members
from kit.options import (
    check_data,
    flag,
    fold_args,
    pairs,
    quiet_records,
    spec_of,
    start_tensorflow,
    submission_file,
)

USAGE = """usage: python -m kit <command> [key=value ...]     (competition=demo unless given)

commands:
  train     one fold of one member              fold=0 backbone=<the spec's first, or a member> force=0
  predict   predict again with a trained fold   fold=0 backbone=...  (e.g. after changing tta)
  all       every fold x member, then cv and the submission of the best honest CV
  cv        the CV table from whatever runs exist; runs/<slug>/cv.csv and report.md
  ensemble  a submission CSV under submissions/  method=auto|mean|rank|weighted|stack
  validate  check a CSV against the sample submission   file=submissions/....csv
  pseudo    pseudo-labels of confident test images, and the round-2 spec   pseudo_threshold=0.95
  download  the competition's data into data/<slug>/ (official kaggle client)   force=0
  init      competitions/<slug>.yaml from data/<slug>/, each key with what chose it   metric= force=0
  submit    validate, then submit with the official kaggle client
            file=<default: the newest for the competition> message=... dry_run=0
  kernel    a push-ready kernel folder under runs/<slug>/kernels/   fold=0 backbone=... user=
  push      build and push that kernel (kaggle kernels push)
  kernels   push one kernel per fold x backbone (finished folds skipped unless force=1)
  status    the state of each pushed kernel
  collect   finished kernels' outputs into runs/<slug>/, as local runs   force=0
  release   the ensemble as runs/<slug>/release/ (models, recipe, manifest)   method=auto members= user=
  publish   the release as the Kaggle dataset <user>/<slug>-models (created, then new versions)
  inference-kernel   runs/<slug>/kernels/inference/: the code-competition kernel   user=
  submit-code        push it, wait for COMPLETE, submit its submission.csv   message= version= timeout=540
  infer     predict the current test images with a release   release=<folder> out=<csv>
  wheels    what kernels may need beyond Kaggle's image, as runs/kit-wheels/ (pip download)   user=
  publish-wheels     runs/kit-wheels/ as the Kaggle dataset <user>/kit-wheels, which kernels attach
  bench     speed and memory against the kit's targets; runs/bench/bench.csv   quick=0
            backbones=1|<names>: only a frozen-base forward pass of each, images/s at 224 px
  backbones the registered backbones: sizes, top:K blocks, parameters, where weights come from
  lr-find   a phase's learning rate by a sweep: runs/<slug>/<member>/lr-find-<phase>.png   phase= steps=200
  folds     make runs/<slug>/folds.csv
  spec      print the resolved spec

any other key=value overrides the spec (epochs_head=3 image_size=128 weights=null ...)"""


def cmd_train(options):
    force = flag(options, "force")
    spec, backbone, fold = fold_args(options)
    check_data(spec)
    start_tensorflow()
    from kit.train import run_fold

    run_fold(spec, backbone, fold, force)


def cmd_predict(options):
    spec, backbone, fold = fold_args(options)
    check_data(spec)
    start_tensorflow()
    from kit.predict import predict_fold

    predict_fold(spec, backbone, fold)


def cmd_all(options):
    force = flag(options, "force")
    spec = spec_of(options)
    check_data(spec)
    start_tensorflow()
    from kit.report import cv_report
    from kit.runs import run_of, variants
    from kit.submission import ensemble_submission

    check_members(spec)  # a schedule or size one member cannot take fails now, not hours in
    runs = [(v.name, fold) for v in variants(spec) for fold in range(spec.n_folds)]
    skipped = [(member, fold) for member, fold in runs if _train_fold(spec, member, fold, force) is None]
    busy = [(member, fold) for member, fold in skipped if not run_of(spec, member, fold).finished()]
    if busy:  # the submission is of every run: another process's are waited for, not left out
        print(f"waiting for {', '.join(f'{m}/fold{k}' for m, k in busy)}: another process is training "
              f"{'it' if len(busy) == 1 else 'them'}", flush=True)
    for member, fold in busy:  # finished there: kept (not forced again); left unfinished: resumed here
        _train_fold(spec, member, fold, False, wait=True)
    cv_report(spec)
    ensemble_submission(spec, "auto")


def _train_fold(spec, member, fold, force, wait=False):
    """run_fold, where running out of memory is one line."""
    import tensorflow as tf

    from kit.train import run_fold

    try:  # each run's models and graphs are released when it returns: memory stays flat
        return run_fold(spec, member, fold, force, wait)
    except (MemoryError, tf.errors.ResourceExhaustedError) as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise KitError(f"{member}/fold{fold} ran out of memory ({why}): the finished runs are kept and "
                       f"make all again goes on from this one (a smaller batch_size or image_size needs "
                       f"less)") from None


def cmd_cv(options):
    from kit.report import cv_report

    cv_report(spec_of(options))


def cmd_ensemble(options):
    from kit.submission import ensemble_submission

    method = options.pop("method", "auto")
    ensemble_submission(spec_of(options), method)


def cmd_validate(options):
    file = options.pop("file", "")
    spec = spec_of(options, file)
    quiet_records(spec)
    from kit.submission import check

    check(submission_file(spec, file), spec)


def cmd_pseudo(options):
    from kit.pseudo import pseudo_round

    pseudo_round(spec_of(options))


def cmd_folds(options):
    spec = spec_of(options)
    import pandas as pd

    from kit.folds import load_folds
    from kit.runs import folds_file

    sizes = pd.Series(load_folds(spec, check_data(spec))).value_counts().sort_index()  # its warnings said
    print(f"{folds_file(spec)}: {sizes.sum()} images in {spec.n_folds} folds "
          f"of {', '.join(str(n) for n in sizes)}")


def cmd_spec(options):
    from kit.config import dump

    spec = spec_of(options)
    print(dump(spec), end="")
    data = check_data(spec)
    print(f"checked {spec.data_path}: {len(data.train)} training images ({len(data.classes)} classes: "
          f"{quoted(data.classes, 6)}), {len(data.test)} test images", file=sys.stderr)


def cmd_infer(options):
    """In a kernel: the attached release, /kaggle/working/submission.csv. Here: runs/<slug>/release,
    submissions/<slug>-<time>-release.csv. Other keys override the release's spec."""
    import datetime

    from kit.env import in_kernel, kaggle_root

    folder, out, named = options.pop("release", ""), options.pop("out", ""), options.pop("competition", "")
    spec = spec_of({"competition": named})
    start_tensorflow()
    from kit.kaggle.infer import infer
    from kit.kaggle.release import find_release, release_dir

    if named and not in_kernel():  # the release's spec finds its data where the named spec has it
        options.setdefault("data_dir", str(spec.data_path))
        options.setdefault("runs_dir", spec.runs_dir)

    folder = folder or (find_release(spec.slug) if in_kernel() else release_dir(spec))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out or (kaggle_root() / "working" / "submission.csv" if in_kernel()
                  else Path("submissions") / f"{spec.slug}-{stamp}-release.csv")
    with tempfile.TemporaryDirectory(prefix="kit-runs-") as scratch:
        if in_kernel():  # decoded test images are no output of the notebook: kept out of /kaggle/working
            options.setdefault("runs_dir", scratch)
        infer(folder, out, options, slug=spec.slug if named else None)


def cmd_bench(options):
    quick = flag(options, "quick")
    backbones = options.pop("backbones", "0")
    if options:
        raise KitError(f"bench takes only quick=1 and backbones=1|<names>, not {', '.join(options)}")
    if backbones.lower() in ("1", "true", "yes", "on"):
        chosen = COMPARED
    else:
        chosen = tuple(name for name in backbones.split(",") if backbones != "0")
        for name in chosen:
            check_backbone(name)
    start_tensorflow()
    from kit.bench.bench import run

    run(quick, chosen)


def cmd_lr_find(options):
    phase, steps = options.pop("phase", ""), options.pop("steps", "200")
    spec, member, _ = fold_args(options)
    if not phase:
        raise KitError(f"lr-find needs phase=<name> (phases: {', '.join(p.name for p in spec.schedule)})")
    if not steps.isdigit() or int(steps) < 10:
        raise KitError(f"steps: {steps} must be a number of batches, 10 at least")
    start_tensorflow()
    from kit.lrfind import lr_find

    lr_find(spec, member, phase, int(steps))


def cmd_backbones(options):
    if options:
        raise KitError(f"backbones takes no options, not {', '.join(options)}")
    start_tensorflow()
    from kit.pretrained import describe

    print(f"{'backbone':20s} {'size':>8s} {'min':>5s} {'top:K':>6s} {'params':>9s}  pretrained weights from")
    for name in BACKBONES:  # built one by one without weights: a minute for all of them on a CPU
        print(describe(name), flush=True)
    print("size: the default (ImageNet) side; ! the pretrained weights take no other; /N a multiple of N")


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "all": cmd_all, "cv": cmd_cv,
            "ensemble": cmd_ensemble, "validate": cmd_validate, "download": cmd_download,
            "submit": cmd_submit, "kernel": cmd_kernel, "push": cmd_push, "kernels": cmd_kernels,
            "status": cmd_status, "collect": cmd_collect, "release": cmd_release, "publish": cmd_publish,
            "inference-kernel": cmd_inference_kernel, "submit-code": cmd_submit_code, "infer": cmd_infer,
            "wheels": cmd_wheels, "publish-wheels": cmd_publish_wheels,
            "pseudo": cmd_pseudo, "bench": cmd_bench, "backbones": cmd_backbones, "lr-find": cmd_lr_find,
            "folds": cmd_folds, "spec": cmd_spec, "init": cmd_init}


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return _run(lambda: COMMANDS[args[0]](pairs(args[1:])))


def run_bundle(home, args, spec, runtime, folds=None, augment=None, pseudo=None):
    """A kernel bundle's entry (kit/kaggle/bundle.py): what the kernel needs beyond Kaggle's image
    installed and the versions checked, the bundled folds put in place, then the command `args`
    on the bundled spec. `spec`, `runtime`, `folds`, `augment`, `pseudo`: files in `home`."""
    home = Path(home)
    print(f"kit from {home / 'kit'}", flush=True)
    from kit.runtime import start

    code = _run(lambda: start(home / runtime, log=lambda line: print(line, flush=True)))
    if code:
        return code
    overrides = {key: str(home / name) for key, name in (("augment", augment), ("pseudo", pseudo)) if name}
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
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileNotFoundError) as e:  # a path given
        print(f"error: cannot use {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except OSError as e:
        short = e.errno is None and re.fullmatch(r"\d+ requested and \d+ written", str(e))  # numpy's tofile
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) and not short:
            raise
        print(f"error: no space left on the disk ({e.filename or 'writing'}): free some and run the same "
              "command again (finished folds, epochs and predictions are kept)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return interrupted()
    return 0


def interrupted():
    """Ctrl-C: a second one, while Python shuts down, would only print tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("interrupted: finished folds and predictions are kept", file=sys.stderr)
    return 130
