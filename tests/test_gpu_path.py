"""The GPU path, checked where no GPU is: TensorRT API use, provider fall-back, caches, limits, and the doctor.

TensorRT and onnxruntime-gpu cannot be installed here. What runs on a device is checked statically (pyright
against TensorRT's published stubs, in ``just lint``; the AST scan below for what TensorRT 11 removed) and by
the gpu-marked tests in test_export.py; what surrounds the device calls is tested here, against fakes only
where the real thing needs a GPU (an ONNX Runtime session that fell back to the CPU).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from runtime.backends import OnnxRuntimeBackend, tensorrt_provider_cache
from runtime.bundle import Bundle
from runtime.commands.doctor import check_bundle, compare_engines, device_ready
from runtime.errors import BundleError, ConfigError
from runtime.pipeline import Pipeline
from runtime.tensorrt import import_tensorrt, plan_name, version_tuple
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


TRT_VERSION, GPU = "10.13.0.35", "NVIDIA H100 80GB HBM3"  # a plan's recorded build, faked: no TensorRT here


def bundle_with_plan(tiny_bundle, folder: Path, recorded_sha256: str | None = None) -> tuple[Path, str]:
    """A copy of the tiny bundle whose manifest records a UNet plan for TRT_VERSION on GPU (a file of made-up bytes,
    its true sha256 unless ``recorded_sha256``), plus a VAE decoder plan on disk that the manifest does not list."""
    bundle = Path(shutil.copytree(tiny_bundle, folder))
    plan = bundle / plan_name("unet", TRT_VERSION, GPU)
    plan.write_bytes(b"serialized TensorRT engine")
    (bundle / plan_name("vae_decoder", TRT_VERSION, GPU)).write_bytes(b"a plan nobody recorded")
    manifest = json.loads((bundle / "manifest.json").read_text())
    unet = manifest["engines"]["unet"]
    digest = recorded_sha256 or hashlib.sha256(plan.read_bytes()).hexdigest()
    unet["plans"] = [
        {
            "file": {"path": plan.name, "sha256": digest, "size": plan.stat().st_size},
            "tensorrt_version": TRT_VERSION,
            "gpu": GPU,
            "parity": unet["parity"],
        }
    ]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle, plan.name


def test_a_plan_whose_sha256_is_not_the_manifests_is_refused_before_tensorrt_is_imported(
    tiny_bundle, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # any `import tensorrt` would now raise ImportError
    bundle, plan = bundle_with_plan(tiny_bundle, tmp_path / "bundle", recorded_sha256="0" * 64)
    with pytest.raises(BundleError, match=f"{re.escape(plan)} has sha256 [0-9a-f]{{12}}..., the manifest says 0000"):
        Bundle.open(bundle)


class LoadedPlan:
    """Stands for ``runtime.tensorrt.Engine``: records which file the backend handed to TensorRT."""

    loaded: list = []

    def __init__(self, path, use_cuda_graph=False):
        self.loaded.append((path, use_cuda_graph))

    def infer(self, feeds):
        return {}


def test_the_tensorrt_backend_loads_only_the_plans_the_manifest_records(tiny_bundle, tmp_path, monkeypatch):
    import threading

    import runtime.tensorrt as trt_backend

    bundle, plan = bundle_with_plan(tiny_bundle, tmp_path / "bundle")
    monkeypatch.setattr(trt_backend, "Engine", LoadedPlan)
    monkeypatch.setattr(LoadedPlan, "loaded", [])

    def backend_on(gpu: str) -> trt_backend.TensorRTBackend:  # the backend as __init__ leaves it, minus TensorRT
        backend = object.__new__(trt_backend.TensorRTBackend)
        backend.bundle, backend.suffix, backend.use_cuda_graph = Bundle.open(bundle), (TRT_VERSION, gpu), True
        backend.engines, backend.lock = {}, threading.Lock()
        return backend

    backend = backend_on(GPU)
    backend.run("unet", {})
    assert LoadedPlan.loaded == [(bundle.resolve() / plan, True)]
    with pytest.raises(BundleError, match=f"no TensorRT plan of vae_decoder for TensorRT {TRT_VERSION} on {GPU} "):
        backend.run("vae_decoder", {})  # its plan file lies in the folder, under the expected name: not listed
    with pytest.raises(
        BundleError, match=f"TensorRT {TRT_VERSION} on NVIDIA L4 \\(it has: TensorRT {TRT_VERSION} on {GPU}"
    ):
        backend_on("NVIDIA L4").run("unet", {})
    backend = backend_on(GPU)
    (bundle / plan).write_bytes(b"serialized TensorRT enginE")  # rewritten after the bundle was opened
    with pytest.raises(BundleError, match="changed since the bundle was opened"):
        backend.run("unet", {})
    assert len(LoadedPlan.loaded) == 1  # nothing else reached TensorRT


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


@pytest.mark.optional  # skips where TensorRT is installed
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


@pytest.mark.optional  # skips where onnxruntime-gpu is installed
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
