"""`make cv`: the CV table of whatever runs exist, printed and saved as runs/<slug>/cv.csv and
report.md, with each backbone's validation curves over its folds and the ensemble's OOF ROC
curve (binary, multilabel) or confusion matrix (multiclass)."""
from kit.data import load_ids
from kit.ensemble import cross_validate, labels_of
from kit.files import read_csv, write_csv, write_text
from kit.metrics import METRICS, undefined_fold
from kit.plots import plot_folds, plot_oof
from kit.runs import cv_file, report_file, run_of


def pivot(table):
    """model x (fold0, fold1, ..., oof) scores."""
    wide = table.pivot(index="model", columns="fold", values="score")
    folds = sorted((c for c in wide.columns if c != "oof"), key=lambda c: int(c[4:]))
    order = [m for m in table["model"].drop_duplicates()]
    return wide.reindex(index=order, columns=[*folds, "oof"])


def show(spec, table, missing, members, choices, undefined):
    """The CV table as text for the terminal: ensembles scored honestly (what is fitted on the
    OOF, scored on the folds it was not fitted on), and the choice that follows. `undefined`:
    undefined_folds' lines, saying why a fold's score is "-"."""
    direction = "higher" if METRICS[spec.metric].higher_is_better else "lower"
    lines = [f"{spec.slug}: {spec.metric} ({direction} is better), {spec.n_folds} folds; ensembles: weights, "
             f"stacker and post-processing (+pp) fitted on the other folds"]
    lines.append(pivot(table).to_string(float_format=lambda v: f"{v:.5f}", na_rep="-"))
    lines += undefined
    if missing:
        lines.append(f"not finished: {', '.join(missing)}")
    for c in choices:
        if "weights" in c.ensemble.params and c.ensemble.method == "weighted":
            weights = zip((m.name for m in members), c.ensemble.params["weights"])
            lines.append("weights (fitted on every fold): " + ", ".join(f"{k} {v:.4g}" for k, v in weights))
    best = _best(spec, choices)
    lines.append(f"best: {best.ensemble.method}{'+pp' if best.apply_postprocess else ''} ({best.score:.5f}): "
                 f"what make all submits (make ensemble method=... chooses another)")
    return "\n".join(lines)


def undefined_folds(spec, data, members):
    """A line for each fold of the table whose validation images leave the metric undefined
    (ROC AUC without a positive): why its score is "-"; the oof column pools every fold."""
    y_of, lines = labels_of(data), []
    for fold in sorted({k for m in members for k in m.folds}):
        m = next(m for m in members if fold in m.folds)  # the fold's images are every member's
        lines.append(undefined_fold(spec.metric, fold, y_of(m.oof.index[m.oof_fold == fold]), data.classes))
    return [line for line in lines if line]


def _best(spec, choices):
    return max(choices, key=lambda c: c.score * (1 if METRICS[spec.metric].higher_is_better else -1))


def cv_report(spec):
    """Print the CV table of whatever runs exist; save cv.csv and report.md."""
    data = load_ids(spec)  # the runs' predictions and the labels: no image is looked at
    table, members, missing, choices = cross_validate(spec, data)
    report = write_report(spec, data, table, members, missing, choices)
    print(show(spec, table, missing, members, choices, undefined_folds(spec, data, members)))
    print(f"saved {cv_file(spec)} and {report}")


def write_report(spec, data, table, members, missing, choices):
    """cv.csv, report.md and its figures."""
    write_csv(cv_file(spec), table)
    report = report_file(spec)
    figures = report.parent / "report"
    text = show(spec, table, missing, members, choices, undefined_folds(spec, data, members))
    lines = [f"# {spec.slug}: cross-validation", "", "```", text, "```", ""]
    lines += ["## Validation curves", ""]
    for part in (part for m in members for part in m.parts):
        runs = [(fold, run_of(spec, part, fold)) for fold in range(spec.n_folds)]
        histories = {fold: read_csv(run.history, "history").astype({"epoch": int, "val_loss": float})
                     for fold, run in runs if run.finished()}
        plot_folds(histories, figures / f"{part}-curves.png", f"{spec.slug} / {part}", spec.metric)
        lines.append(f"![{part}](report/{part}-curves.png)")
    best = _best(spec, choices)
    name = "oof-confusion.png" if spec.task == "multiclass" else "oof-roc.png"
    plot_oof(spec.task, data.classes, best.ensemble.y, best.ensemble.oof, figures / name)
    lines += ["", f"## The best ensemble ({best.ensemble.method}), honest out of fold", "",
              f"![OOF]({'report/' + name})", ""]
    write_text(report, "\n".join(lines))
    return report
