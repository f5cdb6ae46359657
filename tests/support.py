"""The helpers the test modules share: where the repository and the real clips are, and the two error measures
tests compare with (PSNR between pictures, an output's error relative to its reference's scale).

Fixtures stay in ``conftest.py``; this module holds plain values and functions, so a test module imports them from
here (``from tests.support import CLIPS, psnr``) and never from another test module. The error measures are
written here from their definitions, not imported from the code under test (``export.parity``), so a test that
recomputes an engine's error does not share a bug with the exporter that recorded it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO.parent / "shared" / "data" / "vggsound"  # the two real 10 s VGGSound clips (16 kHz mono)


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio of two 8-bit pictures (PIL images or arrays) in dB; inf when they are equal."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    """max |output - reference| / max |reference| in float64 (an engine's error on the scale of what it computes);
    inf when ``output`` holds a non-finite value or its shape is not the reference's."""
    output, reference = np.asarray(output, np.float64), np.asarray(reference, np.float64)
    if output.shape != reference.shape or not np.all(np.isfinite(output)):
        return float("inf")
    return float(np.abs(output - reference).max() / np.abs(reference).max())


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of the ONNX file at ``path`` on ``feeds``, by name, with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def export_tiny(models: Path, out: Path, **options) -> Path:
    """An engine bundle of the random models in ``models`` (``make-random`` output) at ``out``, quietly; ``options``
    are more ``ExportOptions`` fields (``lcm_lora=``, ``unet_batch=``, ...)."""
    import io

    from rich.console import Console

    from export.builder import export_bundle
    from export.options import ExportOptions

    sources = {"sd": str(models / "sd"), "beats": models / "beats.pt", "embedder": models / "embedder.bin"}
    export_bundle(ExportOptions(**sources, out=out, **options), Console(file=io.StringIO()))
    return out
