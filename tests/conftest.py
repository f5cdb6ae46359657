"""Shared fixtures: the tiny random models (written once per session by the real factory) and the real clips; and
the CI rule on skips (tests/ci_skips.py: where AUDIOTOKEN_RT_REQUIRE_ALL is set, a skip is a failure)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import CLIPS

pytest_plugins = ["tests.ci_skips"]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Keep the per-user caches (verified bundle hashes, TensorRT timing caches) out of the real home."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(scope="session")
def clips() -> list[Path]:
    """The two real 10 s VGGSound clips (16 kHz mono) beside the repository."""
    found = sorted(CLIPS.glob("*.wav"))
    if len(found) < 2:
        pytest.skip(f"real clips not found in {CLIPS} (they live in the workspace's shared/data/vggsound)")
    return found


@pytest.fixture(scope="session")
def clip_set(clips, tmp_path_factory) -> dict[str, Path]:
    """The real 16 kHz mono clips, and one of them as 44.1 kHz stereo float (resampling and downmix in play): the
    clips the C++ builds (tests/test_cpp.py, tests/test_cpp_arm64.py) draw from against the Python runtime."""
    import numpy as np
    import soundfile as sf
    import soxr

    folder = tmp_path_factory.mktemp("cpp-clips")
    samples, rate = sf.read(clips[1], dtype="float32")
    wide = soxr.resample(samples, rate, 44_100)
    stereo = np.stack([wide, 0.5 * wide[::-1]], axis=1)[: 44_100 * 7]  # 7 s: loop-tiled to 10
    sf.write(folder / "stereo44k.wav", stereo, 44_100, subtype="FLOAT")
    return {"clip0": clips[0], "clip1": clips[1], "stereo44k": folder / "stereo44k.wav"}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """``audiotoken-rt make-random --arch tiny`` output: sd/, beats.pt, embedder.bin."""
    from audiotoken.random_models import make_random

    return make_random(tmp_path_factory.mktemp("models") / "tiny", arch="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_models, tmp_path_factory) -> Path:
    """An fp32 engine bundle of the tiny models (``audiotoken-rt export``), built once per session."""
    from rich.console import Console

    from export.builder import export_bundle
    from export.options import ExportOptions

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    options = ExportOptions(
        sd=str(tiny_models / "sd"), beats=tiny_models / "beats.pt", embedder=tiny_models / "embedder.bin", out=out
    )
    export_bundle(options, Console(quiet=True))
    return out


@pytest.fixture(scope="session")
def fast_bundle(tiny_models, tmp_path_factory) -> Path:
    """A fast bundle of the tiny models (``export --fast``, the tiny models' LCM-LoRA and tiny autoencoder in place of
    the preset's hub sources): LCM-LoRA fused, the tiny autoencoder, the UNet at batch 1."""
    from tests.support import export_tiny

    out = tmp_path_factory.mktemp("fast") / "bundle"
    lcm_lora, tiny_vae = str(tiny_models / "lcm-lora"), str(tiny_models / "taesd")
    return export_tiny(tiny_models, out, fast=True, lcm_lora=lcm_lora, tiny_vae=tiny_vae)


@pytest.fixture(scope="session")
def fast_reference(tiny_models):
    """diffusers' own fast recipe: the LCM-LoRA loaded and fused by diffusers, AutoencoderTiny as the VAE."""
    from audiotoken.pipeline import AudioTokenPipeline

    return AudioTokenPipeline.from_pretrained(
        tiny_models / "sd",
        tiny_models / "beats.pt",
        tiny_models / "embedder.bin",
        lora=tiny_models / "lcm-lora",
        tiny_vae=tiny_models / "taesd",
    )
