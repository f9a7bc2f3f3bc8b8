"""The package's import graph: no cycles among netspec's modules (imports inside functions
included), and imports inside functions only for optional dependencies.

A function-level import hides a dependency from a reader; the only accepted reason is a package
that a core install may lack (or that is slow and needed by one command only), named in
``OPTIONAL``, or a netspec module that needs one of those at import time (``OPTIONAL_NETSPEC``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import netspec

PACKAGE = Path(netspec.__file__).parent

#: third-party packages that a core install lacks or that only one feature needs
OPTIONAL = {"cupy", "cupyx", "torch", "matplotlib", "graphviz", "optuna", "psycopg", "jsonschema",
            "google", "h5py", "lmdb", "plyvel", "PIL", "onnx", "onnxruntime", "mpi4py", "cv2",
            "numba",   # numba: the `fast` extra's compiled depthwise kernels
            "scipy"}   # scipy: DeepLab v2's MatRead/MatWrite (.mat files)
#: netspec modules that import an optional package at module level (conv_compiled: numba's
#: kernels, imported by conv_direct only when numba is installed)
OPTIONAL_NETSPEC = {"netspec.caffe.caffe_pb2", "netspec.layers.conv_compiled"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path):
    """(imported module, line, inside a function) for every import statement of a module."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    known = modules()

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                      ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                # "from pkg import mod" imports the submodule pkg.mod when there is one
                subs = [f"{target}.{a.name}" for a in child.names if f"{target}.{a.name}" in known]
                for t in subs or [target]:
                    yield t, child.lineno, in_function
            else:
                yield from visit(child, inner)

    yield from visit(tree, False)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {t for t, _, _ in imports(name, path) if t in known and t != name}
            for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_function_level_imports_are_optional_dependencies_only():
    bad = []
    for name, path in modules().items():
        for target, line, in_function in imports(name, path):
            if in_function and target.split(".")[0] not in OPTIONAL \
                    and target not in OPTIONAL_NETSPEC:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target}")
    assert bad == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
