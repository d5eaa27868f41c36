"""The package's sub-packages import one way, lazy imports included: each may import only those
below it. A circle (a "utility" importing the engine, lineages importing inference) makes a
module's meaning depend on import order and hides which layer owns what."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "shufflenet"
#: Bottom first; a sub-package may import those before it in this list, never after.
LAYERS = ["data", "utils", "models", "kernels", "lineages", "inference", "pretrained", "export", "engine",
          "cli"]


def imported_subpackages(path: Path) -> set[str]:
    """The sub-packages that a module of the package names in a relative import, anywhere in it."""
    own = path.relative_to(PACKAGE).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            target = [*own[:len(own) - node.level + 1], *(node.module or "").split(".")]
            if target and target[0]:
                found.add(target[0])
    return found


def test_every_subpackage_is_in_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS)


def test_imports_run_down_the_layers_only():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2:
            continue
        rank = LAYERS.index(parts[0])
        for target in imported_subpackages(path):
            if target in LAYERS and LAYERS.index(target) > rank:
                upward.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert upward == []
