"""Training curves: loss and accuracy, train and validation, raw and smoothed, phases marked."""
import matplotlib

matplotlib.use("Agg")  # no screen on servers and kernels
import matplotlib.pyplot as plt  # noqa: E402

from kit.files import atomic_path  # noqa: E402


def plot_curves(history, path, title=""):
    """`history`: the rows of history.csv. One line per curve across every phase."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = history["epoch"]
    starts = history.groupby("phase", sort=False)["epoch"].min()
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "metric", "accuracy")):
        for column, colour, name in ((key, "C0", "train"), (f"val_{key}", "C1", "validation")):
            ax.plot(epochs, history[column], color=colour, alpha=0.3, lw=1)
            smooth = history[column].ewm(alpha=0.5).mean()
            ax.plot(epochs, smooth, color=colour, lw=2, label=f"{name} (smoothed)")
        for phase, start in starts.items():
            ax.axvline(start - 0.5, color="grey", ls="--", lw=1)
            ax.annotate(phase, (start - 0.4, 0.02), xycoords=("data", "axes fraction"), fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
