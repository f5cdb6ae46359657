"""Several sounds in one picture, on the tiny bundle: what must hold exactly (two regions with one prompt are the
one-prompt picture; a whole-picture region is plain generation; weights sum to one; swapping clips together with
their regions changes nothing), the stereo rules (mono or equal channels give the plain picture; the louder side
gets the wider region), the one-line refusals, and an old one-slot bundle."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from runtime.audio import load_audio
from runtime.contract import SAMPLE_RATE, TOKEN_SLOTS
from runtime.errors import ConfigError
from runtime.pipeline import ComposeOptions, GenerationOptions, Pipeline
from runtime.regions import Box, grid, parse_layout, region_weights

STEPS = 3


@pytest.fixture(scope="module")
def pipeline(tiny_bundle) -> Pipeline:
    return Pipeline.open(tiny_bundle)


@pytest.fixture(scope="module")
def plain(pipeline, clips) -> np.ndarray:
    return np.asarray(pipeline.generate(clips[0], GenerationOptions(seed=3, steps=STEPS))[0])


def picture(pictures) -> np.ndarray:
    return np.asarray(pictures[0])


def test_the_bundle_holds_the_token_slots(pipeline):
    assert pipeline.bundle.manifest.token_slots == TOKEN_SLOTS
    assert pipeline.contracts["text_encoder"].inputs[1].shape == (1, TOKEN_SLOTS, pipeline.bundle.manifest.token_dim)


def test_two_regions_with_one_sound_are_the_one_prompt_picture(pipeline, clips, plain):
    options = ComposeOptions(seed=3, steps=STEPS, layout="left,right")
    assert np.array_equal(picture(pipeline.compose([clips[0], clips[0]], options)), plain)
    whole = ComposeOptions(seed=3, steps=STEPS, layout="0,0,1,1")
    assert np.array_equal(picture(pipeline.compose([clips[0]], whole)), plain)
    one_prompt = ComposeOptions(seed=3, steps=STEPS)  # one sound: the bundle's template, <*> read as <1>
    assert np.array_equal(picture(pipeline.compose([clips[0]], one_prompt)), plain)


def test_swapping_clips_together_with_their_regions_changes_nothing(pipeline, clips, plain):
    a = pipeline.compose(clips[:2], ComposeOptions(seed=3, steps=STEPS, layout="left,right"))
    b = pipeline.compose(clips[1::-1], ComposeOptions(seed=3, steps=STEPS, layout="right,left"))
    assert np.array_equal(picture(a), picture(b))
    assert not np.array_equal(picture(a), plain)  # the second sound does change the picture
    swapped = pipeline.compose(clips[1::-1], ComposeOptions(seed=3, steps=STEPS, layout="left,right"))
    assert not np.array_equal(picture(a), picture(swapped))


def test_a_prompt_with_two_sounds_hears_both(pipeline, clips):
    options = ComposeOptions(seed=3, steps=STEPS, prompt="a photo of <1> next to <2>")
    both = picture(pipeline.compose(clips[:2], options))
    again = picture(pipeline.compose(clips[:2], options))
    swapped = picture(pipeline.compose(clips[1::-1], options))
    assert np.array_equal(both, again) and not np.array_equal(both, swapped)
    result = pipeline.draw_compose(clips[:2], ComposeOptions(seed=3, steps=STEPS))
    assert result.prompt == "a photo of <1> and <2>, 4k, high resolution"
    assert result.metadata(0)["clip"] == f"{clips[0].name} | {clips[1].name}"


@pytest.mark.parametrize("layout", ["left,right", "top,bottom", "2x2", "1x3", "0,0,0.3,1;0.3,0,1,0.5;0.3,0.5,1,1"])
@pytest.mark.parametrize("background", [False, True])
def test_region_weights_sum_to_one_and_follow_their_boxes(layout, background):
    boxes = parse_layout(layout)
    weights = region_weights(boxes, (24, 32), background=background)  # [C, 1, 24, 32]
    assert weights.shape == (len(boxes) + background, 1, 24, 32) and weights.min() >= 0
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-6)
    for k, box in enumerate(boxes):  # a box's centre belongs to it alone
        row, col = int((box.y0 + box.y1) / 2 * 24), int((box.x0 + box.x1) / 2 * 32)
        assert weights[k, 0, row, col] == pytest.approx(1.0)


def test_a_background_takes_what_the_boxes_leave():
    weights = region_weights((Box(0.25, 0.25, 0.75, 0.75),), (32, 32), background=True)  # [2, 1, 32, 32]
    assert weights[1, 0, 0, 0] == 1.0 and weights[0, 0, 16, 16] == 1.0
    assert np.array_equal(grid(1, 2), parse_layout("left,right"))


@pytest.mark.parametrize(
    "layout, message",
    [
        ("0,0,0.6,1;0.5,0,1,1", "overlap"),
        ("0.5,0,0.5,1", "is empty or leaves the picture"),
        ("0,0,1.2,1", "is empty or leaves the picture"),
        ("0,0,1", "is not a box x0,y0,x1,y1"),
        ("2xA", "a grid is ROWSxCOLS"),
    ],
)
def test_bad_layouts_are_one_line_errors(layout, message):
    with pytest.raises(ConfigError, match=message):
        parse_layout(layout)


def test_uncovered_picture_without_background_is_refused_before_any_sound_is_read(pipeline, clips):
    options = ComposeOptions(seed=3, steps=STEPS, layout="0,0,0.3,1;0.7,0,1,1")
    with pytest.raises(ConfigError, match="leave part of the picture to no sound") as caught:
        pipeline.prepare_compose(options, 2)
    assert "--background" in caught.value.hint
    pipeline.compose(clips[:2], ComposeOptions(seed=3, steps=STEPS, layout=options.layout, background="a park"))


@pytest.mark.parametrize(
    "sounds, prompt, layout, message",
    [
        (2, "a photo of <1> next to <3>", None, "holds <3> but only 2 sounds were given"),
        (2, "a photo of <1>", None, "has no <2> for sound 2"),
        (TOKEN_SLOTS + 1, None, None, f"{TOKEN_SLOTS + 1} sounds, but this bundle's text engine holds {TOKEN_SLOTS}"),
        (3, None, "left,right", "has 2 regions for 3 sounds"),
        (2, "a photo of <1> and <2>", "left,right", "holds <2>, which needs several sounds"),
    ],
)
def test_bad_compositions_are_refused_before_any_sound_is_read(pipeline, clips, sounds, prompt, layout, message):
    with pytest.raises(ConfigError, match=message):
        pipeline.prepare_compose(ComposeOptions(prompt=prompt, layout=layout, steps=STEPS), sounds)


def write_stereo(path, left: np.ndarray, right: np.ndarray):
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE)
    return path


def test_stereo_with_equal_sides_or_mono_is_the_plain_picture(pipeline, clips, plain, tmp_path):
    mono = load_audio(clips[0])
    same = write_stereo(tmp_path / "same.wav", mono, mono)
    stereo = GenerationOptions(seed=3, steps=STEPS, stereo=True)
    assert np.array_equal(picture(pipeline.generate(same, stereo)), plain)
    assert np.array_equal(picture(pipeline.generate(clips[0], stereo)), plain)  # the clips are mono


def test_stereo_places_each_side_and_the_louder_side_is_wider(pipeline, clips, tmp_path):
    left, right = load_audio(clips[0]), load_audio(clips[1])
    loud_left = write_stereo(tmp_path / "ll.wav", left, right * 0.3)
    loud_right = write_stereo(tmp_path / "lr.wav", left * 0.3, right)
    stereo = GenerationOptions(seed=3, steps=STEPS, stereo=True)
    a, b = (pipeline.draw(clip, stereo) for clip in (loud_left, loud_right))
    split_a = float(a.metadata(0)["layout"].split(";")[0].split(",")[2])
    split_b = float(b.metadata(0)["layout"].split(";")[0].split(",")[2])
    assert split_a > 0.5 > split_b
    assert "left" in a.metadata(0)["stereo"]
    regions = ComposeOptions(seed=3, steps=STEPS, layout=a.metadata(0)["layout"].replace(" ", ""))
    sides = [load_audio(loud_left, downmix="first"), load_audio(loud_left, downmix="second")]
    assert np.array_equal(picture(a.pictures), picture(pipeline.compose(sides, regions)))  # = compose of the sides


def test_a_one_slot_bundle_draws_one_sound_and_refuses_two(tiny_models, tmp_path, clips, monkeypatch):
    import io

    from rich.console import Console

    import export.networks
    from export.builder import export_bundle
    from export.options import ExportOptions

    monkeypatch.setattr(export.networks, "TOKEN_SLOTS", 1)  # a bundle as exported before multi-sound prompts
    out = tmp_path / "one-slot"
    sources = {
        "sd": str(tiny_models / "sd"),
        "beats": tiny_models / "beats.pt",
        "embedder": tiny_models / "embedder.bin",
    }
    export_bundle(ExportOptions(**sources, out=out), Console(file=io.StringIO()))
    old = Pipeline.open(out)
    assert old.bundle.manifest.token_slots == 1
    old.generate(clips[0], GenerationOptions(seed=3, steps=2))
    with pytest.raises(ConfigError, match="2 sounds, but this bundle's text engine holds 1 token slot") as caught:
        old.compose(clips[:2], ComposeOptions(seed=3, steps=2))
    assert "re-export" in caught.value.hint


def test_compose_command_writes_one_picture_naming_every_clip(tiny_bundle, clips, tmp_path):
    from audiotoken_rt.cli import app
    from runtime.picture import read_png_metadata

    out = tmp_path / "out"
    args = ["compose", *map(str, clips[:2]), "--engines", str(tiny_bundle), "--out", str(out), "--steps", "2"]
    result = CliRunner().invoke(app, [*args, "--layout", "left,right", "--background", "a park", "--seed", "5"])
    assert result.exit_code == 0, result.output
    (written,) = out.iterdir()
    assert written.name == f"{clips[0].stem}+{clips[1].stem}.png"
    meta = read_png_metadata(written)
    assert (meta["layout"], meta["background"], meta["seed"]) == ("0,0,0.5,1; 0.5,0,1,1", "a park", "5")
    result = CliRunner().invoke(app, [*args, "--prompt", "a photo of <1> next to <3>", "--overwrite"])
    assert result.exit_code == 1 and result.output.startswith("error: prompt 'a photo of <1> next to <3>' holds <3>")


def test_regions_work_with_the_fast_recipe(fast_bundle, clips):
    fast = Pipeline.open(fast_bundle)
    plain = picture(fast.generate(clips[0], GenerationOptions(fast=True, seed=4)))
    both = fast.draw_compose([clips[0], clips[0]], ComposeOptions(fast=True, seed=4, layout="left,right"))
    assert np.array_equal(picture(both.pictures), plain)
    assert both.timings.unet_calls == 2 * both.timings.steps == 8  # LCM's 4 steps, one batch-1 call per region


@pytest.fixture
def compose(tiny_bundle, clips, tmp_path):
    """``audiotoken-rt compose`` of the two clips on the tiny bundle into tmp_path/out: (exit code, output)."""
    from audiotoken_rt.cli import app

    out = tmp_path / "out"

    def run(*args):
        result = CliRunner().invoke(
            app, ["compose", *map(str, clips[:2]), "--engines", str(tiny_bundle), "--out", str(out), "--steps", "2",
                  *map(str, args)]
        )  # fmt: skip
        return result.exit_code, result.output

    run.out = out
    run.stem = f"{clips[0].stem}+{clips[1].stem}"
    return run


def test_preview_layout_checks_its_own_file_not_the_composed_pictures(compose, monkeypatch):
    code, output = compose("--layout", "left,right", "--seed", 1)
    assert code == 0, output
    preview = compose.out / f"{compose.stem}.layout.png"
    code, output = compose("--layout", "left,right", "--preview-layout")  # the composed picture exists: no matter
    assert code == 0 and output.strip().splitlines() == [str(preview)], output
    monkeypatch.setattr("runtime.pipeline.Pipeline.open", lambda *a, **k: pytest.fail("the bundle was opened"))
    code, output = compose("--layout", "left,right", "--preview-layout")  # the preview exists: refused up front
    assert code == 1 and output.startswith(f"error: {preview} already exists; nothing was drawn"), output
    code, output = compose("--preview-layout")
    assert code == 1 and output.startswith("error: --preview-layout shows a --layout; this composition has none")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layout", "0,0,0.3,1;0.7,0,1,1"], "error: the layout's boxes (0,0,0.3,1; 0.7,0,1,1) leave part of"),
        (["--negative-prompt", "blurry " * 80], "error: --negative-prompt: prompt 'blurry blurry"),
        (["--layout", "left,right", "--background", "a park " * 40], "error: --background: prompt 'a park a park"),
    ],
)
def test_a_bad_composition_is_refused_by_its_options_name_before_any_sound(compose, monkeypatch, args, message):
    monkeypatch.setattr("runtime.pipeline.load_audio", lambda *a, **k: pytest.fail("a sound was read"))
    code, output = compose(*args)
    lines = output.strip().splitlines()
    assert code == 1 and lines[0].startswith(message) and len(lines) == 2 and lines[1].startswith("hint: "), lines
    assert "failed" not in output and not compose.out.exists()
