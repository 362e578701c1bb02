"""Which library modules a stage runs, and a digest of their code, read from the import graph.

The workflow reruns a job when the code it runs changes, and provenance records that code, so
both need each stage's modules. They are found by parsing imports (``ast``), never listed by
hand, so a new import is a new dependency at once. The digest covers what Python executes:
comments, formatting and docstrings do not change it, any other edit does.

Modules are named by their dotted path below the package (``stages.score``, ``core.information.mi``); a
subpackage by its own (``core``: its ``__init__.py``), the package's ``__init__.py`` as ``__init__``.

>>> scored = modules("stages.score", "core.information.scoring")
>>> "core.information.mi" in scored and "stages.figures" not in scored
True
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sys
from pathlib import Path

PACKAGE = "mifeatures"
ROOT = Path(__file__).resolve().parents[1]


def path(module: str, root: Path = ROOT) -> Path:
    """Source file of ``mifeatures.MODULE`` in the package folder ``root``."""
    if module == "__init__":
        return root / "__init__.py"
    base = root.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_name(f"{base.name}.py")


def name(file: str) -> str:
    """The module of a file as records name it (``mifeatures/core/io.py``): the inverse of ``path``.

    >>> [name(f) for f in ("mifeatures/core/io.py", "mifeatures/core/__init__.py", "mifeatures/__init__.py")]
    ['core.io', 'core', '__init__']
    """
    parts = Path(file).with_suffix("").parts[1:]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]) or "__init__"
    return ".".join(parts)


def _with_packages(module: str) -> set[str]:
    """``module`` and the subpackages Python runs the ``__init__`` of to import it."""
    parts = module.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts) + 1)}


def _imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports directly, anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path(module).read_text(), filename=str(path(module)))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for imported in names:
            head, _, rest = imported.partition(".")
            if head == PACKAGE and rest and path(rest).is_file():
                found |= _with_packages(rest)
    return found


@functools.cache
def modules(*roots: str) -> tuple[str, ...]:
    """The ``roots`` (a stage, and a module it imports by name) and every package module they import,
    transitively, with the ``__init__`` of the package and of each subpackage on the way."""
    for root in roots:
        if not path(root).is_file():
            raise ValueError(f"no module {PACKAGE}.{root} in {ROOT}")
    seen, todo = {"__init__"}, [module for root in roots for module in _with_packages(root)]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_imports(module) - seen)
    return tuple(sorted(seen))


def imported_packages(*modules: str, root: Path = ROOT) -> set[str]:
    """The top-level packages outside the standard library and this package that ``modules`` import: what their
    job's results may depend on besides Python and the package itself.

    >>> sorted(imported_packages("core.data.images"))
    ['numpy', 'skimage']
    """
    names = set()
    for module in modules:
        for node in ast.walk(ast.parse(path(module, root).read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names - {*sys.stdlib_module_names, PACKAGE, "__future__"}


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def module_digest(module: str, root: Path = ROOT) -> str:
    """sha256 of the module's syntax tree without docstrings: blind to comments and layout. Parsed once per
    version of the file in a process (the workflow and the audit ask for the same modules many times).

    >>> module_digest("core.io") == module_digest("core.io") and len(module_digest("core.io")) == 64
    True
    """
    status = path(module, root).stat()
    return _digest_of_file(str(path(module, root)), status.st_mtime_ns, status.st_size)


@functools.cache
def _digest_of_file(file: str, mtime_ns: int, size: int) -> str:
    tree = _without_docstrings(ast.parse(Path(file).read_text()))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def digests(*roots: str) -> dict[str, str]:
    """{module file relative to the package's parent: digest} for every module ``roots`` run."""
    return {f"{PACKAGE}/{path(module).relative_to(ROOT).as_posix()}": module_digest(module)
            for module in modules(*roots)}


def digest(*roots: str) -> str:
    """One digest of all the code ``roots`` run: what a job's rerun trigger compares."""
    return hashlib.sha256(repr(sorted(digests(*roots).items())).encode()).hexdigest()
