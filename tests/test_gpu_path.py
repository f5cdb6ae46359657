"""The GPU path, checked where no GPU is: TensorRT API use, provider fall-back, caches, limits, and the doctor.

TensorRT and onnxruntime-gpu cannot be installed here. What runs on a device is checked statically (pyright
against TensorRT's published stubs, in ``just lint``; the AST scan below for what TensorRT 11 removed) and by
the gpu-marked tests in test_export.py; what surrounds the device calls is tested here, against fakes only
where the real thing needs a GPU (an ONNX Runtime session that fell back to the CPU).
"""

from __future__ import annotations

import ast
import sys
import types

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from runtime.backends import OnnxRuntimeBackend, tensorrt_provider_cache
from runtime.bundle import Bundle
from runtime.doctor import check_bundle, compare_engines, device_ready
from runtime.errors import ConfigError
from runtime.pipeline import Pipeline
from runtime.tensorrt import import_tensorrt, version_tuple
from tests.support import REPO

# The Python APIs TensorRT 11 removed (NVIDIA's 10.x -> 11.x migration guide, "Removed Python APIs"): a build
# that touches one dies with an AttributeError on 11.
REMOVED_IN_TENSORRT_11 = {
    "FP16",
    "INT8",
    "FP8",
    "BF16",
    "INT4",
    "FP4",
    "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS",
    "DIRECT_IO",
    "int8_calibrator",
    "set_calibration_profile",
    "set_quantization_flag",
    "set_output_type",
    "platform_has_fast_fp16",
    "platform_has_fast_int8",
    "device_memory_size",
}
TENSORRT_MODULES = ("runtime/tensorrt.py", "export/tensorrt.py")


@pytest.mark.parametrize("path", TENSORRT_MODULES)
def test_tensorrt_code_uses_no_api_that_tensorrt_11_removed(path):
    tree = ast.parse((REPO / path).read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not used & REMOVED_IN_TENSORRT_11
    layer_precision = [  # ILayer.precision = ... (weak typing's per-layer pin), also removed
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "precision" for t in node.targets)
    ]
    assert not layer_precision


def test_versions_compare_as_numbers():
    assert version_tuple("10.13.0.35") == (10, 13, 0, 35)
    assert version_tuple("11.0.0rc1") == (11, 0, 0)
    assert version_tuple("9.3.0") < (10, 0) <= version_tuple("10.0.1") < version_tuple("11.4.0.106")


def test_an_old_or_fake_tensorrt_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(ConfigError, match=r"TensorRT 8\.6\.1 is too old: audiotoken-rt needs 10\.0 or newer"):
        import_tensorrt()
    stubs_only = types.ModuleType("tensorrt")
    stubs_only.__path__ = ["/somewhere/site-packages/tensorrt"]  # a folder of .pyi files imports like this
    monkeypatch.setitem(sys.modules, "tensorrt", stubs_only)
    with pytest.raises(ConfigError, match="the 'tensorrt' module found here is not TensorRT"):
        import_tensorrt()


def test_a_missing_tensorrt_is_a_failed_device_check_with_the_install_line():
    check = device_ready("tensorrt", "cuda")
    if "tensorrt" in sys.modules or check.status == "ok":
        pytest.skip("TensorRT imports here")
    assert check.failed and "TensorRT is not installed" in check.detail
    assert "audiotoken-rt[trt]" in check.hint and "cuda-python" in check.hint


class FellBack:
    """What ONNX Runtime returns when the CUDA or TensorRT provider cannot load: a session on the CPU alone."""

    def __init__(self, *args, **kwargs):
        self.providers = kwargs["providers"]

    def get_providers(self):
        return ["CPUExecutionProvider"]


@pytest.mark.parametrize(("device", "library"), [("cuda", "libcudnn.so.9"), ("tensorrt", "libnvinfer.so.10")])
def test_a_provider_that_silently_fell_back_is_refused_naming_the_missing_library(
    tiny_bundle, monkeypatch, device, library
):
    if ort.get_device() == "GPU":
        pytest.skip("onnxruntime-gpu is installed here: its providers may really load")
    wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[device]
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: [wanted, "CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "InferenceSession", FellBack)
    backend = OnnxRuntimeBackend(Bundle.open(tiny_bundle), device=device)
    with pytest.raises(ConfigError) as caught:
        backend.session("unet")
    message = str(caught.value)
    assert f"ONNX Runtime could not start its {wanted} for engine unet" in message
    assert library in message  # none of the CUDA / TensorRT libraries exist on this machine
    assert "onnxruntime-gpu" in caught.value.hint


def test_tensorrt_provider_keeps_the_onnx_precisions_and_caches_outside_the_bundle(tiny_bundle, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    bundle = Bundle.open(tiny_bundle)
    backend = OnnxRuntimeBackend(bundle, device="tensorrt")
    for engine in ("audio_encoder", "unet"):
        (name, settings), *rest = backend.provider_chain(engine)
        assert name == "TensorrtExecutionProvider" and rest[0][0] == "CUDAExecutionProvider"
        assert settings["trt_fp16_enable"] is False  # the fbank's 1e13 frame power must not meet fp16
        cache = tmp_path / "cache" / "audiotoken-rt" / "onnxruntime-tensorrt" / ort.__version__ / bundle.manifest.key
        assert settings["trt_engine_cache_path"] == settings["trt_timing_cache_path"] == str(cache)
    assert tensorrt_provider_cache(bundle) == cache and tiny_bundle not in cache.parents


def test_tensorrt_provider_refuses_a_model_over_its_protobuf_limit(tiny_bundle, monkeypatch):
    import runtime.backends as backends

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    bundle = Bundle.open(tiny_bundle)
    unet = bundle.manifest.engines["unet"]
    size = unet.file.size + (unet.data.size if unet.data else 0)
    monkeypatch.setattr(backends, "TRT_PROVIDER_LIMIT", size - 1)  # this tiny UNet stands in for a 3.4 GB fp32 one
    with pytest.raises(
        ConfigError, match="engine unet is .* GB \\(fp32\\); ONNX Runtime's TensorRT provider takes models up to 2 GB"
    ) as caught:
        OnnxRuntimeBackend(bundle, device="tensorrt").session("unet")
    assert "--precision fp16" in caught.value.hint
    monkeypatch.setattr(backends, "TRT_PROVIDER_LIMIT", size)
    OnnxRuntimeBackend(bundle, device="tensorrt").check_provider_limits("unet")  # at the limit: accepted


class Perturbed:
    """A backend that computes one engine 1% off: what a device with a broken kernel would give."""

    def __init__(self, inner, engine):
        self.inner, self.engine = inner, engine
        self.name, self.device = "perturbed", "cpu"

    def run(self, engine, feeds):
        results = self.inner.run(engine, feeds)
        if engine == self.engine:
            return {k: v * np.float32(1.01) for k, v in results.items()}
        return results


def test_doctor_finds_an_engine_that_computes_differently(tiny_bundle):
    bundle = Bundle.open(tiny_bundle)
    reference = Pipeline.open(tiny_bundle)
    target = Pipeline(bundle, Perturbed(reference.backend, "unet"))
    checks = {c.name: c for c in compare_engines(target, reference)}
    assert checks["engine unet"].failed and "max rel error 1.0e-02 (tolerance 0.0001)" in checks["engine unet"].detail
    assert not any(c.failed for name, c in checks.items() if name != "engine unet")


def test_doctor_on_a_bundle_passes_every_check_against_the_torch_reference(tiny_bundle):
    checks = check_bundle(Bundle.open(tiny_bundle), "onnxruntime", "cpu")
    lines = {c.name: c for c in checks}
    assert lines["reference"].detail == "the torch backend on the cpu"
    assert {f"engine {n}" for n in ("audio_encoder", "text_encoder", "unet", "vae_decoder", "vae_encoder")} <= set(
        lines
    )
    assert not [c for c in checks if c.failed], checks
    assert lines["picture"].status == "ok" and lines["speed"].status == "info"


def test_doctor_command_prints_one_line_per_check_and_fails_on_a_missing_device(tiny_bundle):
    from audiotoken_rt.cli import app

    result = CliRunner().invoke(app, ["doctor", "--engines", str(tiny_bundle)])
    assert result.exit_code == 0, result.output
    assert "  ok engine unet: max rel error" in result.output and result.output.rstrip().endswith("all checks passed")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return
    result = CliRunner().invoke(app, ["doctor", "--engines", str(tiny_bundle), "--device", "cuda"])
    assert result.exit_code == 1
    assert "FAIL device: ONNX Runtime here has no CUDAExecutionProvider" in result.output
    assert "1 check failed: device" in result.output
