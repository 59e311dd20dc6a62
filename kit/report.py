"""runs/<slug>/report.md: the CV table, each backbone's validation curves over its folds, and the
ensemble's OOF ROC curve (binary, multilabel) or confusion matrix (multiclass)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402

from kit.data import load_data, read_csv  # noqa: E402
from kit.ensemble import combine, cross_validate, labels_of  # noqa: E402
from kit.files import atomic_path, write_csv, write_text  # noqa: E402
from kit.metrics import METRICS  # noqa: E402


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
    print(f"saved {spec.runs_path / 'cv.csv'} and {report}")


def write_report(spec, data, table, members, missing, weights):
    """cv.csv, report.md and its figures under runs/<slug>/."""
    root = spec.runs_path
    write_csv(root / "cv.csv", table)
    figures = root / "report"
    lines = [f"# {spec.slug}: cross-validation", "", "```", show(spec, table, missing, weights), "```", ""]
    lines += ["## Validation curves", ""]
    for m in members:
        _plot_folds(spec, m.name, m.folds, figures / f"{m.name}-curves.png")
        lines.append(f"![{m.name}](report/{m.name}-curves.png)")
    ids, oof, _, _ = combine(spec, members, labels_of(data), "mean")
    name = "oof-confusion.png" if spec.task == "multiclass" else "oof-roc.png"
    _plot_oof(spec, data.classes, labels_of(data)(ids), oof, figures / name)
    lines += ["", "## Ensemble (mean), out of fold", "", f"![OOF]({'report/' + name})", ""]
    write_text(root / "report.md", "\n".join(lines))
    return root / "report.md"


def _plot_folds(spec, backbone, folds, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for fold in folds:
        history = read_csv(spec.run_dir(backbone, fold) / "history.csv", "history").astype(
            {"epoch": int, "val_loss": float, "val_metric": float})
        axes[0].plot(history["epoch"], history["val_loss"], label=f"fold {fold}")
        axes[1].plot(history["epoch"], history["val_metric"], label=f"fold {fold}")
    for ax, label in zip(axes, ("validation loss", "validation accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(f"{spec.slug} / {backbone}")
    _save(fig, path)


def _plot_oof(spec, classes, y, p, path):
    fig, ax = plt.subplots(figsize=(6, 5))
    if spec.task == "multiclass":
        ConfusionMatrixDisplay.from_predictions(y, p.argmax(1), labels=range(len(classes)),
                                                display_labels=classes, ax=ax, colorbar=False)
    elif spec.task == "binary":
        RocCurveDisplay.from_predictions(y, p, ax=ax, name=f"P({classes[1]})")
    else:
        for k in np.flatnonzero(y.sum(0) * (1 - y).sum(0) > 0)[:10]:  # labels with both outcomes
            RocCurveDisplay.from_predictions(y[:, k], p[:, k], ax=ax, name=classes[k])
    _save(fig, path)


def _save(fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
