"""The house: no import cycle among the kit's modules (imports inside functions included)."""
import re
from pathlib import Path

from kit.kaggle.bundle import kernel_modules, kit_imports

KIT = Path(__file__).parent.parent / "kit"
MODULES = sorted(".".join(("kit", *p.relative_to(KIT).with_suffix("").parts)).removesuffix(".__init__")
                 for p in KIT.rglob("*.py") if p != KIT / "__init__.py")


def cycle():
    """One import cycle among the kit's modules, as a list of modules, or None."""
    graph = {m: kit_imports(m) for m in ["kit", *MODULES]}
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported]
            if imported not in state:
                found = visit(imported)
                if found:
                    return found
        state[module] = "done"
        path.pop()
        return None

    for module in graph:
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_module_imports_itself_back_through_others():
    assert kit_imports("kit.train") >= {"kit.config", "kit.folds", "kit.runs"}  # the graph is read
    assert "kit.report" in kit_imports("kit.cli")  # imports inside functions count
    assert cycle() is None, " -> ".join(cycle())


def test_a_training_kernel_carries_what_training_imports_and_no_more():
    carried = kernel_modules("kit.train")
    assert {"kit", "kit.cli", "kit.train", "kit.model", "kit.predict", "kit.env"} <= set(carried)
    assert not {"kit.bench.bench", "kit.kaggle.bundle", "kit.kaggle.remote", "kit.kaggle.client", "kit.report"} & set(carried)


def test_architecture_md_lists_every_module_on_a_floor_above_what_it_imports():
    text = (Path(__file__).parent.parent / "ARCHITECTURE.md").read_text()
    floors = ["kit" if name == "__init__" else f"kit.{name}" for name in re.findall(r"^\| `([\w.]+)` \|", text, re.M)]
    assert sorted(floors) == sorted(["kit", *MODULES])  # every module, once
    for k, module in enumerate(floors):
        above = set(floors[k + 1:])
        assert not kit_imports(module) & above, f"{module} imports {kit_imports(module) & above} from a higher floor"
