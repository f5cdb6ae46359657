"""Bundles made elsewhere: what a crafted manifest, symlink or ONNX file can and cannot make the runtime read.

Each hostile bundle below is a copy of the tiny bundle with one thing changed, its manifest kept consistent (the
sha256 of what it names is the true one), so the hash check alone would let it through: what refuses it is the
path rule (``runtime.bundle.bundle_path``), the external-data check, or full verification. A manifest field of the
wrong JSON type or out of its range is refused when the manifest is read (``runtime.bundle.Field``). Every refusal
is one line naming the manifest field (or the file) and the value.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from typer.testing import CliRunner

from audiotoken_rt.cli import app
from runtime.bundle import (
    MAX_MANIFEST_BYTES,
    VERIFY_VARIABLE,
    Bundle,
    OutputError,
    bundle_path,
    path_problem,
    read_manifest,
    write_manifest,
)
from runtime.errors import BundleError, ConfigError
from runtime.external_data import MalformedProtobuf, external_locations
from runtime.sampling import Sampling


@pytest.fixture
def bundle(tiny_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle, inside ``tmp_path/bundle`` (``tmp_path`` itself is "outside")."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refusal(folder: Path, match: str, **open_options) -> str:
    """The one-line message Bundle.open refuses ``folder`` with."""
    with pytest.raises(BundleError, match=match) as caught:
        Bundle.open(folder, **open_options)
    message = str(caught.value)
    assert "\n" not in message and "\n" not in (caught.value.hint or "")
    return message


def test_a_good_bundle_opens_and_its_files_come_from_inside_it(bundle):
    opened = Bundle.open(bundle)
    root = bundle.resolve()
    assert opened.engine_path("unet", "cpu") == root / "unet.fused.onnx"  # the fused variant, for ONNX Runtime's CPU
    assert opened.engine_path("unet", "tensorrt") == root / "unet.onnx"
    assert opened.tokenizer_dir == root / "tokenizer"
    assert set(opened.stamps) == {entry.path for entry in opened.manifest.all_files()}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("../outside/unet.onnx", "has a '..' part"),
        ("sub/../../outside/unet.onnx", "has a '..' part"),
        ("/OUTSIDE/unet.onnx", "is absolute"),
        ("sub\\unet.onnx", "holds a backslash"),
        ("unet.onnx\x00.txt", "control character"),
        ("unet.onnx\nerror: all good", "control character"),
        ("./unet.onnx", "has a '.' part"),
        ("sub//unet.onnx", "has a '' part"),
        ("", "is empty"),
        (7, "is not a string"),
        ("x" * 256, "part is longer than 255 bytes"),
    ],
)
def test_a_manifest_path_off_the_rule_is_refused_in_one_line_naming_the_field(bundle, tmp_path, value, problem):
    outside = tmp_path / "outside" / "unet.onnx"  # what a crafted path would have the runtime read
    outside.parent.mkdir()
    shutil.copy(bundle / "unet.onnx", outside)
    if isinstance(value, str):
        value = value.replace("/OUTSIDE", str(tmp_path / "outside"))

    def point_outside(manifest):
        manifest["engines"]["unet"]["file"]["path"] = value  # the sha256 and size stay those of the copy outside

    edit_manifest(bundle, point_outside)
    message = refusal(bundle, "engines.unet.file.path is ")
    assert repr(value)[:40] in message and problem in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("tokenizer", "../tokenizer"), ("files", "../outside/tokenizer.json"), ("plan", "../plan")],
)
def test_every_path_field_of_the_manifest_is_held_to_the_rule(bundle, field, value):
    def change(manifest):
        if field == "tokenizer":
            manifest["tokenizer"] = value
        elif field == "files":
            manifest["files"][3]["path"] = value
        else:
            unet = manifest["engines"]["unet"]
            unet["plans"] = [{"file": {**unet["file"], "path": value}, "tensorrt_version": "10.13.0.35",
                              "gpu": "NVIDIA H100", "parity": unet["parity"]}]  # fmt: skip

    edit_manifest(bundle, change)
    name = {"tokenizer": "tokenizer", "files": r"files\[3\].path", "plan": r"engines.unet.plans\[0\].file.path"}
    refusal(bundle, f"manifest.json: {name[field]} is '../")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", "../../../../tmp/x"),  # the key names the per-user hash cache file
        ("key", "A" * 64),
        ("key", "0" * 63),
        ("key", "0" * 64 + "\n"),
        ("sha256", "F" * 64),
        ("sha256", None),
        ("size", -1),
    ],
)
def test_a_key_or_sha256_that_is_not_64_lowercase_hex_digits_is_refused(bundle, field, value):
    def change(manifest):
        if field == "key":
            manifest["key"] = value
        else:
            manifest["engines"]["vae_decoder"]["data"][field] = value

    edit_manifest(bundle, change)
    name = "key" if field == "key" else f"engines.vae_decoder.data.{field}"
    refusal(bundle, f"manifest.json: {name} is {repr(value)[:20]}")


def set_field(manifest: dict, path: tuple, value: object) -> None:
    for key in path[:-1]:
        manifest = manifest[key]
    manifest[path[-1]] = value


WHOLE_SIDE = "expected a whole number from 8 to 4096, a multiple of 8"
FLOAT32_SCALE = "expected a finite number from 1.17549e-38 to 3.40282e+38"  # float32's normal range


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("height",), 100, f"height is 100: {WHOLE_SIDE}"),
        (("width",), 8192, f"width is 8192: {WHOLE_SIDE}"),
        (("height",), 64.0, f"height is 64.0: {WHOLE_SIDE}"),  # a JSON fraction, even one without a fraction part
        (("token_dim",), 0, "token_dim is 0: expected a whole number from 1 to 8192"),
        (("token_slots",), 5, "token_slots is 5: expected a whole number from 1 to 4"),
        (("opset",), True, "opset is True: expected a whole number 1 or more"),
        (("placeholder_id",), -1, "placeholder_id is -1: expected a whole number 0 or more"),
        (("precision",), "bf16", "precision is 'bf16': expected one of fp32, fp16, int8"),
        (("prediction_type",), "sample", "prediction_type is 'sample': expected one of epsilon, v_prediction"),
        (("vae_scaling_factor",), 0, f"vae_scaling_factor is 0: {FLOAT32_SCALE}"),
        (("vae_scaling_factor",), float("nan"), f"vae_scaling_factor is nan: {FLOAT32_SCALE}"),
        (("vae_scaling_factor",), 1e-39, f"vae_scaling_factor is 1e-39: {FLOAT32_SCALE}"),  # subnormal in float32
        (("vae_scaling_factor",), 1e39, f"vae_scaling_factor is 1e+39: {FLOAT32_SCALE}"),  # inf in float32
        (("scheduler_config",), [], "scheduler_config is []: expected an object"),
        (
            ("template",),
            "a photo of <*>\nerror: all good",
            "template is 'a photo of <*>\\nerror: all good': expected a",
        ),
        (("created_with", "onnx"), 1.17, "created_with.onnx is 1.17: expected a string without control characters"),
        (("recipe", "decoder"), "vqgan", "recipe.decoder is 'vqgan': expected one of sd-vae, taesd"),
        (("recipe", "scheduler"), "heun", "recipe.scheduler is 'heun': expected one of dpm++2m, pndm, ddim, euler"),
        (("recipe", "steps"), 0, "recipe.steps is 0: expected a whole number 1 or more"),
        (("recipe", "guidance"), float("inf"), "recipe.guidance is inf: expected a finite number from 1 to 50"),
        (("recipe", "guidance"), 50.5, "recipe.guidance is 50.5: expected a finite number from 1 to 50"),
        (
            ("recipe", "steps"),
            1001,
            "recipe.steps is 1001: expected a whole number from 1 to 998 (the most dpm++2m",
        ),  # "leading"
        (("scheduler_config", "beta_start"), "x", "scheduler_config.beta_start is 'x': expected a number in (0, 1)"),
        (("scheduler_config", "beta_start"), -1e-4, "scheduler_config.beta_start is -0.0001: expected a number in"),
        (("scheduler_config", "lambda_min_clipped"), "-5", "scheduler_config.lambda_min_clipped is '-5': expected"),
        (("scheduler_config", "trained_betas"), [0.5], "scheduler_config.trained_betas is [0.5]: expected null or"),
        (("scheduler_config", "timestep_spacing"), 1, "scheduler_config.timestep_spacing is 1: expected one of"),
        (
            ("scheduler_config", "prediction_type"),
            "v_prediction",
            "prediction_type is 'epsilon', scheduler_config.prediction_type 'v_prediction' (what the schedulers use)",
        ),
        (("recipe", "eta"), 1.5, "recipe.eta is 1.5: expected a finite number from 0 to 1"),
        (("recipe", "eta"), "0", "recipe.eta is '0': expected a finite number from 0 to 1"),
        (("recipe", "eta"), 0.5, "recipe.eta is 0.5: expected 0 (dpm++2m has no eta; only ddim and tcd take one)"),
        (
            ("recipe", "timestep_spacing"),
            "sideways",
            "recipe.timestep_spacing is 'sideways': expected one of leading, trailing, linspace",
        ),
        (("recipe", "timestep_spacing"), 0, "recipe.timestep_spacing is 0: expected one of leading, trailing"),
        (("recipe", "unet_batches"), [2, 2], "recipe.unet_batches is [2, 2]: expected [1], [2] or [1, 2]"),
        (("recipe", "unet_batches"), [], "recipe.unet_batches is []: expected [1], [2] or [1, 2]"),
        (("recipe", "unet_batches"), [3], "recipe.unet_batches[0] is 3: expected a whole number from 1 to 2"),
        (("engines", "unet", "name"), "vae_decoder", "engines.unet.name is 'vae_decoder': expected 'unet'"),
        (("engines", "unet", "precision"), "fp64", "engines.unet.precision is 'fp64': expected one of fp32"),
        (("engines", "unet", "inputs", 0, "shape", 1), 0, "engines.unet.inputs[0].shape[1] is 0: expected a whole"),
        (
            ("engines", "unet", "inputs", 0, "shape", 0),
            -2,
            "engines.unet.inputs[0].shape[0] is -2: expected a whole number 1 or more, or -1",
        ),
        (("engines", "unet", "inputs", 0, "dtype"), None, "engines.unet.inputs[0].dtype is None: expected a string"),
        (("engines", "unet", "plans"), {}, "engines.unet.plans is {}: expected an array"),
        (("engines", "unet", "parity", "tolerance"), -1, "engines.unet.parity.tolerance is -1: expected a finite"),
        (
            ("engines", "unet", "parity", "outputs", 0, "max_rel"),
            float("nan"),
            "engines.unet.parity.outputs[0].max_rel is nan: expected a number >= 0",
        ),
        (("engines", "unet", "variants", 0, "devices", 0), 0, "engines.unet.variants[0].devices[0] is 0: expected a"),
        (("files", 0), {"\n": None}, "files[0].path is missing"),  # the unknown key was quoted raw
    ],
)
def test_a_manifest_field_off_its_type_or_range_is_refused_in_one_line_naming_it(bundle, path, value, expected):
    edit_manifest(bundle, lambda manifest: set_field(manifest, path, value))
    assert refusal(bundle, "manifest.json: " + re.escape(expected)).startswith(str(bundle / "manifest.json"))


def test_the_recipes_spacing_sets_the_step_bound_a_manifest_is_held_to(bundle):
    """1000 dpm++2m steps put two steps on one timestep at the config's "leading" spacing, not at "trailing"."""
    edit_manifest(bundle, lambda manifest: manifest["recipe"].update(steps=1000, timestep_spacing="trailing"))
    assert Bundle.open(bundle).manifest.recipe.sampling.steps == 1000
    edit_manifest(bundle, lambda manifest: manifest["recipe"].update(timestep_spacing=None))
    refusal(bundle, re.escape("recipe.steps is 1000: expected a whole number from 1 to 998 (the most dpm++2m"))


def test_a_schema_3_manifest_reads_as_eta_0_and_the_configs_spacing(bundle):
    def to_schema_3(manifest):
        manifest["schema_version"] = 3
        for key in ("eta", "timestep_spacing"):
            del manifest["recipe"][key]
        manifest["recipe"].update(scheduler="ddim", steps=30)

    edit_manifest(bundle, to_schema_3)
    assert Bundle.open(bundle).manifest.recipe.sampling == Sampling("ddim", 30, 7.5, 0.0, None)
    edit_manifest(bundle, lambda manifest: manifest.update(schema_version=4))  # 4 must say them
    refusal(bundle, re.escape("manifest.json: recipe.eta is missing"))


def test_a_recipe_with_eta_and_spacing_is_written_and_read_back(bundle):
    recipe = Sampling("ddim", 40, 6.0, 0.25, "linspace")
    manifest = read_manifest(bundle)
    write_manifest(bundle, replace(manifest, recipe=replace(manifest.recipe, sampling=recipe)))
    written = json.loads((bundle / "manifest.json").read_text())["recipe"]
    assert {key: written[key] for key in recipe.to_json()} == recipe.to_json()  # flat beside the batches and decoder
    assert Bundle.open(bundle).manifest.recipe.sampling == recipe


@pytest.mark.parametrize("where", ["engines", "sources"])
def test_a_manifest_key_holding_a_control_character_is_refused_quoted(bundle, where):
    def change(manifest):
        if where == "engines":
            manifest["engines"]["unet\nerror: all good"] = manifest["engines"].pop("unet")
        else:
            manifest["sources"][0]["files"]["a\rb"] = "0" * 64

    edit_manifest(bundle, change)
    field = "engines" if where == "engines" else r"sources\[0\].files"
    refusal(bundle, f"manifest.json: {field} has the key '.*\\\\[nr].*': expected keys without control characters")


def test_keys_the_manifest_schema_does_not_name_are_ignored_and_an_infinite_parity_error_reads(bundle):
    def change(manifest):
        manifest["written_by_a_newer_export"] = {"anything": [1]}
        manifest["engines"]["unet"]["file"]["note"] = "kept aside"
        manifest["engines"]["unet"]["parity"]["outputs"][0]["max_abs"] = float("inf")  # what a NaN output records

    edit_manifest(bundle, change)
    assert Bundle.open(bundle).manifest.engines["unet"].parity.outputs[0].max_abs == float("inf")


def test_a_parity_error_of_a_non_finite_output_is_infinite_and_the_manifest_reads_it_back(bundle):
    finite, broken = np.ones(4, np.float32), np.array([1, np.nan, 1, 1], np.float32)
    errors = [OutputError.measure(f"out{i}", *pair) for i, pair in enumerate([(broken, finite), (finite, broken)])]
    assert all(e.max_abs == e.max_rel == float("inf") for e in errors)  # a NaN reference measured NaN before
    manifest = read_manifest(bundle)
    unet = manifest.engines["unet"]
    written = replace(
        manifest,
        engines={**manifest.engines, "unet": replace(unet, parity=replace(unet.parity, outputs=tuple(errors)))},
    )
    write_manifest(bundle, written)
    assert read_manifest(bundle) == written


def test_a_manifest_not_in_utf8_or_too_big_is_refused_in_one_line(bundle):
    manifest = bundle / "manifest.json"
    manifest.write_bytes(b"\xee{}")  # read_text raised UnicodeDecodeError
    refusal(bundle, re.escape(f"{manifest}: not UTF-8 text (invalid continuation byte at byte 0)"))
    manifest.write_bytes(b" " * MAX_MANIFEST_BYTES + b"{}")
    refusal(bundle, re.escape(f"{manifest}: larger than 16 MiB; not a manifest"))


def test_an_unreadable_manifest_is_refused_in_one_line(bundle):
    manifest = bundle / "manifest.json"
    manifest.unlink()
    # a regular file that no user, root included, can read from its start (a mode of 000 would not stop root)
    manifest.symlink_to("/proc/self/mem")
    refusal(bundle, re.escape(f"{manifest}: cannot be read (Input/output error)"))


def test_a_symlink_leading_outside_the_bundle_is_refused(bundle, tmp_path):
    data = bundle / "unet.onnx.data"
    outside = tmp_path / "elsewhere.data"
    shutil.move(data, outside)
    data.symlink_to(outside)  # the same bytes, so the sha256 matches: only the place is wrong
    message = refusal(bundle, r"engines.unet.data.path is 'unet.onnx.data': through a symlink it leads to ")
    assert f"{outside.resolve()}, outside the bundle {bundle.resolve()}" in message


def test_a_symlinked_folder_leading_outside_the_bundle_is_refused(bundle, tmp_path):
    tokenizer = bundle / "tokenizer"
    shutil.move(tokenizer, tmp_path / "tokenizer-elsewhere")
    tokenizer.symlink_to(tmp_path / "tokenizer-elsewhere", target_is_directory=True)
    refusal(bundle, "tokenizer is 'tokenizer': through a symlink it leads to .*outside the bundle")


def test_a_symlink_that_stays_inside_the_bundle_is_followed(bundle, tmp_path):
    """Allowed: the file it reaches is inside the bundle and hash-checked like any other (say, data files kept in a
    subfolder); and a bundle folder reached through a symlink (engines/current -> engines/v3) is its target."""
    (bundle / "blobs").mkdir()
    shutil.move(bundle / "unet.onnx.data", bundle / "blobs" / "unet.data")
    (bundle / "unet.onnx.data").symlink_to(Path("blobs") / "unet.data")
    current = tmp_path / "current"
    current.symlink_to(bundle, target_is_directory=True)
    opened = Bundle.open(current)
    session = ort.InferenceSession(str(opened.engine_path("unet")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["sample", "timestep", "encoder_hidden_states"]


def test_a_symlinked_file_is_stamped_by_its_resolved_path_as_the_cpp_runtime_does(bundle, tmp_path, monkeypatch):
    """The hash cache is shared with the C++ runtime, which stamps the symlink-resolved path (manifest.cpp's
    ``weakly_canonical``): the same stamp from both, so alternating the runtimes re-hashes nothing."""
    (bundle / "blobs").mkdir()
    shutil.move(bundle / "unet.onnx.data", bundle / "blobs" / "unet.data")
    (bundle / "unet.onnx.data").symlink_to(Path("blobs") / "unet.data")
    current = tmp_path / "current"
    current.symlink_to(bundle, target_is_directory=True)
    opened = Bundle.open(current, verify="full")
    target = (bundle / "blobs" / "unet.data").resolve()
    assert opened.stamps["unet.onnx.data"][:2] == [str(target), target.stat().st_size]
    assert all(stamp[0] == str(Path(stamp[0]).resolve()) for stamp in opened.stamps.values())
    hashed = []
    monkeypatch.setattr("runtime.bundle.file_sha256", lambda path: hashed.append(path) or "0" * 64)
    Bundle.open(bundle).engine_path("unet", "cpu")  # quick: the cache written through the other spelling is trusted
    assert hashed == []


def test_a_file_swapped_after_opening_is_refused_when_it_is_about_to_be_read(bundle, tmp_path):
    opened = Bundle.open(bundle)
    graph = bundle / "unet.fused.onnx"
    outside = tmp_path / "unet.fused.onnx"
    shutil.copy(graph, outside)
    graph.unlink()
    graph.symlink_to(outside)  # a symlink changed behind the runtime's back
    with pytest.raises(BundleError, match="engines.unet.variants\\[0\\].file.path is 'unet.fused.onnx': through"):
        opened.engine_path("unet", "cpu")
    graph.unlink()
    shutil.copy(outside, graph)
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")  # same size, new mtime, other bytes
    with pytest.raises(BundleError, match="unet.fused.onnx: changed since the bundle was opened"):
        opened.engine_path("unet", "cpu")
    data = bundle / "unet.onnx.data"  # the file ONNX Runtime reads the weights from is checked with the graph
    shutil.move(data, tmp_path / "unet.onnx.data")
    data.symlink_to(tmp_path / "unet.onnx.data")
    with pytest.raises(BundleError, match="engines.unet.data.path is 'unet.onnx.data': through a symlink"):
        opened.engine_path("unet", "tensorrt")


def with_external_location(graph: Path, location: str) -> None:
    """Point the first external tensor of the ONNX file ``graph`` at ``location`` (its weights stay where they are)."""
    model = onnx.load(str(graph), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL)
    next(e for e in tensor.external_data if e.key == "location").value = location
    onnx.save_model(model, str(graph))


def keep_manifest_consistent(folder: Path, engine: str, graph: str) -> None:
    """Record the true sha256 and size of ``graph`` in the manifest, as a crafted bundle would."""

    def change(manifest):
        entry = manifest["engines"][engine]["file"]
        entry["sha256"], entry["size"] = sha256(folder / graph), (folder / graph).stat().st_size

    edit_manifest(folder, change)


@pytest.mark.parametrize("location", ["../secret", "/SECRET", "unet.fused.onnx", "./unet.onnx.data"])
def test_an_onnx_file_reading_external_data_the_manifest_does_not_hash_is_refused(bundle, tmp_path, location):
    secret = tmp_path / "secret"
    secret.write_bytes((bundle / "unet.onnx.data").read_bytes())  # enough bytes for any tensor's offset
    location = location.replace("/SECRET", str(secret))
    with_external_location(bundle / "unet.onnx", location)
    keep_manifest_consistent(bundle, "unet", "unet.onnx")
    message = refusal(bundle, f"unet.onnx reads external data from {location!r}")
    assert "may read its data file unet.onnx.data" in message


def test_onnxruntime_itself_refuses_external_data_outside_the_model_folder(tmp_path):
    """The installed ONNX Runtime (pyproject's floor: 1.24.1) refuses a location with '..' or an absolute one; before
    1.24 it read the file (1.23.2 returned the bytes of ../secret)."""
    (tmp_path / "model").mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    for location in ("../secret", str(secret)):
        weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
        for key, value in {"location": location, "offset": "0", "length": "16"}.items():
            weights.external_data.add(key=key, value=value)
        graph = helper.make_graph(
            [helper.make_node("Identity", ["w"], ["y"])],
            "g",
            [],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
            [weights],
        )
        path = tmp_path / "model" / "crafted.onnx"
        onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
        assert external_locations(path) == [location]
        with pytest.raises(Exception, match="External data path|[Aa]bsolute path"):
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def external_tensor(name: str, location: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    tensor.external_data.add(key="offset", value="0")
    tensor.external_data.add(key="location", value=location)
    return tensor


def test_external_locations_are_found_wherever_onnx_puts_a_tensor():
    """Initializers, sparse initializers, Constant attributes, If subgraphs and functions: each may hold external
    data, and ONNX Runtime would load each; the reader finds all of them (and no inline tensor)."""
    inline = helper.make_tensor("inline", TensorProto.FLOAT, [1], [1.0])
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["b"], value=external_tensor("c", "in-subgraph"))],
        "branch",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
    )
    sparse = helper.make_sparse_tensor(external_tensor("sv", "sparse-values"), external_tensor("si", "sparse-idx"), [4])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["k"], value=external_tensor("k", "in-attribute")),
            helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
        ],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [external_tensor("w", "initializer"), inline],
        sparse_initializer=[sparse],
    )
    function = helper.make_function(
        "local", "f", [], ["z"], [helper.make_node("Constant", [], ["z"], value=external_tensor("f", "in-function"))],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17)])
    found = external_locations_of_bytes(model.SerializeToString())
    assert sorted(found) == sorted(
        ["initializer", "sparse-values", "sparse-idx", "in-attribute", "in-subgraph", "in-subgraph", "in-function"]
    )


def external_locations_of_bytes(data: bytes) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        path.write_bytes(data)
        return external_locations(path)


def test_a_location_that_is_not_utf8_matches_no_manifest_path():
    """ONNX Runtime opens a location's raw bytes: b"w\\xff" must not read as the text "w\\ufffd", which a manifest
    could name (and hash) while the graph reads another file."""

    def length_delimited(number: int, payload: bytes) -> bytes:  # protobuf: key, length, bytes (all under 128 here)
        return bytes([number << 3 | 2, len(payload)]) + payload

    entry = length_delimited(1, b"location") + length_delimited(2, b"w\xff")
    tensor = length_delimited(13, entry)  # TensorProto.external_data
    model = length_delimited(7, length_delimited(5, tensor))  # ModelProto.graph -> GraphProto.initializer
    (found,) = external_locations_of_bytes(model)
    assert found != "w\ufffd" and path_problem(found) == "it is not UTF-8"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_give_locations_or_one_malformed_error(data):
    try:
        found = external_locations_of_bytes(data)
    except MalformedProtobuf as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(location, str) for location in found)


def test_an_onnx_file_that_is_not_protobuf_is_refused_in_one_line(bundle):
    (bundle / "unet.onnx").write_bytes(b"\x0a\xff\xff\xff\xff\x0f not protobuf")  # field 1, length past the end
    keep_manifest_consistent(bundle, "unet", "unet.onnx")
    refusal(bundle, "unet.onnx is not an ONNX file")


def rewrite_keeping_size_and_mtime(path: Path) -> None:
    """Change bytes of ``path`` behind an unchanged size and mtime (what a quick check cannot see)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_full_verification_finds_a_file_changed_behind_an_unchanged_size_and_mtime(bundle, monkeypatch):
    Bundle.open(bundle)  # hashes everything once and remembers each file's size and mtime
    rewrite_keeping_size_and_mtime(bundle / "vae_decoder.onnx.data")
    Bundle.open(bundle)  # quick: trusted (the documented trade-off, docs/bundles.md)
    refusal(bundle, "vae_decoder.onnx.data has sha256", verify="full")
    monkeypatch.setenv(VERIFY_VARIABLE, "full")  # what every command that opens a bundle honours
    refusal(bundle, "vae_decoder.onnx.data has sha256")
    monkeypatch.setenv(VERIFY_VARIABLE, "thorough")
    with pytest.raises(ConfigError, match="AUDIOTOKEN_RT_VERIFY='thorough': expected one of quick, full"):
        Bundle.open(bundle)


def test_info_verify_full_refuses_what_the_quick_check_lets_through(bundle):
    runner = CliRunner()
    assert runner.invoke(app, ["info", str(bundle), "--verify", "quick"]).exit_code == 0  # remembers every file
    rewrite_keeping_size_and_mtime(bundle / "vae_decoder.onnx.data")
    quick = runner.invoke(app, ["info", str(bundle), "--verify", "quick"])
    assert quick.exit_code == 0 and "were not hashed again" in " ".join(quick.output.split())  # rich wraps lines
    for arguments in (["--verify", "full"], []):  # full is info's default
        full = runner.invoke(app, ["info", str(bundle), *arguments])
        assert full.exit_code == 1
        errors = [line for line in full.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "vae_decoder.onnx.data has sha256" in errors[0]
        assert "Traceback" not in full.output


def test_the_path_rule_itself():
    assert bundle_path("f", "tokenizer/vocab.json") == Path("tokenizer/vocab.json")
    assert bundle_path("f", "a..b/c.d") == Path("a..b/c.d")  # '..' only as a whole part is a parent
    for bad in ("a/", "/a", "a/./b", "..", "a\\b", "\udc80", "é" * 128 + "/x"):
        with pytest.raises(BundleError, match="^f is "):
            bundle_path("f", bad)
