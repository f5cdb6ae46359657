"""The layering rule of DESIGN.md: runtime/ never imports torch, audiotoken or export at module level."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("torch", "torchaudio", "diffusers", "transformers", "audiotoken", "export", "onnx", "tensorrt")


def module_level_imports(tree: ast.Module) -> list[str]:
    """Top-level module names imported outside any function or class body (try/if blocks included)."""
    names, stack = [], list(tree.body)
    while stack:
        node = stack.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Import):
            names += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
        stack.extend(ast.iter_child_nodes(node))
    return names


def test_runtime_modules_import_nothing_heavy_at_module_level():
    offenders = []
    for path in sorted((REPO / "runtime").rglob("*.py")):
        for name in module_level_imports(ast.parse(path.read_text(), str(path))):
            if name in HEAVY:
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offenders, offenders


def test_importing_every_runtime_module_leaves_torch_unloaded():
    modules = sorted("runtime." + p.stem for p in (REPO / "runtime").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_import_walker_sees_a_module_level_import():
    # guards the guard: a nested function import is allowed, a top-level one (even under try) is not
    tree = ast.parse("import os\ntry:\n    import torch\nexcept ImportError:\n    pass\ndef f():\n    import diffusers\n")
    assert module_level_imports(tree) == ["os", "torch"]
