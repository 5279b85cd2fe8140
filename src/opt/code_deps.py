"""The project files a stage's code runs: the static closure of its `opt.*` imports.

Starting from the module of the stage function (`opt.stages.STAGES`, "module:function"), every
`import` / `from ... import` statement of every reached file counts, wherever it stands (an import
inside a function is a real code path), relative imports resolved; so do the importing package
`__init__.py` files, string constants naming an `opt` module ("opt.serving.service:OPTService",
`import_module("opt.versions.dvc_backend")`) and f-strings `f"opt.tasks.{name}"` (every module of
that package). Only `opt.*` modules under `src/` are followed; files are parsed with `ast`, never
imported. The CLI harness (`opt/cli.py`, `opt/stages.py`) is not a stage's code: it is neither
listed nor followed; nor are Prefect's `flows/`, which only call stages. dvc.yaml's deps must cover
this closure (tests/test_stage_cache.py checks it):
`python -c "from opt.stage_cache import print_uncovered; print_uncovered()"` lists what is not covered.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

HARNESS = frozenset({"opt.cli", "opt.stages"})
_MODULE = re.compile(r"opt(\.[A-Za-z_]\w*)*")
_MODULE_ATTR = re.compile(r"(opt(?:\.[A-Za-z_]\w*)*)(:[A-Za-z_][\w.]*)?")


def _project() -> Path:
    from opt import config

    return config.PROJECT_ROOT


def module_file(module: str, src: Path) -> Path | None:
    """`opt.a.b` -> src/opt/a/b.py or src/opt/a/b/__init__.py; None when it is not a project file."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_modules(package: str, src: Path) -> set[str]:
    """Every module directly in package `opt.a` (an f-string `f"opt.a.{name}"` may name any)."""
    folder = src.joinpath(*package.split("."))
    if not folder.is_dir():
        return set()
    names = {f"{package}.{p.stem}" for p in folder.glob("*.py") if p.name != "__init__.py"}
    names |= {f"{package}.{p.parent.name}" for p in folder.glob("*/__init__.py")}
    return names


def imported_modules(file: Path, module: str, src: Path) -> set[str]:
    """The `opt.*` modules `file` (module `module`) may import, as dotted names, harness included."""
    tree = ast.parse(file.read_text(), filename=str(file))
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            found.add(origin)
            # `from opt.data import synth` imports the submodule opt.data.synth
            found |= {f"{origin}.{a.name}" for a in node.names if module_file(f"{origin}.{a.name}", src)}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _MODULE_ATTR.fullmatch(node.value)
            if match and "." in match.group(1):
                found.add(match.group(1))
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value.endswith("."):
                prefix = head.value[:-1]
                if _MODULE.fullmatch(prefix) and len(node.values) > 1:
                    found |= _package_modules(prefix, src)
    return {name for name in found if name == "opt" or name.startswith("opt.")}


def _with_parents(module: str) -> list[str]:
    """`opt.a.b` -> ["opt", "opt.a", "opt.a.b"]: importing a module runs its packages' __init__."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(module: str, project: Path | None = None) -> list[str]:
    """Project files (paths relative to the project, `src/opt/...`) that importing `module` may run."""
    project = project or _project()
    src = project / "src"
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [module]
    while todo:
        for name in _with_parents(todo.pop()):
            if name in seen or name in HARNESS:
                continue
            seen.add(name)
            file = module_file(name, src)
            if file is None:
                continue
            files.add(file)
            todo += sorted(imported_modules(file, name, src))
    return sorted(file.relative_to(project).as_posix() for file in files)


def code_digest(module: str, project: Path | None = None) -> str:
    """SHA-256 of the files `import_closure(module)` lists (their paths and bytes): a cache keyed
    by it is rebuilt when any code that built it changed."""
    from opt.files import sha256_file

    project = project or _project()
    lines = (f"{name}\0{sha256_file(project / name)}" for name in import_closure(module, project))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def stage_code(stage: str, project: Path | None = None) -> list[str]:
    """Files of a (dvc.yaml) stage's code: `finetune@vqa` -> the closure of `opt.tasks.run`."""
    from opt.stages import STAGES

    module = STAGES[stage.split("@")[0]][0].split(":")[0]
    return import_closure(module, project)
