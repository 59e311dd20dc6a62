"""`make cv`: the CV table of whatever runs exist, printed and saved as runs/<slug>/cv.csv and
report.md, with each backbone's validation curves over its folds and the ensemble's OOF ROC
curve (binary, multilabel) or confusion matrix (multiclass)."""
from kit.data import load_data
from kit.ensemble import combine, cross_validate, labels_of
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


def show(spec, table, missing, weights):
    """The CV table as text for the terminal."""
    direction = "higher" if METRICS[spec.metric].higher_is_better else "lower"
    lines = [f"{spec.slug}: {spec.metric} ({direction} is better), {spec.n_folds} folds"]
    lines.append(pivot(table).to_string(float_format=lambda v: f"{v:.5f}", na_rep="-"))
    if missing:
        lines.append(f"not finished: {', '.join(missing)}")
    for method, w in weights.items():
        if method == "weighted":
            lines.append("weights: " + ", ".join(f"{k} {v:g}" for k, v in w.items()))
    return "\n".join(lines)


def cv_report(spec):
    """Print the CV table of whatever runs exist; save cv.csv and report.md."""
    data = load_data(spec)
    table, members, missing, weights = cross_validate(spec, data)
    report = write_report(spec, data, table, members, missing, weights)
    print(show(spec, table, missing, weights))
    print(f"saved {cv_file(spec)} and {report}")


def write_report(spec, data, table, members, missing, weights):
    """cv.csv, report.md and its figures."""
    write_csv(cv_file(spec), table)
    report = report_file(spec)
    figures = report.parent / "report"
    lines = [f"# {spec.slug}: cross-validation", "", "```", show(spec, table, missing, weights), "```", ""]
    lines += ["## Validation curves", ""]
    for m in members:
        histories = {fold: read_csv(run_of(spec, m.name, fold).history, "history").astype(
            {"epoch": int, "val_loss": float}) for fold in m.folds}
        plot_folds(histories, figures / f"{m.name}-curves.png", f"{spec.slug} / {m.name}", spec.metric)
        lines.append(f"![{m.name}](report/{m.name}-curves.png)")
    ids, oof, _, _ = combine(spec, members, labels_of(data), "mean")
    name = "oof-confusion.png" if spec.task == "multiclass" else "oof-roc.png"
    plot_oof(spec.task, data.classes, labels_of(data)(ids), oof, figures / name)
    lines += ["", "## Ensemble (mean), out of fold", "", f"![OOF]({'report/' + name})", ""]
    write_text(report, "\n".join(lines))
    return report
