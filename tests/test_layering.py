"""The layering rule of docs/architecture.md, on every import statement (module level and inside functions alike):

- ``runtime/`` is the leaf: it imports nothing of ours outside itself, and no PyTorch-side library;
- ``audiotoken/`` may use ``runtime/``; ``export/`` may use ``audiotoken/`` and ``runtime/``;
- nothing below the app imports the app (``audiotoken_rt/``);
- inside ``runtime/``, the engine core (the modules directly in it) imports neither the commands
  (``runtime/commands/``) nor the services (``runtime/serving/``) built on it;
- the engines are named by ``runtime/contract.py``'s constants: no string in our packages spells an engine's name;
- and a runtime-only install (no torch) runs ``generate``, ``info`` and ``bench --backends onnxruntime``, while the
  commands that need the PyTorch side say in one line which extra to install.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

OURS = {"audiotoken_rt", "audiotoken", "export", "runtime", "tests"}
ALLOWED = {  # package -> what of ours it may import
    "runtime": {"runtime"},
    "audiotoken": {"audiotoken", "runtime"},
    "export": {"export", "audiotoken", "runtime"},
    "audiotoken_rt": {"audiotoken_rt", "audiotoken", "export", "runtime"},
}
PYTORCH_SIDE = {
    "torch",
    "torchaudio",
    "diffusers",
    "transformers",
    "accelerate",
    "onnx",
    "safetensors",
    "huggingface_hub",
}


def imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, top-level module) of every import statement anywhere in the tree, and of ``import_module("...")`` calls."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def offenders(package: str, forbidden) -> list[str]:
    problems = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, name in imported_modules(ast.parse(path.read_text(), str(path))):
            if forbidden(name):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    return problems


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(package):
    assert not offenders(package, lambda name: name in OURS and name not in ALLOWED[package])


def full_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import statement anywhere in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_the_engine_core_imports_neither_the_commands_nor_the_services():
    wings = ("runtime.commands", "runtime.serving")
    problems = [
        f"{path.name}:{line} imports {name}"
        for path in sorted((REPO / "runtime").glob("*.py"))
        for line, name in full_imports(ast.parse(path.read_text(), str(path)))
        if name.startswith(wings)
    ]
    assert not problems
    assert (REPO / "runtime" / "commands" / "generate.py").is_file()  # the wings are where this test looks


def test_runtime_imports_no_pytorch_side_library_anywhere():
    assert not offenders("runtime", lambda name: name in PYTORCH_SIDE)


def test_the_walker_sees_imports_inside_functions_and_dynamic_ones():
    tree = ast.parse(
        "import os\ndef f():\n    from export.builder import x\n    import importlib\n    importlib.import_module('audiotoken.cli')\n"
    )
    assert [name for _, name in imported_modules(tree)] == ["os", "export", "importlib", "audiotoken"]


# Strings that are an engine's name but another thing's name here: the components of a diffusers Stable Diffusion
# folder (and the PyTorch modules loaded from them, and the small UNet's folder written like one), the prefix of a
# LoRA file's text-encoder weights, export's --unet option (its options field), and a manifest source's role.
NOT_ENGINES = {
    "audiotoken/stable_diffusion.py": {"text_encoder", "unet"},
    "audiotoken/training.py": {"text_encoder", "unet"},
    "audiotoken/random_models.py": {"unet"},
    "export/lora.py": {"text_encoder"},
    "export/cli.py": {"unet"},
    "runtime/bundle.py": {"unet"},
}


def engine_name_strings(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, name) of every string constant in the tree that is an engine's name (docstrings are whole sentences)."""
    names = {"audio_encoder", "text_encoder", "unet", "vae_decoder", "vae_encoder"}
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]


def test_engine_names_are_the_contracts_constants():
    """runtime/contract.py owns the engines' names (AUDIO_ENCODER... UNET...); every other module says them by
    those constants, so no module can name an engine the contract does not know."""
    problems = []
    for package in sorted(ALLOWED):
        for path in sorted((REPO / package).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if name == "runtime/contract.py":
                continue
            found = engine_name_strings(ast.parse(path.read_text(), name))
            problems += [
                f"{name}:{line} spells {value!r}" for line, value in found if value not in NOT_ENGINES.get(name, ())
            ]
    assert not problems


def test_the_engine_name_walker_sees_strings_and_not_sentences():
    tree = ast.parse('"""The unet runs."""\nrun("unet")\nx = {"vae_decoder": 1}\ny = f"{a}text_encoder"\n')
    assert engine_name_strings(tree) == [(2, "unet"), (3, "vae_decoder"), (4, "text_encoder")]


BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name.split(".")[0])
        return None
sys.meta_path.insert(0, Blocker())
"""


@pytest.fixture(scope="module")
def runtime_only(tmp_path_factory) -> dict[str, str]:
    """An environment whose interpreters (this one and every subprocess) cannot import the PyTorch side."""
    folder = tmp_path_factory.mktemp("runtime-only")
    (folder / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(PYTORCH_SIDE)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]), "COLUMNS": "200"}


def app(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "audiotoken_rt", *map(str, args)], env=env, cwd=REPO, capture_output=True, text=True
    )


def test_the_blocker_blocks(runtime_only):
    result = subprocess.run([sys.executable, "-c", "import torch"], env=runtime_only, capture_output=True, text=True)
    assert result.returncode != 0 and "No module named 'torch'" in result.stderr


def test_a_runtime_only_install_runs_the_runtime_commands(runtime_only, tiny_bundle, clips, tmp_path):
    out = tmp_path / "pictures"
    drawn = app(
        runtime_only, "generate", "--engines", tiny_bundle, "--out", out, "--steps", "2", "--seed", "4", clips[0]
    )
    assert drawn.returncode == 0, drawn.stderr
    assert (out / f"{clips[0].stem}.png").is_file() and "wrote 1 picture" in drawn.stderr
    shown = app(runtime_only, "info", tiny_bundle)
    assert shown.returncode == 0 and "files match their sha256" in shown.stdout, shown.stderr
    benched = app(
        runtime_only,
        "bench",
        clips[0],
        "--engines",
        tiny_bundle,
        "--backends",
        "onnxruntime",
        "--steps",
        "1",
        "--rounds",
        "1",
    )
    assert benched.returncode == 0 and "onnxruntime" in benched.stdout, benched.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["export", "--sd", "x", "--beats", "x", "--embedder", "x", "--out", "x"],
        ["train", "--sd", "x", "--beats", "x", "--data", "x", "--out", "x"],
        ["make-random", "x"],
        ["generate", "--engines", "BUNDLE", "--out", "OUT", "--backend", "torch", "CLIP"],
    ],
)
def test_a_runtime_only_install_names_the_extra_the_pytorch_commands_need(
    runtime_only, tiny_bundle, clips, tmp_path, args
):
    args = [{"BUNDLE": tiny_bundle, "OUT": tmp_path, "CLIP": clips[0]}.get(a, a) for a in args]
    result = app(runtime_only, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert lines[0].startswith("error: ") and "needs the PyTorch side" in lines[0] and "is not installed" in lines[0], (
        lines
    )
    assert lines[1].startswith("hint: pip install torch==") and "audiotoken-rt[export]" in lines[1]
    assert "Traceback" not in result.stderr and not Path(tmp_path / "x").exists()
