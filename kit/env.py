"""Where the kit runs: on a machine of the user's, or inside a Kaggle kernel.

Inside a kernel (KAGGLE_KERNEL_RUN_TYPE is set, or /kaggle/input exists) the competition's data
is found under /kaggle/input (`<slug>` or `competitions/<slug>`), outputs go to
/kaggle/working, and ImageNet weights come from the Keras cache or an attached dataset: code
competitions run with the internet off. KIT_KAGGLE_ROOT stands in for /kaggle (tests).
"""
import dataclasses
import os
import re
from pathlib import Path

from kit import KitError

ROOT_VARIABLE = "KIT_KAGGLE_ROOT"


def kaggle_root():
    return Path(os.environ.get(ROOT_VARIABLE) or "/kaggle")


def in_kernel():
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or (kaggle_root() / "input").is_dir()


def kernel_paths(spec):
    """Inside a kernel, the default data and runs folders become /kaggle/input/... and
    /kaggle/working/runs; folders the spec or command line names are kept."""
    if not in_kernel():
        return spec
    working = kaggle_root() / "working"
    changes = {"runs_dir": str(working / "runs")} if spec.runs_dir == "runs" else {}
    if not spec.data_dir:
        synthetic = spec.source == "synthetic"
        changes["data_dir"] = str(working / "data" / spec.slug if synthetic else find_data(spec.slug))
    return dataclasses.replace(spec, **changes)


def find_data(slug):
    """The competition's folder under /kaggle/input: `<slug>`, `competitions/<slug>`, or a folder
    of that name found deeper (Kaggle's layouts vary)."""
    inputs = kaggle_root() / "input"
    for candidate in (inputs / slug, inputs / "competitions" / slug):
        if candidate.is_dir():
            return candidate
    return search_inputs(lambda folder, files: folder.name == slug, f"competition {slug}",
                         "add it to the kernel's inputs")


def search_inputs(match, what, fix, depth=4):
    """The first folder under /kaggle/input (breadth first, in name order, `depth` levels down)
    for which `match(folder, file names)` holds; else one line listing what is attached."""
    for folder in inputs_where(match, depth):
        return folder
    raise not_attached(what, fix)


def inputs_where(match, depth=4):
    """Every folder under /kaggle/input for which `match(folder, file names)` holds, breadth first,
    in name order, `depth` levels down."""
    inputs = kaggle_root() / "input"
    level = [inputs] if inputs.is_dir() else []
    for _ in range(depth + 1):
        below = []
        for folder in level:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
            if folder != inputs and match(Path(folder), [e.name for e in entries if e.is_file()]):
                yield Path(folder)
            below += [Path(e.path) for e in entries if e.is_dir()]
        level = below


def not_attached(what, fix):
    """The error for what no folder under /kaggle/input holds: it lists what is attached."""
    inputs = kaggle_root() / "input"
    attached = ", ".join(_attached(inputs)) or "nothing"
    return KitError(f"{what} is not attached to this kernel: nothing under {inputs} holds it "
                    f"(attached: {attached}); {fix}")


def _attached(inputs):
    """What a kernel has under /kaggle/input, with the competitions/ and datasets/<owner>/
    layers of Kaggle's newer layout looked into."""
    if not inputs.is_dir():
        return []
    found = []
    for p in sorted(inputs.iterdir()):
        if p.name == "competitions":
            found += [f"competitions/{c.name}" for c in sorted(p.iterdir())]
        elif p.name == "datasets":
            found += [f"datasets/{o.name}/{d.name}" for o in sorted(p.iterdir()) for d in sorted(o.iterdir())]
        else:
            found.append(p.name)
    return found


def keras_caches():
    """Where keras.utils.get_file keeps downloads: $KERAS_HOME or ~/.keras, else /tmp/.keras."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return [home / "models", Path("/tmp/.keras/models")]


def resolve_weights(weights, entry):
    """`imagenet` as Keras takes it when its file is in the cache (Keras then needs no network),
    else the path of a copy attached under /kaggle/input, else `imagenet` (Keras downloads it).
    A keras-hub backbone's: the folder of its preset, attached or in kagglehub's cache."""
    if weights == "imagenet" and entry.hub:
        return _preset_folder(entry) or weights
    if weights != "imagenet" or any((c / entry.weights_file).is_file() for c in keras_caches()):
        return weights
    try:
        folder = search_inputs(lambda folder, files: entry.weights_file in files, entry.weights_file, "")
    except KitError:
        return weights
    return str(folder / entry.weights_file)


def _preset_folder(entry):
    """A keras-hub preset's folder: attached as a Kaggle Model (/kaggle/input/.../<variation>/
    <version>/config.json), or downloaded before into kagglehub's cache."""
    variation = entry.preset.split("/")[-2]
    try:
        return str(search_inputs(lambda folder, files: "config.json" in files and variation in
                                 (folder.name, folder.parent.name), variation, "", depth=6))
    except KitError:
        cache = Path(os.environ.get("KAGGLEHUB_CACHE") or Path.home() / ".cache" / "kagglehub")
        found = sorted(cache.glob(f"models/*/*/*/{variation}/*/config.json"))
        return str(found[-1].parent) if found else None


def missing_weights(backbone, entry, reason):
    """The error when Keras could not download the weights (no internet)."""
    first = reason.strip().splitlines()[0] if reason.strip() else "no network?"
    errno = re.search(r"\[Errno [^\]]+\][^)\"']*", first)  # the innermost cause, e.g. no name resolution
    why = errno[0].strip() if errno else first[:80]
    if entry.hub:
        model = entry.preset.removeprefix("kaggle://")
        return (f"{backbone}: no pretrained weights: the Kaggle Model {model} is not under "
                f"{kaggle_root() / 'input'} nor in kagglehub's cache, and downloading it failed ({why}). "
                f"Attach it to the kernel (make kernel lists it as a model source), or set weights: <its "
                f"preset folder>")
    caches = " or ".join(str(c) for c in keras_caches())
    return (f"{backbone}: no ImageNet weights: {entry.weights_file} is not in the Keras cache ({caches}) "
            f"nor under {kaggle_root() / 'input'}, and downloading it failed ({why}). "
            f"Attach a dataset holding it (e.g. the public keras-pretrained-models; spec key "
            f"kernel_datasets), or set weights: <path of the file>")


def cores():
    """The cores this process may run on (a container's limit, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def worker_count(workers):
    """`workers` threads for images (0: one per core), never more than the cores."""
    return min(workers or cores(), cores())


def available_memory():
    """Bytes of memory this process may still take: the system's available memory, or less
    under a container's limit (cgroup v2, as in a Kaggle kernel)."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit, used = (Path("/sys/fs/cgroup", name).read_text().strip()
                       for name in ("memory.max", "memory.current"))
        return min(free, int(limit) - int(used)) if limit != "max" else free
    except (OSError, ValueError):
        return free
