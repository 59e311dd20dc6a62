"""`make cv`: the CV table of whatever runs exist, printed and saved as runs/<slug>/cv.csv and
report.md, with each backbone's validation curves over its folds and the ensemble's OOF ROC
curve (binary, multilabel) or confusion matrix (multiclass)."""
from kit.data import load_data
from kit.ensemble import cross_validate
from kit.files import read_csv, write_csv, write_text
from kit.metrics import METRICS
from kit.plots import plot_folds, plot_oof
from kit.runs import cv_file, report_file, run_of


def pivot(table):
    """model x (fold0, fold1, ..., oof) scores."""
    wide = table.pivot(index="model", columns="fold", values="score")
    folds = sorted((c for c in wide.columns if c != "oof"), key=lambda c: int(c[4:]))
    order = [m for m in table["model"].drop_duplicates()]
    return wide.reindex(index=order, columns=[*folds, "oof"])


def show(spec, table, missing, members, choices):
    """The CV table as text for the terminal: ensembles scored honestly (what is fitted on the
    OOF, scored on the folds it was not fitted on), and the choice that follows."""
    direction = "higher" if METRICS[spec.metric].higher_is_better else "lower"
    lines = [f"{spec.slug}: {spec.metric} ({direction} is better), {spec.n_folds} folds; ensembles: weights, "
             f"stacker and post-processing (+pp) fitted on the other folds"]
    lines.append(pivot(table).to_string(float_format=lambda v: f"{v:.5f}", na_rep="-"))
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


def _best(spec, choices):
    return max(choices, key=lambda c: c.score * (1 if METRICS[spec.metric].higher_is_better else -1))


def cv_report(spec):
    """Print the CV table of whatever runs exist; save cv.csv and report.md."""
    data = load_data(spec)
    table, members, missing, choices = cross_validate(spec, data)
    report = write_report(spec, data, table, members, missing, choices)
    print(show(spec, table, missing, members, choices))
    print(f"saved {cv_file(spec)} and {report}")


def write_report(spec, data, table, members, missing, choices):
    """cv.csv, report.md and its figures."""
    write_csv(cv_file(spec), table)
    report = report_file(spec)
    figures = report.parent / "report"
    text = show(spec, table, missing, members, choices)
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
