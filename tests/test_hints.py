"""Every option a message names exists: the ``--flag`` in each ``hint=`` (and each error message) that
runtime/, export/ and audiotoken/ write is an option of the command the text names (``audiotoken-rt export ...
--tensorrt``), or of some command when it names none; and every ``just RECIPE`` it names is a recipe of the
Justfile. A hint is a new user's next command, so one naming a renamed or never-made option sends them nowhere.

The texts are read from the source (``ast``): string constants, f-strings with their constant parts, and module
constants they name (``hint=TRT_HINT``, ``INSTALL_HINTS[device]``, ``FAST.export_flags``); a flag after ``pip`` in
its clause is pip's.
A module that imports only where it runs (Triton's stub) has its texts checked without its constants filled in."""

from __future__ import annotations

import ast
import importlib
import itertools
import re

import pytest
import typer

from audiotoken_rt.cli import app
from tests.support import REPO

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND = re.compile(r"audiotoken-rt ([a-z][a-z-]*)")
JUST = re.compile(r"(?<![\w-])just ([a-z][a-z0-9-]*)")
RECIPE = re.compile(r"^(?:@)?([a-z][a-z0-9-]*)(?: [^:=]*)?:(?!=)", re.MULTILINE)  # a recipe's first line
FOLDERS = ("runtime", "export", "audiotoken")
UNKNOWN = "\x00"  # an f-string part that is not a constant: it names no option


def options_by_command() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    return {
        name: {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
        for name, command in group.commands.items()
    }


def renderings(node: ast.AST, module) -> list[str]:
    """The texts an expression can take, with the module's constants filled in (every value of a dict constant)."""
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else [UNKNOWN]
    if isinstance(node, ast.JoinedStr):
        parts = [renderings(value, module) for value in node.values]
        return ["".join(choice) for choice in itertools.product(*parts)]
    if isinstance(node, ast.FormattedValue):
        return renderings(node.value, module)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return [a + b for a in renderings(node.left, module) for b in renderings(node.right, module)]
    if isinstance(node, ast.IfExp):
        return renderings(node.body, module) + renderings(node.orelse, module)
    if isinstance(node, ast.Subscript):
        return renderings(node.value, module)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):  # a module constant's attribute
        value = getattr(getattr(module, node.value.id, None), node.attr, None)
        return [value] if isinstance(value, str) else [UNKNOWN]
    if isinstance(node, ast.Name):
        value = getattr(module, node.id, None)
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [v for v in value.values() if isinstance(v, str)] or [UNKNOWN]
    return [UNKNOWN]


def message_texts() -> list[tuple[str, str]]:
    """(place, text) for every hint, and every error message, in the three layers' modules."""
    found = []
    for path in sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py")):
        if path.name == "__main__.py":
            continue
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        try:
            module = importlib.import_module(name)
        except ImportError:  # a file run elsewhere (Triton's stub): its texts are checked, its names not filled in
            module = None
        for call in ast.walk(ast.parse(path.read_text())):
            if not isinstance(call, ast.Call):
                continue
            texts = [kw.value for kw in call.keywords if kw.arg == "hint"]
            callee = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
            if callee.endswith("Error") and call.args:
                texts.append(call.args[0])
            for node in texts:
                found += [(f"{path.relative_to(REPO)}:{node.lineno}", text) for text in renderings(node, module)]
    return found


def misnamed(text: str, options: dict[str, set[str]]) -> list[str]:
    """The flags of ``text`` that no command has (or not the command its clause names)."""
    every = set().union(*options.values())
    wrong = []
    for clause in text.split(";"):
        for flag in FLAG.finditer(clause):
            before = clause[: flag.start()]
            if "pip " in before:
                continue
            named = COMMAND.findall(before)
            known = options.get(named[-1], set()) if named else every
            if flag.group() not in known:
                wrong.append(f"{flag.group()}" + (f" (not an option of {named[-1]})" if named else ""))
    return wrong


def test_the_collector_sees_the_hints_it_must_check():
    texts = [text for _, text in message_texts()]
    assert any("--overwrite to replace" in t for t in texts)  # a plain hint
    assert any("audiotoken-rt[trt]" in t for t in texts)  # a module constant (TRT_HINT)
    assert any("audiotoken-rt[trt]" in t and "or export without --tensorrt" in t for t in texts)  # an f-string's
    assert any("audiotoken-rt export ... --fast" in t for t in texts)  # a constant's attribute (FAST.export_flags)
    assert any("onnxruntime-gpu" in t for t in texts)  # a dict constant's values (INSTALL_HINTS[device])


def test_the_check_catches_a_flag_no_command_has():
    options = options_by_command()
    assert misnamed("run audiotoken-rt export ... --tensorrt", options) == []
    assert misnamed("pass --no-such-flag", options) == ["--no-such-flag"]
    assert misnamed("audiotoken-rt generate --tensorrt", options) == ["--tensorrt (not an option of generate)"]
    assert misnamed("pip install --no-deps x", options) == []


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_hint_names_options_that_exist(folder):
    options = options_by_command()
    wrong = [
        f"{place}: {', '.join(flags)} in {text!r}"
        for place, text in message_texts()
        if place.startswith(folder) and (flags := misnamed(text, options))
    ]
    assert not wrong, "\n".join(wrong)


def test_every_just_recipe_a_message_names_exists():
    recipes = set(RECIPE.findall((REPO / "Justfile").read_text()))
    assert {"setup", "test", "serve-demo", "export-fast"} <= recipes  # the parse sees the recipes
    named = [(place, recipe) for place, text in message_texts() for recipe in JUST.findall(text)]
    assert named  # e.g. the --fast refusal's `just export-fast`
    assert [f"{place}: just {recipe}" for place, recipe in named if recipe not in recipes] == []
