"""The fast path on the tiny models: LCM-LoRA fused at export, a UNet of batch 1, the tiny decoder (TAESD), the LCM
scheduler. Its picture equals diffusers drawing the same recipe its own way (load_lora_weights + fuse_lora,
LCMScheduler, AutoencoderTiny) from the same token, latents and step noise; the manifest records the recipe; a
bundle without it says which export flags make one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from runtime.errors import ConfigError
from runtime.noise import STEP_NOISE, NoiseStream
from runtime.pipeline import GenerationOptions, Pipeline
from runtime.sampling import FAST
from tests.support import export_tiny, psnr


def test_the_manifest_records_the_recipe(fast_bundle, tiny_models):
    manifest = json.loads((fast_bundle / "manifest.json").read_text())
    weights = tiny_models / "lcm-lora" / "pytorch_lora_weights.safetensors"
    recipe = manifest["recipe"]
    assert recipe["lora"] == {
        "source": str(tiny_models / "lcm-lora"),
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "scale": 1.0,
    }
    assert (recipe["decoder"], recipe["unet_batches"], recipe["scheduler"], recipe["steps"], recipe["guidance"]) == (
        "taesd",
        [1],
        "lcm",
        4,
        1.0,
    )
    assert (recipe["eta"], recipe["timestep_spacing"]) == (0.0, None)
    taesd_config = json.loads((tiny_models / "taesd" / "config.json").read_text())
    assert manifest["vae_scaling_factor"] == taesd_config["scaling_factor"] == 1.0
    unet = {spec["name"]: spec["shape"] for spec in manifest["engines"]["unet"]["inputs"]}
    assert unet["sample"][0] == unet["encoder_hidden_states"][0] == 1  # no unconditional half
    assert {s["role"] for s in manifest["sources"]} == {"sd", "beats", "embedder", "lora", "tiny_vae"}
    assert recipe["preset"] == "lcm"  # --fast alone, its LoRA given by the --lcm-lora alias


@pytest.mark.parametrize("seed", [5, 6])
def test_the_fast_picture_is_diffusers_fast_picture(fast_bundle, fast_reference, clips, monkeypatch, seed):
    import diffusers.schedulers.scheduling_lcm as lcm

    stream = NoiseStream(seed, STEP_NOISE)  # LCM's step noise: the runtime's stream, fed to diffusers too

    def step_noise(shape, generator=None, device=None, dtype=None):
        return torch.from_numpy(stream.standard_normal(tuple(shape))).to(dtype)

    monkeypatch.setattr(lcm, "randn_tensor", step_noise)
    expected = fast_reference(
        [clips[1]], seed=seed, num_inference_steps=4, guidance_scale=1.0, scheduler="LCMScheduler", progress=False
    )[0]
    result = Pipeline.open(fast_bundle).draw(clips[1], GenerationOptions(fast=True, seed=seed))
    assert (result.options.scheduler, result.options.steps, result.options.guidance) == ("lcm", 4, 1.0)
    assert result.timings.unet_calls == 4
    assert psnr(result.pictures[0], expected) >= 40


def test_the_bundle_recipe_is_the_default_and_runs_the_unet_at_batch_1(fast_bundle, clips):
    pipeline = Pipeline.open(fast_bundle)
    calls = []
    run = pipeline.backend.run
    pipeline.backend.run = lambda engine, feeds: (
        calls.append((engine, len(next(iter(feeds.values()))))) or run(engine, feeds)
    )
    default = pipeline.draw(clips[0], GenerationOptions(seed=2))
    assert (default.options.scheduler, default.options.steps, default.options.guidance) == ("lcm", 4, 1.0)
    assert [batch for engine, batch in calls if engine == "unet"] == [1] * 4
    assert [engine for engine, _ in calls].count("text_encoder") == 1  # no unconditional embedding at guidance 1
    fast = pipeline.generate(clips[0], GenerationOptions(fast=True, seed=2))[0]
    assert np.array_equal(np.asarray(default.pictures[0]), np.asarray(fast))


def test_what_a_bundle_lacks_is_one_error_naming_the_export_flag(fast_bundle, tiny_bundle, clips):
    with pytest.raises(ConfigError, match="--fast needs a bundle with LCM-LoRA fused") as caught:
        Pipeline.open(tiny_bundle).draw(clips[0], GenerationOptions(fast=True))
    assert f"audiotoken-rt export ... {FAST.export_flags}" in caught.value.hint  # the flags filling in its sources
    with pytest.raises(ConfigError, match="guidance 7.5 needs the UNet at batch 2") as caught:
        Pipeline.open(fast_bundle).draw(clips[0], GenerationOptions(guidance=7.5))
    assert "--unet-batch 1,2" in caught.value.hint


def test_a_bundle_holding_both_batches_draws_with_and_without_guidance(tiny_models, fast_bundle, clips, tmp_path):
    both = export_tiny(
        tiny_models,
        tmp_path / "both",
        lcm_lora=str(tiny_models / "lcm-lora"),
        tiny_vae=str(tiny_models / "taesd"),
        unet_batch="1,2",
    )
    manifest = json.loads((both / "manifest.json").read_text())
    assert manifest["recipe"]["unet_batches"] == [1, 2]
    assert manifest["engines"]["unet"]["inputs"][0]["shape"][0] == -1
    checked = [e["name"] for e in manifest["engines"]["unet"]["parity"]["outputs"]]
    assert checked == ["noise_pred", "noise_pred (batch 1)"]  # the open batch axis is validated at 2 and at 1
    options = GenerationOptions(fast=True, seed=4)
    single = Pipeline.open(both).generate(clips[0], options)[0]
    alone = Pipeline.open(fast_bundle).generate(clips[0], options)[0]
    assert psnr(single, alone) >= 50  # one graph with an open batch axis draws what the batch-1 graph draws
    pipeline = Pipeline.open(both)
    calls = []
    run = pipeline.backend.run
    pipeline.backend.run = lambda engine, feeds: (
        calls.append((engine, len(next(iter(feeds.values()))))) or run(engine, feeds)
    )
    guided = pipeline.generate(clips[0], GenerationOptions(scheduler="lcm", steps=4, guidance=2.0, seed=4))[0]
    assert [batch for engine, batch in calls if engine == "unet"] == [2] * 4  # both halves, in one call a step
    assert not np.array_equal(np.asarray(guided), np.asarray(single))


def test_bench_fast_end_to_end(tiny_bundle, fast_bundle, clips, tmp_path):
    from typer.testing import CliRunner

    from audiotoken_rt.cli import app

    report = tmp_path / "bench-fast.json"
    args = ["bench", str(clips[0]), "--engines", str(tiny_bundle), "--fast-engines", str(fast_bundle), "--rounds", "1"]
    result = CliRunner().invoke(app, [*args, "--json", str(report)])
    assert result.exit_code == 0, result.output
    figures = json.loads(report.read_text())
    assert list(figures["configs"]) == ["default", "fast", "torch-fast"]
    recipes = {name: config["recipe"] for name, config in figures["configs"].items()}
    assert recipes["default"] == {
        "scheduler": "dpm++2m",
        "steps": 25,
        "guidance": 7.5,
        "eta": 0.0,
        "timestep_spacing": None,
        "unet_batch": 2,
        "decoder": "sd-vae",
    }
    assert (
        recipes["fast"]
        == recipes["torch-fast"]
        == {
            "scheduler": "lcm",
            "steps": 4,
            "guidance": 1.0,
            "eta": 0.0,
            "timestep_spacing": None,
            "unet_batch": 1,
            "decoder": "taesd",
        }
    )
    for config in figures["configs"].values():
        assert {"total_ms", "unet_step_ms", "stages", "peak_rss_mb"} <= set(config)
    assert set(figures["ratios"]) == {"fast / default", "fast / torch-fast"}


def test_bench_backends_draw_a_fast_bundle_with_its_own_recipe(fast_bundle, clips, tmp_path):
    from typer.testing import CliRunner

    from audiotoken_rt.cli import app

    report = tmp_path / "bench.json"
    args = ["bench", str(clips[0]), "--engines", str(fast_bundle), "--backends", "onnxruntime", "--rounds", "1"]
    result = CliRunner().invoke(app, [*args, "--json", str(report)])
    assert result.exit_code == 0, result.output
    recipe = json.loads(report.read_text())["configs"]["onnxruntime"]["recipe"]
    assert (recipe["scheduler"], recipe["steps"], recipe["guidance"], recipe["unet_batch"]) == ("lcm", 4, 1.0, 1)


def test_bench_turbo_draws_one_unguided_step_from_the_last_timestep(fast_bundle, clips):
    """bench's one-step recipe (the hyper-1step preset's) on a bundle of batch 1: one UNet call at batch 1, at the one
    timestep diffusers' TCDScheduler gives for one step (the last training timestep), one text encoding."""
    from diffusers import TCDScheduler

    from runtime.commands.bench import TURBO

    pipeline = Pipeline.open(fast_bundle)
    calls = []
    run = pipeline.backend.run
    pipeline.backend.run = lambda engine, feeds: calls.append((engine, feeds)) or run(engine, feeds)
    drawn = pipeline.draw(clips[0], replace(TURBO, seed=3))
    assert (TURBO.scheduler, TURBO.steps, TURBO.guidance) == ("tcd", 1, 1.0)
    reference = TCDScheduler.from_config(pipeline.bundle.manifest.scheduler_config)
    reference.set_timesteps(1)
    unet = [feeds for engine, feeds in calls if engine == "unet"]
    assert [(len(feeds["sample"]), float(feeds["timestep"][0])) for feeds in unet] == [
        (1, float(reference.timesteps[0]))
    ]
    assert float(reference.timesteps[0]) == 999.0
    assert [engine for engine, _ in calls].count("text_encoder") == 1  # no unconditional embedding at guidance 1
    assert np.isfinite(np.asarray(drawn.pictures[0], np.float32)).all()


def test_bench_turbo_end_to_end(fast_bundle, clips, tmp_path):
    """Named configurations (--engines NAME=DIR): each draws its recipe on its bundle with its backend, in its own
    process, and the ratios pair each with its labelless and its torch form."""
    from typer.testing import CliRunner

    from audiotoken_rt.cli import app

    report = tmp_path / "bench-turbo.json"
    named = [f"--engines={name}={fast_bundle}" for name in ("turbo", "torch-turbo", "turbo-small")]
    result = CliRunner().invoke(app, ["bench", str(clips[0]), *named, "--rounds", "1", "--json", str(report)])
    assert result.exit_code == 0, result.output
    figures = json.loads(report.read_text())
    assert list(figures["configs"]) == ["turbo", "torch-turbo", "turbo-small"]
    one_step = {
        "scheduler": "tcd",
        "steps": 1,
        "guidance": 1.0,
        "eta": 1.0,
        "timestep_spacing": None,
        "unet_batch": 1,
        "decoder": "taesd",
    }
    for config in figures["configs"].values():
        assert config["recipe"] == one_step
        assert {"total_ms", "unet_step_ms", "stages", "peak_rss_mb"} <= set(config)
        assert config["round_totals_ms"] == [config["total_ms"]]
    assert set(figures["ratios"]) == {"turbo / torch-turbo", "turbo-small / turbo"}
    assert figures["bundles"] == dict.fromkeys(figures["configs"], str(fast_bundle))
