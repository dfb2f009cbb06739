"""The house's layering: every import in src/resnets goes to its own layer or one below, and no
module reaches into another's private names. The layers are described in docs/architecture.md."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "resnets"

# Top to bottom. A module may import its own layer's modules and any lower layer's, never a
# higher one. Keys are module paths relative to the package, folders standing for their files.
LAYERS = [
    ["__main__", "cli"],
    ["commands"],
    ["experiments", "report", "bench", "__init__"],
    ["serve"],
    ["train"],
    ["eval"],
    ["checkpoint", "config", "analysis"],
    ["data", "models"],
    ["errors", "device", "version", "recipes", "roofline"],
]


def _layer_of(module: str) -> int:
    parts = module.split(".")
    for depth, names in enumerate(LAYERS):
        if parts[0] in names:
            return depth
    raise AssertionError(f"module resnets.{module} is in no layer: add it to LAYERS and to "
                         f"docs/architecture.md")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(module: str, path: Path):
    """(imported module, imported names, line) of every resnets import, however nested."""
    package = module.split(".")[:-1] if not path.name == "__init__.py" else module.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("resnets"):
                target = node.module.removeprefix("resnets").lstrip(".")
            else:
                continue
            yield target, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("resnets."):
                    yield a.name.removeprefix("resnets."), [], node.lineno


def test_imports_only_go_down():
    upward = []
    for module, path in _modules():
        here = _layer_of(module) if module != "__init__" else _layer_of("__init__")
        for target, names, line in _imports(module, path):
            # `from . import x`: x is a module of the package, or a name of its __init__
            targets = [target] if target else [
                n if (PACKAGE / n).is_dir() or (PACKAGE / f"{n}.py").is_file() else "__init__"
                for n in names]
            for t in targets:
                if t and _layer_of(t) < here:
                    upward.append(f"{path.relative_to(PACKAGE)}:{line} imports resnets.{t}")
    assert upward == [], "imports that run back up:\n" + "\n".join(upward)


def test_no_module_imports_another_modules_private_names():
    private = []
    for module, path in _modules():
        for target, names, line in _imports(module, path):
            for name in names:
                if name.startswith("_") and not name.startswith("__") and target != module:
                    private.append(f"{path.relative_to(PACKAGE)}:{line} imports {name} from "
                                   f"resnets.{target}")
    assert private == [], "\n".join(private)
