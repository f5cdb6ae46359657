"""The helpers the test modules share: where the repository and the real clips are, the two error measures tests
compare with (PSNR between pictures, an output's error relative to its reference's scale), a UNet engine's seeded
inputs with a diffusers UNet's output on them, and a LoRA fused by hand from its file in any of its key layouts.

Fixtures stay in ``conftest.py``; this module holds plain values and functions, so a test module imports them from
here (``from tests.support import CLIPS, psnr``) and never from another test module. The error measures are
written here from their definitions, not imported from the code under test (``export.parity``), so a test that
recomputes an engine's error does not share a bug with the exporter that recorded it; so is the LoRA formula
(``export.lora`` leaves it to diffusers and peft).
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


def unet_feeds(manifest, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs of a bundle's UNet engine at its shapes (a timestep off the export's sample)."""
    shapes = {spec.name: tuple(spec.shape) for spec in manifest.engines["unet"].inputs}
    rng = np.random.default_rng(seed)
    return {
        "sample": rng.standard_normal(shapes["sample"]).astype(np.float32),
        "timestep": np.array([457.25], np.float32),  # not the export's sample (981)
        "encoder_hidden_states": rng.standard_normal(shapes["encoder_hidden_states"]).astype(np.float32),
    }


def torch_unet(unet, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """A diffusers UNet's output on a UNet engine's ``feeds``."""
    import torch

    x = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        return unet(x["sample"], x["timestep"], x["encoder_hidden_states"]).sample.numpy()


def lora_layers(tensors: dict, unet) -> dict[str, tuple]:
    """A LoRA file's layers by UNet module name, read here from its key layout: (down, up, alpha or None)."""
    from audiotoken.random_models import kohya_name  # the kohya naming rule: lora_unet_ + the module path, dots as _

    kohya = {kohya_name(name): name for name, _ in unet.named_modules() if name}
    layers = {}
    for key in tensors:
        if key.endswith(".lora_down.weight"):  # kohya: lora_unet_<module>.lora_down.weight, .lora_up.weight, .alpha
            layer = key.removesuffix(".lora_down.weight")
            alpha = tensors.get(f"{layer}.alpha")
            up = tensors[f"{layer}.lora_up.weight"]
            layers[kohya[layer]] = (tensors[key], up, None if alpha is None else alpha.item())
        elif key.endswith(".lora.down.weight"):  # diffusers: unet.<module>.lora.down.weight, .lora.up.weight
            module = key.removeprefix("unet.").removesuffix(".lora.down.weight")
            layers[module] = (tensors[key], tensors[f"unet.{module}.lora.up.weight"], None)
        elif key.endswith(".lora_A.weight"):  # peft: unet.<module>.lora_A.weight, .lora_B.weight
            module = key.removeprefix("unet.").removesuffix(".lora_A.weight")
            layers[module] = (tensors[key], tensors[f"unet.{module}.lora_B.weight"], None)
    return layers


def fused_by_hand(unet, tensors: dict, scale: float, default_alpha: float | None = None):
    """A copy of ``unet`` with W + scale * alpha / rank * up @ down on every layer of the LoRA, in float64 (alpha: the
    file's, else ``default_alpha``, else the rank)."""
    import copy

    fused = copy.deepcopy(unet)
    for module, (down, up, alpha) in lora_layers(tensors, unet).items():
        rank = down.shape[0]
        alpha = alpha if alpha is not None else default_alpha if default_alpha is not None else rank
        weight = fused.get_submodule(module).weight  # [out, in] or [out, in, kh, kw]
        delta = (up.double().flatten(1) @ down.double().flatten(1)).reshape(weight.shape)  # [out, in * kh * kw]
        weight.data = (weight.double() + scale * alpha / rank * delta).float()
    return fused
