"""Parity of an exported engine with PyTorch: ONNX Runtime (CPU) on the network's sample vs the module's output.

Place in the data flow: ``export.builder`` runs the fp32 wrapper module on the sample (the reference), writes the
ONNX file, then calls ``measure_parity``; the errors go into the manifest, and ``check_parity`` refuses an engine
whose output has the wrong shape or an error beyond tolerance (unless the caller allows it).

Error of an output: max_abs = max |engine - reference|, max_rel = max_abs / max |reference| (relative to the
output's scale, so one tolerance fits a token of size 1 and an image in [-1, 1]).
Tolerances (on max_rel): fp32 1e-4, since ONNX Runtime and PyTorch only sum in other orders (seen here: 2e-7 to
2e-5, the largest on the SD 1.5-size VAE decoder). fp16 2e-2: an fp16 engine is compared with the fp32 reference,
and fp16 keeps 11 significant bits (rounding ~5e-4 per op), which a dozen transformer layers or a UNet grow
(seen here: 4e-4 to 1.4e-3, tiny and SD 1.5-size random weights; trained weights have wider activations, hence
the headroom); a broken fp16 graph (an overflow, a lost fp32 island) is off by far more, or gives inf/NaN.
int8 1e-1 (the UNet and the audio encoder of an int8 bundle; its other engines are fp32 and held to 1e-4): 8-bit
weights per channel and 8-bit activations per call round every conv and linear layer's inputs to about 1/255 of
their range, and a UNet chains ~150 of them (seen here, random weights: SD 1.5-size 3.6e-2 at 256x256 and 4.7e-2 at
512x512, tiny 4.4e-2; the pictures stay within 41-44 dB PSNR of fp32's; BEATs' 12 layers 6.5e-3 on the token); a
wrong tap, scale or zero point is off by the order of the output itself.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.networks import Network
from runtime.bundle import OutputError, Parity
from runtime.contract import DYNAMIC
from runtime.errors import ExportError, first_line

TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 1e-1}
BACKEND = "onnxruntime CPUExecutionProvider"


def run_onnx(path: Path, network: Network, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The engine's outputs on ``inputs`` with ONNX Runtime on the CPU."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its constant-folding notes about shape ops are noise here
    feeds = {spec.name: value for spec, value in zip(network.inputs, inputs, strict=True)}
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run([spec.name for spec in network.outputs], feeds)
    except Exception as exc:  # ORT raises its own types (Fail, InvalidGraph, RuntimeException)
        raise ExportError(
            f"{path.name}: ONNX Runtime cannot run it ({first_line(exc)})",
            hint="the exported graph is invalid: report it with the versions of torch, onnx and onnxruntime",
        ) from exc


def compare(network: Network, outputs: list[np.ndarray], references: tuple[np.ndarray, ...]) -> tuple[OutputError, ...]:
    """Each output's error against PyTorch's; a shape off the contract is an ExportError."""
    errors = []
    for spec, engine, reference in zip(network.outputs, outputs, references, strict=True):
        if not spec.accepts(engine.shape) or engine.shape != reference.shape:
            raise ExportError(
                f"{network.name}: output {spec.name} has shape {list(engine.shape)} (PyTorch {list(reference.shape)}); "
                f"the contract is {list(spec.shape)}",
                hint="the network description and the model disagree: check the model's config",
            )
        errors.append(OutputError.measure(spec.name, engine, reference))
    return tuple(errors)


def measure_parity(
    path: Path, network: Network, inputs: tuple[np.ndarray, ...], references: tuple[np.ndarray, ...], precision: str
) -> Parity:
    """Run the ONNX file on the sample with ONNX Runtime and compare with PyTorch; an engine with an open batch
    axis (a UNet holding batches 1 and 2) is also run on the sample's first row, against PyTorch's first row."""
    errors = compare(network, run_onnx(path, network, inputs), references)
    if any(DYNAMIC in spec.shape for spec in network.inputs):
        first = tuple(x[:1] if DYNAMIC in spec.shape else x for spec, x in zip(network.inputs, inputs, strict=True))
        single = compare(network, run_onnx(path, network, first), tuple(r[:1] for r in references))
        errors += tuple(replace(e, name=f"{e.name} (batch 1)") for e in single)
    return Parity(BACKEND, network.sample_note, TOLERANCE[precision], errors)


def check_parity(network: Network, parity: Parity, allow: bool) -> None:
    """Refuse an engine beyond tolerance unless ``allow`` (then the error stays on record in the manifest)."""
    worst = max(parity.outputs, key=lambda e: e.max_rel)
    if not parity.ok and not allow:
        raise ExportError(
            f"{network.name}: output {worst.name} differs from PyTorch by {worst.max_rel:.3g} of its scale "
            f"(max abs {worst.max_abs:.3g}); tolerance {parity.tolerance:g}",
            hint="pass --allow-parity-error to keep it anyway (recorded in the manifest), or report the versions",
        )
