"""``audiotoken-rt triton-repo``: the model repository's structure and configurations (parsed as Triton's own
ModelConfig protobuf), its engine models loadable by ONNX Runtime from where Triton would look, and the BLS model's
logic run against a stand-in for Triton's Python-backend module whose engine calls go to those files through ONNX
Runtime: its picture is the CLI's. Triton's container itself cannot run here."""

from __future__ import annotations

import sys
import types

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
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
        def __init__(self, message):
            self._message = message

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
    monkeypatch.delitem(sys.modules, "runtime.triton_model", raising=False)
    from runtime.triton_model import TritonPythonModel

    model = TritonPythonModel()
    model.initialize({"model_repository": str(repository / "audiotoken"), "model_version": "1"})
    samples, rate = sf.read(clips[0], dtype="float32", always_2d=True)  # [N, C]
    good = {
        "AUDIO": FakeTensor("AUDIO", samples),
        "SAMPLE_RATE": FakeTensor("SAMPLE_RATE", np.array([rate], np.int32)),
        "SEED": FakeTensor("SEED", np.array([5], np.int64)),
        "STEPS": FakeTensor("STEPS", np.array([2], np.int32)),
    }
    bad = {**good, "STEPS": FakeTensor("STEPS", np.array([0], np.int32))}
    answered, refused = model.execute([good, bad])
    image = next(t for t in answered.output_tensors() if t.name() == "IMAGE").as_numpy()
    expected = Pipeline.open(tiny_bundle).generate(clips[0], GenerationOptions(seed=5, steps=2))[0]
    assert np.array_equal(image, np.asarray(expected))
    assert refused.has_error() and "steps is 0" in refused.error().message()
