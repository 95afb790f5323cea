"""The package's shape: its import graph has no cycle (every import of every module of gpt1_fast/, at
any depth, inside functions too, relative imports resolved); a file reads in one sitting (<= 450
lines) and a function fits on a screen (<= 60 lines; @triton.jit kernels aside)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gpt1_fast"


def module_files(package: Path) -> dict[str, Path]:
    """{dotted module name: file} for every .py file under `package` (a package is its __init__.py)."""
    mods = {}
    for f in sorted(package.rglob("*.py")):
        parts = f.relative_to(package.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def imported(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The modules of `mods` that module `name` imports anywhere in its file.

    `from P import x` is an edge to the submodule P.x when there is one, and to P itself only for a
    name P defines (its __init__ must then have run: a real dependency); `import a.b` to a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in mods)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names]
            out.update(s for s in subs if s in mods)
            if target in mods and any(s not in mods for s in subs):
                out.add(target)
    out.discard(name)
    return out


def import_graph(package: Path) -> dict[str, set[str]]:
    mods = module_files(package)
    return {name: imported(name, path, mods) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on_stack.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_the_package():
    graph = import_graph(PACKAGE)
    assert len(graph) > 40 and "gpt1_fast.tasks.readers" in graph["gpt1_fast.tasks.task"]
    assert cycles(graph) == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles(graph))


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "pkg"


def test_the_check_sees_a_cycle_through_a_function_level_relative_import(tmp_path):
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": "from .a import f\n",
        "pkg/a.py": "from .sub import b\n\ndef f():\n    return b\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "import os\n\ndef g():\n    from .. import c\n    return c\n",
        "pkg/c.py": "def h():\n    if True:\n        from .a import f\n    return f\n",
    })
    graph = import_graph(pkg)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub": set(), "pkg.sub.b": {"pkg.c"},
                     "pkg.c": {"pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_importing_a_name_of_the_package_init_is_an_edge_to_it(tmp_path):
    """`from . import helper` (a submodule) depends on the submodule only; `from . import NAME` (defined
    in __init__, which imports this module) is a cycle."""
    files = {"pkg/__init__.py": "from .a import run\nNAME = 1\n", "pkg/helper.py": "",
             "pkg/a.py": "from . import helper\n\ndef run():\n    import pkg.helper\n"}
    assert cycles(import_graph(write_package(tmp_path / "ok", files))) == []
    files["pkg/a.py"] += "\ndef name():\n    from . import NAME\n"
    assert cycles(import_graph(write_package(tmp_path / "bad", files))) == [["pkg", "pkg.a"]]


MAX_FILE, MAX_FUNCTION = 450, 60


def oversized(package: Path) -> list[str]:
    """Files over MAX_FILE lines and functions over MAX_FUNCTION lines (Triton kernels aside)."""
    found = []
    for f in sorted(package.rglob("*.py")):
        src = f.read_text(encoding="utf-8")
        if src.count("\n") > MAX_FILE:
            found.append(f"{f.relative_to(package.parent)}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any("jit" in ast.unparse(d) for d in node.decorator_list):
                    continue
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    found.append(f"{f.relative_to(package.parent)}:{node.lineno} {node.name}: {n} lines")
    return found


def test_files_and_functions_stay_small():
    assert oversized(PACKAGE) == []


def test_the_size_check_sees_a_long_function_and_a_long_file(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    pkg = write_package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": f"def f():\n{body}\n", "pkg/b.py": "x = 1\n" * 451,
                                   "pkg/k.py": f"@triton.jit\ndef kernel():\n{body}\n"})
    assert oversized(pkg) == ["pkg/a.py:1 f: 62 lines", "pkg/b.py: 451 lines"]
