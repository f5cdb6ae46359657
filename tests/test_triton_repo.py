"""``audiotoken-rt triton-repo``: the model repository's structure and configurations (parsed as Triton's own
ModelConfig protobuf: the BLS model's queue and request limits included), its engine models loadable by ONNX Runtime
from where Triton would look, and the BLS model's logic run against a stand-in for Triton's Python-backend module
whose engine calls go to those files through ONNX Runtime: its picture is the CLI's, a bad request one line. Writing
is safe: ``--overwrite`` keeps the old repository until the new one is complete, and neither a symlink in the bundle
or in the old output nor a path that climbs out can make it write outside its output. Triton's container itself
cannot run here."""

from __future__ import annotations

import os
import shutil
import sys
import types

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import json_format, text_format
from typer.testing import CliRunner

from runtime.bundle import Bundle
from runtime.contract import engine_contracts
from runtime.pipeline import GenerationOptions, Pipeline


@pytest.fixture(scope="module")
def repository(tiny_bundle, tmp_path_factory):
    from audiotoken_rt.cli import app

    out = tmp_path_factory.mktemp("triton") / "repo"
    result = CliRunner().invoke(app, ["triton-repo", str(tiny_bundle), str(out)])
    assert result.exit_code == 0, result.output
    return out


def parse(path):
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_every_engine_is_an_onnxruntime_model_with_the_contracts_io(repository, tiny_bundle):
    manifest = Bundle.open(tiny_bundle).manifest
    contracts = engine_contracts(manifest.dims)
    for name, contract in contracts.items():
        config = parse(repository / name / "config.pbtxt")
        assert (config.name, config.platform, config.max_batch_size) == (name, "onnxruntime_onnx", 0)
        assert [(i.name, list(i.dims)) for i in config.input] == [(s.name, list(s.shape)) for s in contract.inputs]
        assert [(o.name, list(o.dims)) for o in config.output] == [(s.name, list(s.shape)) for s in contract.outputs]
        session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == [s.name for s in contract.inputs]
    bls = parse(repository / "audiotoken" / "config.pbtxt")
    assert bls.backend == "python" and [o.name for o in bls.output] == ["IMAGE", "SEED_USED"]
    assert {i.name for i in bls.input if not i.optional} == {"AUDIO", "SAMPLE_RATE"}
    queue = bls.dynamic_batching.default_queue_policy  # serve's defaults: 8 waiting, 60 s each, then refused
    assert (queue.max_queue_size, queue.default_timeout_microseconds, queue.allow_timeout_override) == (
        8,
        60_000_000,
        False,
    )
    assert queue.timeout_action == queue.REJECT
    assert {k: v.string_value for k, v in bls.parameters.items()} == {"max_steps": "100", "max_samples": "8000000"}
    assert (repository / "audiotoken" / "1" / "model.py").is_file()
    Bundle.open(repository / "audiotoken" / "1" / "bundle")  # complete: every file hashes as the manifest says


def test_an_existing_repository_is_not_replaced_without_asking(repository, tiny_bundle):
    from audiotoken_rt.cli import app

    result = CliRunner().invoke(app, ["triton-repo", str(tiny_bundle), str(repository)])
    assert result.exit_code == 1 and result.output.startswith(f"error: {repository}: already exists")


class FakeTensor:
    def __init__(self, name, value):
        self._name, self._value = name, np.asarray(value)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._value


def python_backend(repository) -> types.ModuleType:
    """A stand-in for triton_python_backend_utils: BLS calls run the repository's ONNX files with ONNX Runtime."""
    module = types.ModuleType("triton_python_backend_utils")
    sessions: dict[str, ort.InferenceSession] = {}

    class Response:
        def __init__(self, output_tensors=(), error=None):
            self.outputs, self._error = list(output_tensors), error

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

        def output_tensors(self):
            return self.outputs

    class Request:
        def __init__(self, model_name, requested_output_names, inputs):
            self.model, self.names, self.inputs = model_name, requested_output_names, inputs

        def exec(self):
            if self.model not in sessions:
                path = repository / self.model / "1" / "model.onnx"
                sessions[self.model] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            values = sessions[self.model].run(self.names, {t.name(): t.as_numpy() for t in self.inputs})
            return Response([FakeTensor(n, v) for n, v in zip(self.names, values, strict=True)])

    class Error:
        INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

        def __init__(self, message, code=INTERNAL):
            self._message, self.code = message, code

        def message(self):
            return self._message

    module.Tensor = FakeTensor
    module.InferenceRequest = Request
    module.InferenceResponse = Response
    module.TritonError = Error
    module.get_input_tensor_by_name = lambda request, name: request.get(name)
    module.get_output_tensor_by_name = lambda response, name: next(t for t in response.outputs if t.name() == name)
    return module


def test_the_bls_model_draws_the_cli_picture_and_answers_a_bad_request_with_an_error(
    repository, tiny_bundle, clips, monkeypatch
):
    import soundfile as sf

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", python_backend(repository))
    monkeypatch.delitem(sys.modules, "runtime.serving.triton_model", raising=False)
    from runtime.serving.triton_model import TritonPythonModel

    model = TritonPythonModel()
    config = json_format.MessageToJson(
        parse(repository / "audiotoken" / "config.pbtxt"), preserving_proto_field_name=True
    )
    model.initialize({"model_repository": str(repository / "audiotoken"), "model_version": "1", "model_config": config})
    samples, rate = sf.read(clips[0], dtype="float32", always_2d=True)  # [N, C]
    good = {
        "AUDIO": FakeTensor("AUDIO", samples),
        "SAMPLE_RATE": FakeTensor("SAMPLE_RATE", np.array([rate], np.int32)),
        "SEED": FakeTensor("SEED", np.array([5], np.int64)),
        "STEPS": FakeTensor("STEPS", np.array([2], np.int32)),
    }
    bad = {**good, "STEPS": FakeTensor("STEPS", np.array([101], np.int32))}  # over the configured --max-steps 100
    no_slot = {**good, "PROMPT": FakeTensor("PROMPT", np.array([b"a dog"], object))}
    answered, refused, refused_prompt = model.execute([good, bad, no_slot])
    image = next(t for t in answered.output_tensors() if t.name() == "IMAGE").as_numpy()
    expected = Pipeline.open(tiny_bundle).generate(clips[0], GenerationOptions(seed=5, steps=2))[0]
    assert np.array_equal(image, np.asarray(expected))
    assert refused.has_error() and refused.error().code == "INVALID_ARG"
    assert refused.error().message() == "STEPS 101: expected 1 to 100 (this server's --max-steps)"
    assert refused_prompt.error().code == "INVALID_ARG" and "\n" not in refused_prompt.error().message()
    assert refused_prompt.error().message().startswith("prompt template 'a dog' holds <*> 0 times")


def tree(folder) -> dict[str, bytes]:
    """Every file under ``folder`` (symlinks as their targets' names) by relative path: what a check compares."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path.relative_to(folder))] = path.read_bytes()
    return found


def test_overwrite_keeps_the_old_repository_until_the_new_one_is_complete(
    repository, tiny_bundle, tmp_path, monkeypatch
):
    from audiotoken_rt.cli import app
    from runtime.serving import triton_repo

    out = tmp_path / "repo"
    shutil.copytree(repository, out)
    before = tree(out)
    written = triton_repo.Staging.write

    def fail_at_the_last_file(self, relative, data):
        if relative == "audiotoken/config.pbtxt":
            raise OSError(28, "No space left on device")
        written(self, relative, data)

    monkeypatch.setattr(triton_repo.Staging, "write", fail_at_the_last_file)
    result = CliRunner().invoke(app, ["triton-repo", str(tiny_bundle), str(out), "--overwrite"])
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert tree(out) == before  # untouched: today's code deleted it before building
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no half-built folder left beside it

    monkeypatch.undo()
    result = CliRunner().invoke(app, ["triton-repo", str(tiny_bundle), str(out), "--overwrite", "--max-queue", "3"])
    assert result.exit_code == 0, result.output
    assert parse(out / "audiotoken" / "config.pbtxt").dynamic_batching.default_queue_policy.max_queue_size == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_no_symlink_in_the_bundle_or_the_old_output_makes_it_write_outside(repository, tiny_bundle, tmp_path):
    from audiotoken_rt.cli import app

    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"not to be written")
    # a bundle whose engine data file is a symlink to a file outside it (same bytes: its sha256 matches)
    crafted = tmp_path / "crafted"
    shutil.copytree(tiny_bundle, crafted)
    (outside / "unet.onnx.data").write_bytes((crafted / "unet.onnx.data").read_bytes())
    (crafted / "unet.onnx.data").unlink()
    (crafted / "unet.onnx.data").symlink_to(outside / "unet.onnx.data")
    # an old output whose files and folders are symlinks to the victim and to the outside folder
    old = tmp_path / "old"
    shutil.copytree(repository, old)
    for name in ("audiotoken/1/model.py", "audiotoken/config.pbtxt", "unet/1/model.onnx"):
        (old / name).unlink()
        (old / name).symlink_to(victim)
    shutil.rmtree(old / "vae_decoder" / "1")
    (old / "vae_decoder" / "1").symlink_to(outside, target_is_directory=True)
    linked = tmp_path / "linked"  # the output itself a symlink to the outside folder
    linked.symlink_to(outside, target_is_directory=True)
    before = tree(outside)

    result = CliRunner().invoke(app, ["triton-repo", str(crafted), str(tmp_path / "new")])
    assert result.exit_code == 1 and result.output.count("\n") <= 2 and "outside the bundle" in result.output
    assert not (tmp_path / "new").exists()
    for out in (old, linked):
        result = CliRunner().invoke(app, ["triton-repo", str(tiny_bundle), str(out), "--overwrite"])
        assert result.exit_code == 0, result.output
        assert not out.is_symlink() and (out / "audiotoken" / "1" / "model.py").is_file()
        assert not any(path.is_symlink() for path in out.rglob("*"))
    assert tree(outside) == before


@pytest.mark.parametrize("relative", ["../escape", "/etc/escape", "a/../../escape", "unet/../../escape", ""])
def test_staging_refuses_a_path_that_leaves_it(tmp_path, relative):
    from runtime.errors import BundleError
    from runtime.serving.triton_repo import Staging

    staging = Staging(tmp_path / "staging")
    staging.root.mkdir()
    with pytest.raises(BundleError, match="not a plain relative path"):
        staging.write(relative, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging"] and not any(staging.root.iterdir())


def test_staging_writes_neither_twice_nor_through_a_symlink(tmp_path):
    from runtime.errors import BundleError
    from runtime.serving.triton_repo import Staging

    outside = tmp_path / "outside"
    outside.mkdir()
    staging = Staging(tmp_path / "staging")
    staging.root.mkdir()
    staging.write("a/b.txt", b"first")
    with pytest.raises(BundleError, match="names this file twice"):
        staging.write("a/b.txt", b"second")
    with pytest.raises(BundleError, match="names this file twice"):
        staging.link(tmp_path / "staging" / "a" / "b.txt", "a/b.txt")
    (staging.root / "a" / "c.txt").symlink_to(outside / "victim")  # a dangling link: "x" mode must not follow it
    with pytest.raises(BundleError, match="names this file twice"):
        staging.write("a/c.txt", b"through")
    (staging.root / "d").symlink_to(outside, target_is_directory=True)
    with pytest.raises(BundleError, match="leads outside"):
        staging.write("d/e.txt", b"through")
    assert (staging.root / "a" / "b.txt").read_bytes() == b"first" and not any(outside.iterdir())
