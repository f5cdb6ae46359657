"""Broken numbers are never a success (issue 21), on the tiny bundle through the command line and the Pipeline.

- NaN or Inf out of any stage is one NumericsError naming the stage and suggesting ``audiotoken-rt info --verify
  full``: the command exits non-zero with one ``error:`` line and writes no picture. The bundles here have an
  engine's float weights overwritten with NaN behind an unchanged size and modification time, so the quick open
  (the hash cache, runtime/bundle.py) trusts them, as it trusted the bundle that once drew a black picture and
  exited 0; a full verify catches them.
- Steps: every scheduler draws a finite picture at its most steps on the bundle's config (``max_steps``), and one
  more is refused before any engine runs (``--steps 999`` and ``1000`` were an IndexError in ddim, pndm and
  dpm++2m, and dpm++2m at 1000 drew a black picture).
- Edit strength at its edges: 0 (the picture back, tests/test_edit.py), a tiny strength and the rounding edge
  int(steps * strength) = 0 (refused before any engine runs), the least strength that leaves one step (one UNet call).
- A prompt over MAX_PROMPT_BYTES is refused before the tokenizer sees it.
- The unconditional-embedding cache keeps the last UNCOND_CACHE_SIZE negative prompts, and a hit is the embedding.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from audiotoken_rt.cli import app
from runtime.bundle import Bundle, verify
from runtime.errors import BundleError, ConfigError, NumericsError
from runtime.pipeline import (
    MAX_PROMPT_BYTES,
    UNCOND_CACHE_SIZE,
    ComposeOptions,
    EditOptions,
    GenerationOptions,
    Pipeline,
    Stopwatch,
)
from runtime.schedulers import SCHEDULER_NAMES, max_steps

FLOATS = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}


def nan_weights(bundle: Path, engine: str) -> None:
    """Overwrite every float weight of ``engine`` in its external data file with NaN, in place: the file keeps its
    size and modification time (integer tensors, such as BEATs' relative-position indices, are left alone)."""
    manifest = json.loads((bundle / "manifest.json").read_text())["engines"][engine]
    data = bundle / manifest["data"]["path"]
    stat = data.stat()
    graphs = [manifest["file"]["path"], *(variant["file"]["path"] for variant in manifest["variants"])]
    with open(data, "r+b") as f:
        for graph in graphs:
            for tensor in onnx.load(bundle / graph, load_external_data=False).graph.initializer:
                where = {entry.key: entry.value for entry in tensor.external_data}
                if tensor.data_location != onnx.TensorProto.EXTERNAL or tensor.data_type not in FLOATS:
                    continue
                dtype = FLOATS[tensor.data_type]
                f.seek(int(where.get("offset", 0)))
                f.write(np.full(int(where["length"]) // np.dtype(dtype).itemsize, np.nan, dtype).tobytes())
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert data.stat().st_size == stat.st_size and data.stat().st_mtime_ns == stat.st_mtime_ns


@pytest.fixture
def poisoned(tiny_bundle, tmp_path):
    """engine -> a copy of the tiny bundle, opened once (its files' stamps go to the hash cache), whose ``engine``
    then had its weights turned to NaN behind an unchanged size and mtime. Made afresh for each test: the cache
    remembers one folder per bundle key, the one opened last."""

    def make(engine: str) -> Path:
        copy = tmp_path / f"poisoned-{engine}"
        shutil.copytree(tiny_bundle, copy)
        Bundle.open(copy)  # checked and remembered, as a bundle in use is
        nan_weights(copy, engine)
        return copy

    return make


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    y, x = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)).save(path)
    return path


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


CASES = [  # engine whose weights are NaN, command, the stage the error names
    ("audio_encoder", "generate", "encode_audio"),
    ("text_encoder", "generate", "encode_prompt"),
    ("unet", "generate", "denoise"),
    ("vae_decoder", "generate", "decode_latents"),
    ("vae_encoder", "edit", "encode_picture"),
    ("unet", "edit", "denoise"),
    ("vae_decoder", "edit", "decode_latents"),
    ("unet", "compose", "denoise"),
    ("text_encoder", "compose", "encode_prompt"),
]


@pytest.mark.parametrize("engine, command, stage", CASES, ids=[f"{c}-{e}" for e, c, _ in CASES])
def test_nan_weights_are_one_error_naming_the_stage_and_no_picture(
    poisoned, clips, photo, tmp_path, engine, command, stage
):
    bundle, out = poisoned(engine), tmp_path / "out"
    sounds = {"generate": [clips[0]], "edit": [photo, clips[0]], "compose": [clips[0], clips[1]]}[command]
    extra = ["--layout", "left,right"] if command == "compose" else []
    code, output = run(command, *sounds, "--engines", bundle, "--out", out, "--steps", 2, "--seed", 1, *extra)
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {stage}: "), output
    assert "NaN or Inf" in errors[0] and f"check them with `audiotoken-rt info {bundle} --verify full`" in errors[0]
    assert "Traceback" not in output
    assert not (out.exists() and any(out.iterdir()))  # no PNG, not even a temporary one
    with pytest.raises(BundleError, match="sha256"):  # what `info --verify full` does: every file hashed again
        verify(bundle)


def test_a_nan_picture_is_refused_through_the_api_too(poisoned, clips):
    pipeline = Pipeline.open(poisoned("vae_decoder"))
    with pytest.raises(NumericsError, match=r"^decode_latents: 12288 of 12288 values of the picture are NaN") as e:
        pipeline.draw(clips[0], GenerationOptions(steps=2, seed=1))
    assert "--steps" in e.value.hint


def test_nan_latents_stop_the_loop_at_the_step_that_made_them(poisoned, clips):
    pipeline = Pipeline.open(poisoned("unet"))
    seen: list[str] = []
    with pytest.raises(NumericsError, match=r"^denoise: 256 of 256 values of the latents after step 1 of 5 are"):
        pipeline.draw(
            clips[0], GenerationOptions(steps=5, seed=1), watch=Stopwatch(lambda stage, *_: seen.append(stage))
        )
    assert "decode_latents" not in seen  # stopped at step 1: no further UNet call, nothing decoded


# ---- steps: 1, 2 and the most; one more is refused before any work -------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(tiny_bundle) -> Pipeline:
    return Pipeline.open(tiny_bundle)


def engine_calls(pipeline: Pipeline, monkeypatch) -> list[str]:
    calls: list[str] = []
    run_engine = pipeline.backend.run
    monkeypatch.setattr(pipeline.backend, "run", lambda name, feeds: calls.append(name) or run_engine(name, feeds))
    return calls


def test_the_tiny_bundle_takes_the_steps_its_schedule_allows(pipeline):
    # SD's scheduler config as diffusers 0.42 writes it: "leading" spacing, steps_offset 1, 1000 training timesteps.
    config = pipeline.bundle.manifest.scheduler_config
    assert (config["timestep_spacing"], config["steps_offset"], config["num_train_timesteps"]) == ("leading", 1, 1000)
    assert {name: max_steps(name, config) for name in SCHEDULER_NAMES} == {
        "dpm++2m": 998,  # 999 indexed timestep 1000; 1000 put every step on timestep 1 (NaN)
        "pndm": 999,  # 1000 indexed timestep 1000
        "ddim": 999,
        "euler": 1000,
        "euler-a": 1000,
        "lcm": 50,
        "tcd": 50,
    }


@pytest.mark.parametrize("scheduler", [name for name in SCHEDULER_NAMES if name != "lcm"])  # lcm: the fast bundle
def test_every_scheduler_draws_a_finite_picture_at_1_2_and_its_most_steps(pipeline, clips, scheduler):
    most = max_steps(scheduler, pipeline.bundle.manifest.scheduler_config)
    for steps in (1, 2, most):
        result = pipeline.draw(clips[0], GenerationOptions(scheduler=scheduler, steps=steps, seed=2))
        assert result.timings.steps == steps + (scheduler == "pndm" and steps > 1)  # PNDM's warm-up evaluates twice
        assert np.asarray(result.pictures[0]).std() > 0  # a picture, not a flat (black) one


@pytest.mark.parametrize("scheduler, steps", [("ddim", 1000), ("pndm", 1000), ("dpm++2m", 999), ("dpm++2m", 1000)])
def test_steps_past_the_most_are_one_line_before_any_work(
    tiny_bundle, pipeline, clips, tmp_path, monkeypatch, scheduler, steps
):
    calls = engine_calls(pipeline, monkeypatch)
    most = max_steps(scheduler, pipeline.bundle.manifest.scheduler_config)
    with pytest.raises(ConfigError, match=rf"^--steps is {steps}; {scheduler.replace('+', '[+]')} takes 1 to {most}"):
        pipeline.draw(clips[0], GenerationOptions(scheduler=scheduler, steps=steps, seed=1))
    assert calls == []
    out = tmp_path / "out"
    code, output = run("generate", clips[0], "--engines", tiny_bundle, "--out", out, "--scheduler", scheduler,
                       "--steps", steps)  # fmt: skip
    assert code == 1 and output.startswith(f"error: --steps is {steps}; {scheduler} takes 1 to {most} steps"), output
    assert not out.exists()


# ---- edit strength at its edges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, strength, match",
    [
        (4, 1e-9, r"--strength 1e-09 leaves int\(4 \* 1e-09\) = 0 of the 4 steps"),
        (4, 5e-324, r"leaves int\(4 \* 5e-324\) = 0"),  # the least float above 0
        (4, 0.2499, r"leaves int\(4 \* 0.2499\) = 0"),
        (49, 1 / 49, r"leaves int\(49 \* 0.02040816326530612\) = 0"),  # 49 * (1/49) = 0.9999999999999999 in floats
    ],
)
def test_a_strength_that_leaves_no_step_is_refused_before_any_work(
    pipeline, clips, photo, monkeypatch, steps, strength, match
):
    calls = engine_calls(pipeline, monkeypatch)
    options = EditOptions(scheduler="dpm++2m", steps=steps, strength=strength, seed=1)
    with pytest.raises(ConfigError, match=match):
        pipeline.draw_edit(photo, clips[0], options)
    assert calls == []


@pytest.mark.parametrize("steps, strength", [(4, 0.25), (50, 1 / 49)])
def test_the_least_strength_that_leaves_a_step_runs_one(pipeline, clips, photo, steps, strength):
    options = EditOptions(scheduler="dpm++2m", steps=steps, strength=strength, seed=1)
    result = pipeline.draw_edit(photo, clips[0], options)
    assert result.timings.unet_calls == 1 and result.pictures[0].size == (64, 64)


def test_the_fast_recipes_least_strength(fast_bundle, clips, photo, monkeypatch):
    # LCM keeps its 4 steps and needs int(50 * strength) >= 4 of its 50 distillation timesteps.
    fast = Pipeline.open(fast_bundle)
    calls = engine_calls(fast, monkeypatch)
    with pytest.raises(ConfigError, match=r"leaves int\(50 \* 0.07\) = 3 of lcm's 50 timesteps, fewer than --steps 4"):
        fast.draw_edit(photo, clips[0], EditOptions(fast=True, strength=0.07, seed=1))
    assert calls == []
    assert fast.draw_edit(photo, clips[0], EditOptions(fast=True, strength=0.08, seed=1)).timings.unet_calls == 4


# ---- prompts are bounded before tokenizing -------------------------------------------------------------------------


def test_a_huge_prompt_is_refused_before_the_tokenizer(pipeline, clips, monkeypatch):
    # Today's tokenizer took 11 s and 1.3 GB to refuse a 10 MB prompt as more than 77 tokens.
    seen: list[str] = []
    encode = pipeline.tokenizer.encode
    monkeypatch.setattr(pipeline.tokenizer, "encode", lambda text, **kw: seen.append(text) or encode(text, **kw))
    huge = "a photo of <*> " + "with a very loud dog " * 500_000
    for options in (GenerationOptions(prompt=huge), GenerationOptions(negative_prompt=huge)):
        with pytest.raises(ConfigError, match=rf"bytes long; it may hold at most {MAX_PROMPT_BYTES} bytes"):
            pipeline.draw(clips[0], options)
    with pytest.raises(ConfigError, match="--background is"):
        pipeline.draw_compose([clips[0], clips[1]], ComposeOptions(layout="left,right", background=huge))
    assert seen == []


# ---- the unconditional-embedding cache -----------------------------------------------------------------------------


def test_the_unconditional_cache_keeps_the_last_negative_prompts(tiny_bundle, monkeypatch):
    pipeline = Pipeline.open(tiny_bundle)
    token = np.zeros((1, pipeline.bundle.manifest.token_dim), np.float32)  # [1, D]
    calls = engine_calls(pipeline, monkeypatch)
    prompts = [f"blurry, number {k}" for k in range(UNCOND_CACHE_SIZE + 6)]
    first = {prompt: pipeline.unconditional(prompt, token) for prompt in prompts}
    assert len(pipeline.uncond_cache) == UNCOND_CACHE_SIZE and calls.count("text_encoder") == len(prompts)
    assert list(pipeline.uncond_cache) == prompts[6:]  # the 6 used longest ago are gone

    calls.clear()
    hit = pipeline.unconditional(prompts[6], token)  # a hit: no engine run, the same embedding
    assert calls == [] and hit is first[prompts[6]]
    fresh = pipeline.embed(prompts[6], token, require_placeholder=False)
    assert np.array_equal(hit, fresh)
    pipeline.unconditional("one more", token)  # evicts the least recently used: prompts[7], not prompts[6]
    assert prompts[6] in pipeline.uncond_cache and prompts[7] not in pipeline.uncond_cache
    assert len(pipeline.uncond_cache) == UNCOND_CACHE_SIZE
    calls.clear()
    again = pipeline.unconditional(prompts[0], token)  # evicted earlier: computed again, equal to the first time
    assert calls == ["text_encoder"] and np.array_equal(again, first[prompts[0]])
