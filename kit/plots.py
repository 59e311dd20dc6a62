"""Figures: a run's training curves, a backbone's validation curves over its folds, the
ensemble's OOF ROC curve or confusion matrix, the learning-rate finder's sweep. Saved
atomically, without a screen."""
import matplotlib

matplotlib.use("Agg")  # no screen on servers and kernels
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402

from kit.files import atomic_path  # noqa: E402


def plot_curves(history, path, title=""):
    """`history`: the rows of history.csv. One panel per quantity (loss, accuracy, the
    competition's metric), train and validation, raw and smoothed, phases marked."""
    panels = {}
    for column in history.columns[3:]:  # after epoch, phase, lr
        panels.setdefault(column.removeprefix("val_"), []).append(column)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    starts = history.groupby("phase", sort=False)["epoch"].min()
    for ax, (name, columns) in zip(axes[0], panels.items()):
        for column in columns:
            colour, label = ("C1", "validation") if column.startswith("val_") else ("C0", "train")
            ax.plot(history["epoch"], history[column], color=colour, alpha=0.3, lw=1)
            smooth = history[column].ewm(alpha=0.5).mean()
            ax.plot(history["epoch"], smooth, color=colour, lw=2, label=f"{label} (smoothed)")
        for phase, start in starts.items():
            ax.axvline(start - 0.5, color="grey", ls="--", lw=1)
            ax.annotate(phase, (start - 0.4, 0.02), xycoords=("data", "axes fraction"), fontsize=8)
        _label(ax, name)
    fig.suptitle(title)
    _save(fig, path)


def plot_folds(histories, path, title, metric):
    """Validation loss and metric per epoch, one line per fold. `histories`: {fold: history}."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for fold, history in histories.items():
        for ax, column in zip(axes, ("val_loss", f"val_{metric}")):
            if column in history:  # runs from before the kit kept the metric have no such column
                values = pd.to_numeric(history[column], errors="coerce")  # "" in the file: undefined (NaN)
                ax.plot(history["epoch"], values, label=f"fold {fold}")
    for ax, name in zip(axes, ("validation loss", f"validation {metric}")):
        _label(ax, name)
    fig.suptitle(title)
    _save(fig, path)


def plot_oof(task, classes, y, p, path):
    """The confusion matrix (multiclass) or ROC curves (binary, multilabel) of OOF predictions."""
    fig, ax = plt.subplots(figsize=(6, 5))
    if task == "multiclass":
        ConfusionMatrixDisplay.from_predictions(y, p.argmax(1), labels=range(len(classes)),
                                                display_labels=classes, ax=ax, colorbar=False)
    elif task == "binary":
        RocCurveDisplay.from_predictions(y, p, ax=ax, name=f"P({classes[1]})")
    else:
        for k in np.flatnonzero(y.sum(0) * (1 - y).sum(0) > 0)[:10]:  # labels with both outcomes
            RocCurveDisplay.from_predictions(y[:, k], p[:, k], ax=ax, name=classes[k])
    _save(fig, path)


def plot_lr_find(lrs, losses, smoothed, suggestion, path, title=""):
    """Loss against learning rate (log axis), raw and smoothed, the suggestion marked (if any)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(lrs, losses, alpha=0.3, label="loss")
    ax.plot(lrs, smoothed, label="smoothed")
    if suggestion:
        ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested lr {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)


def _label(ax, name):
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.legend(fontsize=8)


def _save(fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
