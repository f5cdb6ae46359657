"""The checks of ``audiotoken-rt doctor``: what this machine offers, and whether a bundle runs right on a device.

Place: ``export.doctor`` (the command) takes a bundle (``--engines``, or a tiny random one it exports) and calls
``machine_facts``, then ``check_bundle``; this module is torch-free, so a runtime-only install (a Jetson) checks the
bundles it has. Each check is one ``Check`` line: ``ok``, ``FAIL`` with what is wrong and what to do, ``info``
(versions, speed) or ``skip`` (with why).

What ``check_bundle`` compares: the chosen backend and device (the target) with a reference that runs the same
bundle elsewhere, ONNX Runtime on the CPU, the backend the export validated every engine on against PyTorch
(for a target that *is* ONNX Runtime on the CPU, the ``torch`` backend when it opens, else no reference):
1. each engine on seeded inputs from its contract, its output's max |target - reference| / max |reference| within
   the tolerance the export held that engine to (the manifest's);
2. a whole picture (same clip noise, seed and recipe): PSNR of target against reference;
3. speed: the mean UNet call on both (info).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from runtime.backends import backend_ready, open_backend
from runtime.bundle import Bundle, OutputError
from runtime.contract import AUDIO_ENCODER, N_SAMPLES, SAMPLE_RATE, TEXT_ENCODER, UNET, VAE_DECODER, VAE_ENCODER
from runtime.errors import AudioTokenError, first_line
from runtime.pipeline import GenerationOptions, Pipeline

PICTURE_PSNR_DB = {"fp32": 40.0, "fp16": 30.0, "int8": 30.0}  # least PSNR of the target's picture vs the reference's
SEED = 1234
SPEED_CALLS = 3


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str  # "ok", "FAIL", "info" or "skip"
    detail: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def gpu_facts() -> Check:
    """The GPUs and driver, from nvidia-smi (present wherever the NVIDIA driver is)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return Check("gpu", "info", "none found (no nvidia-smi on PATH)")
    try:
        listed = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("gpu", "FAIL", f"nvidia-smi failed ({first_line(exc)})", hint="check the NVIDIA driver")
    return Check("gpu", "info", "; ".join(line.strip() for line in listed.splitlines()) or "none listed")


def tensorrt_fact() -> Check:
    from runtime.tensorrt import import_tensorrt

    try:
        import_tensorrt()
    except AudioTokenError as exc:
        return Check("tensorrt", "info", f"not usable: {exc}")
    import tensorrt as trt

    return Check("tensorrt", "info", f"{trt.__version__}, cuda-python {package_version('cuda-python') or '?'}")


def machine_facts() -> list[Check]:
    """Versions and devices: Python, numpy, ONNX Runtime and its providers, TensorRT, cuda-python, the GPU, torch."""
    import onnxruntime as ort

    from runtime.backends import cpu_has_amx

    cpu = f"{platform.machine()}, {os.cpu_count()} cores" + (", AMX (bf16)" if cpu_has_amx() else "")
    torch_version = package_version("torch")
    return [
        Check("python", "info", f"{sys.version.split()[0]} on {platform.platform(terse=True)}"),
        Check("cpu", "info", cpu),
        Check("numpy", "info", np.__version__),
        Check("onnxruntime", "info", f"{ort.__version__}: {', '.join(ort.get_available_providers())}"),
        tensorrt_fact(),
        gpu_facts(),
        Check("torch", "info", torch_version or "not installed (the PyTorch side: export, train, --backend torch)"),
    ]


def engine_samples(pipeline: Pipeline) -> dict[str, tuple[np.ndarray, ...]]:
    """Seeded inputs for every engine, from its contract at the bundle's dims (the UNet at its largest batch)."""
    rng = np.random.default_rng(SEED)
    contracts = pipeline.contracts
    ids = pipeline.tokenizer.encode(pipeline.bundle.manifest.template)[None]  # [1, 77]
    batch = max(pipeline.bundle.manifest.recipe.unet_batches)
    sample, _, states = (spec.at_batch(batch) for spec in contracts[UNET].inputs)  # shapes
    return {
        AUDIO_ENCODER: (rng.standard_normal((1, N_SAMPLES), dtype=np.float32) * 0.1,),  # [1, 160000]
        TEXT_ENCODER: (ids, rng.standard_normal(contracts[TEXT_ENCODER].inputs[1].shape, dtype=np.float32)),
        UNET: (
            rng.standard_normal(sample, dtype=np.float32),  # [N, 4, h, w]
            np.array([999.0], dtype=np.float32),  # [1]
            rng.standard_normal(states, dtype=np.float32),  # [N, 77, D]
        ),
        VAE_DECODER: (rng.standard_normal(contracts[VAE_DECODER].inputs[0].shape, dtype=np.float32),),
        VAE_ENCODER: (rng.uniform(-1, 1, contracts[VAE_ENCODER].inputs[0].shape).astype(np.float32),),
    }


def compare_engines(target: Pipeline, reference: Pipeline) -> list[Check]:
    """Each engine on the same seeded inputs: max relative error against the reference, within the export's tolerance."""
    checks = []
    for name, inputs in engine_samples(reference).items():
        tolerance = target.bundle.manifest.engines[name].parity.tolerance
        try:
            got = target.run(name, *inputs)
            want = reference.run(name, *inputs)
        except AudioTokenError as exc:
            checks.append(Check(f"engine {name}", "FAIL", str(exc), hint=exc.hint or ""))
            continue
        if got.shape != want.shape:
            checks.append(Check(f"engine {name}", "FAIL", f"output shape {got.shape}, the reference's {want.shape}"))
            continue
        error = OutputError.measure(name, got, want)
        ok = error.max_rel <= tolerance
        checks.append(
            Check(
                f"engine {name}",
                "ok" if ok else "FAIL",
                f"max rel error {error.max_rel:.1e} (tolerance {tolerance:g})",
                hint=""
                if ok
                else "this device computes the engine differently: report it with `audiotoken-rt doctor` output",
            )
        )
    return checks


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two 8-bit pictures; inf when equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def compare_pictures(target: Pipeline, reference: Pipeline) -> Check:
    """One picture from the same clip (seeded noise), seed and recipe with both; PSNR at least the precision's bar."""
    clip = np.random.default_rng(SEED).standard_normal(N_SAMPLES).astype(np.float32) * 0.1  # [160000]
    options = GenerationOptions(seed=SEED, steps=2 if target.bundle.manifest.recipe.fast_preset() is None else None)
    pictures = [
        np.asarray(p.draw(clip, options, sample_rate=SAMPLE_RATE).pictures[0]) for p in (target, reference)
    ]  # 2 x [H, W, 3] uint8
    value = psnr(*pictures)
    least = PICTURE_PSNR_DB[target.bundle.manifest.precision]
    ok = value >= least
    return Check("picture", "ok" if ok else "FAIL", f"PSNR {value:.1f} dB against the reference (at least {least:g})")


def unet_call_ms(pipeline: Pipeline) -> float:
    inputs = engine_samples(pipeline)[UNET]
    pipeline.run(UNET, *inputs)  # warm-up: lazy set-up, kernel choice, CUDA graphs
    started = time.perf_counter()
    for _ in range(SPEED_CALLS):
        pipeline.run(UNET, *inputs)
    return (time.perf_counter() - started) / SPEED_CALLS * 1000


def speed(target: Pipeline, reference: Pipeline) -> Check:
    mine, theirs = unet_call_ms(target), unet_call_ms(reference)
    return Check(
        "speed",
        "info",
        f"UNet call {mine:.1f} ms on {target.backend.name} {target.backend.device}, "
        f"{theirs:.1f} ms on {reference.backend.name} {reference.backend.device} ({mine / theirs:.2f}x)",
    )


def device_ready(backend: str, device: str) -> Check:
    """Whether ``backend`` on ``device`` can start here at all, before any bundle (``runtime.backends.backend_ready``:
    the line every command gives, naming the extra to install)."""
    try:
        return Check("device", "ok", backend_ready(backend, device))
    except AudioTokenError as exc:
        return Check("device", "FAIL", str(exc), hint=exc.hint or "")


def open_pipeline(bundle: Bundle, backend: str, device: str) -> Pipeline:
    return Pipeline(bundle, open_backend(bundle, backend, device))


def reference_for(bundle: Bundle, backend: str, device: str) -> tuple[Pipeline | None, Check]:
    """The reference pipeline for a target (see the module docstring), and a line saying which it is."""
    if (backend, device) != ("onnxruntime", "cpu"):
        return open_pipeline(bundle, "onnxruntime", "cpu"), Check("reference", "info", "onnxruntime on the cpu")
    try:
        return open_pipeline(bundle, "torch", "cpu"), Check("reference", "info", "the torch backend on the cpu")
    except AudioTokenError as exc:
        return None, Check("reference", "skip", f"none for onnxruntime on the cpu here ({exc})")


def check_bundle(bundle: Bundle, backend: str, device: str) -> list[Check]:
    """Open the bundle on the target, then the engine, picture and speed checks against the reference."""
    try:
        target = open_pipeline(bundle, backend, device)
        reference, which = reference_for(bundle, backend, device)
    except AudioTokenError as exc:
        return [Check("open", "FAIL", str(exc), hint=exc.hint or "")]
    checks = [Check("open", "ok", f"{bundle.root} on {backend} {device}"), which]
    if reference is None:
        return checks
    checks += compare_engines(target, reference)
    if not any(c.failed for c in checks):
        checks += [compare_pictures(target, reference), speed(target, reference)]
    return checks
