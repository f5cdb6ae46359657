"""The sampling recipe as one value (runtime/sampling.py): how options are laid over a bundle's recipe, the presets
the commands and the export share, and a recipe with eta and a timestep spacing drawn end to end on the tiny bundle:
from its manifest, from the options, from serve's ETA and SPACING inputs, and as ``info`` shows it; TCD at an eta
through ``generate``. The schedulers' parity with diffusers at an eta and a spacing is in tests/test_schedulers.py;
the bounds in tests/test_options.py."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from export.options import ExportOptions
from runtime.bundle import Recipe, read_manifest
from runtime.errors import ConfigError
from runtime.pipeline import GenerationOptions, Pipeline
from runtime.sampling import DEFAULT, FAST, OFFICIAL, Sampling

RECIPE = Sampling("ddim", 3, 5.0, 0.5, "trailing")  # a recipe with everything set, none of it a default


def test_options_left_unset_take_the_recipes_values():
    assert RECIPE.over(GenerationOptions()) == RECIPE
    assert RECIPE.over(GenerationOptions(steps=7, guidance=2.0)) == Sampling("ddim", 7, 2.0, 0.5, "trailing")
    assert RECIPE.over(GenerationOptions(scheduler="ddim", eta=0.0)) == Sampling("ddim", 3, 5.0, 0.0, "trailing")


def test_another_scheduler_leaves_the_recipes_eta_and_spacing_behind():
    assert RECIPE.over(GenerationOptions(scheduler="euler")) == Sampling("euler", 3, 5.0, 0.0, None)
    assert RECIPE.over(GenerationOptions(scheduler="euler", timestep_spacing="linspace")).timestep_spacing == "linspace"


def test_the_presets_are_the_documented_recipes():
    assert DEFAULT == Sampling("dpm++2m", 25, 7.5, 0.0, None)
    assert OFFICIAL == Sampling("pndm", 50, 7.5, 0.0, None)
    assert FAST.sampling == Sampling("lcm", 4, 1.0, 0.0, None) and FAST.unet_batches == (1,)
    assert GenerationOptions.official().sampling(Recipe()) == OFFICIAL
    assert GenerationOptions(fast=True).sampling(Recipe(sampling=FAST.sampling, preset=FAST.name)) == FAST.sampling
    assert GenerationOptions().sampling(Recipe()) == DEFAULT  # a plain bundle's recipe


def test_export_fast_takes_the_sources_generate_fast_draws_with():
    options = ExportOptions(sd="sd", beats=Path("b.pt"), embedder=Path("e.bin"), out=Path("out"), fast=True)
    filled = options.with_preset()
    assert (filled.lora, filled.tiny_vae, filled.unet_batch) == (FAST.lora, FAST.tiny_vae, "1")
    own = ExportOptions(**{**vars(options), "lcm_lora": "my-lora", "tiny_vae": "my-taesd"}).with_preset()
    assert (own.lora, own.tiny_vae) == ("my-lora", "my-taesd")  # a source given is kept
    assert ExportOptions(**{**vars(options), "fast": False}).with_preset().lora is None


@pytest.fixture
def ddim_bundle(tiny_bundle, tmp_path) -> Path:
    """The tiny bundle with RECIPE as its manifest's recipe (the engines are the same files)."""
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "ddim"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["recipe"].update(RECIPE.to_json())
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def pixels(generation) -> list[np.ndarray]:
    return [np.asarray(picture) for picture in generation.pictures]


def test_a_bundles_recipe_with_eta_and_spacing_draws_as_the_same_options_given(ddim_bundle, tiny_bundle, clips):
    assert read_manifest(ddim_bundle).recipe.sampling == RECIPE
    from_recipe = Pipeline.open(ddim_bundle).draw(clips[0], GenerationOptions(seed=3, num_images=2))
    given = GenerationOptions(seed=3, num_images=2, **RECIPE.to_json())
    from_options = Pipeline.open(tiny_bundle).draw(clips[0], given)
    assert all(map(np.array_equal, pixels(from_recipe), pixels(from_options)))
    metadata = from_recipe.metadata(0)
    assert (metadata["scheduler"], metadata["eta"], metadata["timestep_spacing"]) == ("ddim", 0.5, "trailing")
    deterministic = Pipeline.open(tiny_bundle).draw(clips[0], GenerationOptions(seed=3, num_images=2, **{
        **RECIPE.to_json(), "eta": 0.0}))  # fmt: skip
    assert not any(map(np.array_equal, pixels(from_recipe), pixels(deterministic)))  # eta's noise is drawn
    leading = Pipeline.open(tiny_bundle).draw(clips[0], GenerationOptions(seed=3, num_images=2, **{
        **RECIPE.to_json(), "timestep_spacing": "leading"}))  # fmt: skip
    assert not any(map(np.array_equal, pixels(from_recipe), pixels(leading)))  # the spacing is drawn with


def test_options_naming_another_scheduler_draw_without_the_recipes_eta(ddim_bundle, tiny_bundle, clips):
    euler = Pipeline.open(ddim_bundle).draw(clips[0], GenerationOptions(seed=4, scheduler="euler"))
    plain = Pipeline.open(tiny_bundle).draw(clips[0], GenerationOptions(seed=4, scheduler="euler", steps=3, guidance=5))
    assert np.array_equal(*(np.asarray(g.pictures[0]) for g in (euler, plain)))
    assert (euler.options.eta, euler.options.timestep_spacing) == (0.0, None)


def test_the_step_bound_is_the_recipes_spacings(tiny_bundle):
    """The tiny bundle's config spaces dpm++2m "leading" (998 steps at most); at "trailing" it takes 1000."""
    pipeline = Pipeline.open(tiny_bundle)
    with pytest.raises(ConfigError, match="^--steps is 1000; dpm\\+\\+2m takes 1 to 998 steps"):
        pipeline.resolve(GenerationOptions(steps=1000))
    assert pipeline.resolve(GenerationOptions(steps=1000, timestep_spacing="trailing")).steps == 1000


def test_an_eta_for_the_recipes_scheduler_that_has_none_is_one_line_before_any_work(tiny_bundle, clips):
    with pytest.raises(ConfigError, match="^--eta 0.5: dpm\\+\\+2m has no eta; only ddim and tcd take one$"):
        Pipeline.open(tiny_bundle).prepare(GenerationOptions(eta=0.5))


def test_generate_draws_tcd_with_an_eta_on_the_tiny_bundle(tiny_bundle, clips, tmp_path):
    """``generate --scheduler tcd --eta 0.3`` end to end: the PNG records the recipe and is the picture the pipeline
    draws with the same options; eta's fresh noise moves it, except at one step (Hyper-SD's 1-step recipe, eta 1),
    where TCD draws none (diffusers' TCDScheduler: no noise at the last step)."""
    from typer.testing import CliRunner

    from audiotoken_rt.cli import app
    from runtime.picture import read_png_metadata

    out = tmp_path / "out"
    args = ["generate", clips[0], "--engines", tiny_bundle, "--out", out, "--scheduler", "tcd", "--eta", 0.3,
            "--steps", 4, "--seed", 11]  # fmt: skip
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    (png,) = out.glob("*.png")
    metadata = read_png_metadata(png)
    assert (metadata["scheduler"], metadata["eta"], metadata["steps"]) == ("tcd", "0.3", "4")
    pipeline = Pipeline.open(tiny_bundle)
    options = GenerationOptions(seed=11, steps=4, scheduler="tcd", eta=0.3)
    drawn = pipeline.draw(clips[0], options)
    assert drawn.timings.unet_calls == 4
    assert np.array_equal(np.asarray(Image.open(png)), pixels(drawn)[0])
    deterministic = pipeline.draw(clips[0], replace(options, eta=0.0))
    assert not np.array_equal(pixels(drawn)[0], pixels(deterministic)[0])
    one_step = [pixels(pipeline.draw(clips[0], replace(options, steps=1, eta=eta)))[0] for eta in (1.0, 0.0)]
    assert np.array_equal(*one_step)


def test_info_shows_the_recipes_eta_and_spacing(ddim_bundle):
    from runtime.commands.info import recipe_rows

    rows = dict(recipe_rows(read_manifest(ddim_bundle)))
    assert rows["recipe"] == "ddim, 3 steps, guidance 5, eta 0.5, trailing spacing (the defaults)"


def request(clip: Path, **inputs) -> dict:
    samples, rate = sf.read(clip, dtype="float32", always_2d=True)  # [N, C]
    return {"AUDIO": samples[None], "SAMPLE_RATE": np.array([[rate]], np.int32), **inputs}


def test_serves_eta_and_spacing_inputs_draw_and_record_the_recipe(tiny_bundle, clips):
    """ETA and SPACING, as a Triton request carries them ([1, 1] tensors), reach the picture and its PNG text."""
    from runtime.picture import read_png_metadata
    from runtime.serving.serve import INPUTS, Models, RequestError

    assert {"ETA", "SPACING"} <= {name for name, *_ in INPUTS}  # the served models and triton-repo's config take them
    pipeline = Pipeline.open(tiny_bundle)
    models = Models(pipeline)
    inputs = {
        "SEED": np.array([[5]], np.int64),
        "STEPS": np.array([[3]], np.int32),
        "SCHEDULER": np.array([[b"ddim"]], dtype=object),
        "ETA": np.array([[0.5]], np.float32),
        "SPACING": np.array([[b"trailing"]], dtype=object),
    }
    (answer,) = models.draw_png([request(clips[0], **inputs)])
    png = answer["PNG"][0][0]
    options = GenerationOptions(seed=5, steps=3, scheduler="ddim", eta=0.5, timestep_spacing="trailing")
    expected = pipeline.draw(clips[0], options).pictures[0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(expected))
    metadata = read_png_metadata(io.BytesIO(png))
    assert (metadata["eta"], metadata["timestep_spacing"], metadata["scheduler"]) == ("0.5", "trailing", "ddim")
    for bad, said in ((np.array([[2.0]], np.float32), "--eta is 2.0"), (np.array([[np.nan]], np.float32), "ETA nan")):
        with pytest.raises(RequestError, match=said):
            models.draw_png([request(clips[0], **{**inputs, "ETA": bad})])
    with pytest.raises(RequestError, match="--spacing is 'sideways'"):
        models.draw_png([request(clips[0], **{**inputs, "SPACING": np.array([[b"sideways"]], dtype=object)})])
