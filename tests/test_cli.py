"""The ``audiotoken-rt`` command line as a user meets it, on the tiny bundle: one ``error:`` line for every failure
and never a traceback, outputs checked before any work, a batch that keeps going, one line per picture with its
seed, random seeds, the forms the README and ``--help`` show for clip names starting with '-', and help that reads
at 80 columns."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from audiotoken_rt.cli import app
from export.options import ExportOptions
from runtime.bench import BenchOptions
from runtime.picture import read_png_metadata
from runtime.pipeline import GenerationOptions
from tests.support import REPO

WROTE = re.compile(r"^wrote (.+\.png) \(seed (\d+)\)$", re.MULTILINE)


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def generate(tiny_bundle, tmp_path):
    out = tmp_path / "out"

    def run(*args, steps: int = 2):
        return invoke("generate", "--engines", tiny_bundle, "--out", out, "--steps", steps, *args)

    run.out = out
    return run


def test_a_batch_keeps_going_and_says_what_it_wrote(generate, clips, tmp_path):
    dash = tmp_path / "-dash.wav"
    shutil.copy(clips[0], dash)
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    code, output = generate("--seed", 9, "--", dash, bad, clips[1])
    assert code == 1
    assert sorted(p.name for p in generate.out.iterdir()) == ["-dash.png", f"{clips[1].stem}.png"]
    assert WROTE.findall(output) == [
        (str(generate.out / "-dash.png"), "9"),
        (str(generate.out / f"{clips[1].stem}.png"), "9"),
    ]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "notes.wav: not a recognised audio file" in errors[0]
    assert output.count("notes.wav") == 1  # named once, not again in a summary
    assert output.strip().splitlines()[-1] == f"wrote 2 pictures to {generate.out} (1 sound failed)"
    meta = read_png_metadata(generate.out / "-dash.png")
    assert (meta["seed"], meta["steps"], meta["scheduler"], meta["clip"], meta["start"]) == (
        "9",
        "2",
        "dpm++2m",
        "-dash.wav",
        "0.0",
    )


def test_existing_pictures_are_refused_before_any_work(generate, clips, monkeypatch):
    generate("--seed", 1, clips[0])
    picture = generate.out / f"{clips[0].stem}.png"
    before = picture.read_bytes()
    monkeypatch.setattr("runtime.pipeline.Pipeline.open", lambda *a, **k: pytest.fail("the bundle was opened"))
    code, output = generate("--seed", 2, clips[1], clips[0])
    assert code == 1 and output.count("already exists") == 1 and "--overwrite" in output
    assert output.startswith(f"error: {picture} already exists; nothing was drawn")
    assert picture.read_bytes() == before and not (generate.out / f"{clips[1].stem}.png").exists()


def test_overwrite_replaces_and_several_pictures_are_numbered(generate, clips):
    generate("--seed", 1, clips[0])
    code, output = generate("--seed", 10, "--overwrite", "--num-images", 2, clips[0])
    assert code == 0, output
    assert [seed for _, seed in WROTE.findall(output)] == ["10", "11"]
    assert {f"{clips[0].stem}-0.png", f"{clips[0].stem}-1.png"} <= {p.name for p in generate.out.iterdir()}


def test_an_out_that_is_a_file_is_refused(tiny_bundle, clips, tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine")
    code, output = invoke("generate", "--engines", tiny_bundle, "--out", target, clips[0])
    assert code == 1 and output.startswith(f"error: --out {target}: exists and is not a folder")
    assert target.read_text() == "mine"


def test_seed_minus_one_draws_a_random_seed_that_replays(generate, clips):
    code, output = generate("--seed", -1, "--num-images", 2, clips[0])
    assert code == 0, output
    (first, seed0), (_, seed1) = WROTE.findall(output)
    assert int(seed1) == int(seed0) + 1 and read_png_metadata(first)["seed"] == seed0
    code, output = generate("--seed", seed0, "--overwrite", clips[0])
    assert code == 0, output
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(generate.out / f"{clips[0].stem}.png")))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", 0], "error: --steps is 0; it must be a whole number, 1 or more"),
        (["--num-images", 0], "error: --num-images is 0; it must be a whole number from 1 to 100"),
        (["--seed", -2], "error: seed -2: expected an integer from 0 to"),
        (["--guidance", 0.5], "error: --guidance is 0.5; it must be a finite number from 1 to 50"),
        (["--start", -1], "error: --start is -1.0 s"),
        (["--scheduler", "magic"], "error: Invalid value for '--scheduler': 'magic' is not one of dpm++2m, pndm"),
        (["--device", "tpu"], "error: Invalid value for '--device': 'tpu' is not one of cpu, cuda"),
    ],
)
def test_bad_options_are_one_line_errors(generate, clips, args, message):
    code, output = generate(*args, clips[0])
    lines = output.strip().splitlines()
    assert code != 0 and lines[0].startswith(message), lines
    assert len(lines) <= 2 and all(line.startswith(("error:", "hint:")) for line in lines)
    assert not generate.out.exists()


def test_a_bad_prompt_is_reported_once_and_briefly(generate, clips):
    long_prompt = "a photo of <*> " + "with a very loud dog " * 40
    code, output = generate("--prompt", long_prompt, clips[0], clips[1])
    lines = output.strip().splitlines()
    assert (
        code == 1
        and lines[0].startswith("error: prompt 'a photo of <*> with a very loud dog")
        and "tokens long" in lines[0]
    )
    assert len(lines) == 2 and len(lines[0]) < 200 and not generate.out.exists()
    code, output = generate("--prompt", "no placeholder", clips[0], clips[1])
    assert code == 1 and output.count("error:") == 1 and "holds <*> 0 times" in output


def test_a_missing_bundle_folder_is_named(tmp_path, clips):
    code, output = invoke("generate", "--engines", tmp_path / "nope", "--out", tmp_path / "out", clips[0])
    assert code == 1 and output.startswith(f"error: {tmp_path / 'nope'}: bundle folder does not exist")
    code, output = invoke("info", tmp_path)
    assert code == 1 and output.startswith(f"error: {tmp_path}: no manifest.json")


@pytest.mark.parametrize(
    "failure, message",
    [
        (KeyboardInterrupt, "error: interrupted"),
        (
            RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code"),
            "error: unexpected RuntimeError: [ONNXRuntimeError]",
        ),
    ],
)
def test_interruptions_and_unforeseen_failures_are_one_line(generate, clips, monkeypatch, failure, message):
    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr("runtime.pipeline.Pipeline.draw", broken)
    code, output = generate(clips[0])
    assert code == (130 if failure is KeyboardInterrupt else 1)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), output
    assert "Traceback" not in output


def test_an_onnx_runtime_failure_fails_the_clip_not_the_batch(generate, clips, monkeypatch):
    import onnxruntime

    real = onnxruntime.InferenceSession.run

    def fails_on_unet(self, names, feeds, *args):
        if "sample" in feeds:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : out of memory")
        return real(self, names, feeds, *args)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", fails_on_unet)
    code, output = generate(clips[0], clips[1])
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 2 and all("ONNX Runtime failed running engine unet on cpu" in e for e in errors)
    assert "Traceback" not in output and output.strip().endswith(
        "wrote 0 pictures to " + str(generate.out) + " (2 sounds failed)"
    )


def test_start_picks_the_window(generate, clips):
    code, output = generate("--seed", 3, "--start", 4.5, clips[0])
    assert code == 0, output
    shifted = generate.out / f"{clips[0].stem}.png"
    assert read_png_metadata(shifted)["start"] == "4.5"
    moved = generate.out.parent / "moved.png"
    shifted.rename(moved)
    generate("--seed", 3, clips[0])
    assert not np.array_equal(np.asarray(Image.open(moved)), np.asarray(Image.open(shifted)))


def readme_command(marker: str) -> list[str]:
    """The README's command line that contains ``marker``, split as a shell would."""
    (line,) = [
        line
        for line in (REPO / "README.md").read_text().splitlines()
        if marker in line and line.startswith("audiotoken-rt ")
    ]
    return shlex.split(line.split("  #")[0])


def test_the_readme_forms_for_names_starting_with_a_dash_work_verbatim(tiny_bundle, clips, tmp_path):
    clip_name = "-_gaZzFfzDQ_517000_527000.wav"
    shutil.copy(next(c for c in clips if c.name == clip_name), tmp_path / clip_name)
    for marker in ("-- -_gaZ", "./-_gaZ"):
        words = [str(tiny_bundle) if word == "engines/sd14" else word for word in readme_command(marker)]
        assert words[0] == "audiotoken-rt" and str(tiny_bundle) in words
        run = subprocess.run(
            [sys.executable, "-m", "audiotoken_rt", *words[1:]], cwd=tmp_path, capture_output=True, text=True
        )
        assert run.returncode == 0, (marker, run.stderr)
        assert (tmp_path / "pictures" / "-_gaZzFfzDQ_517000_527000.png").is_file()
        shutil.rmtree(tmp_path / "pictures")
    help_text = subprocess.run(
        [sys.executable, "-m", "audiotoken_rt", "generate", "--help"], capture_output=True, text=True, cwd=REPO
    ).stdout
    assert "generate --engines E --out O -- -x.wav" in " ".join(help_text.split())


def test_version():
    from importlib import metadata

    code, output = invoke("--version")
    assert code == 0 and output.strip() == f"audiotoken-rt {metadata.version('audiotoken-rt')}"


@pytest.mark.parametrize(
    "command, options",
    [
        ("generate", GenerationOptions),
        ("bench", BenchOptions),
        ("export", ExportOptions),
        ("train", None),
        ("info", None),
        ("make-random", None),
    ],
)
def test_help_reads_at_80_columns(command, options):
    """Every line fits 80 columns, and every option's help (from its options dataclass) appears with whole words."""
    from audiotoken.train_config import TrainConfig

    options = options or (TrainConfig if command == "train" else None)
    env = {"COLUMNS": "80", "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(
        [sys.executable, "-m", "audiotoken_rt", command, "--help"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert shown.returncode == 0, shown.stderr
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80
    flat = " ".join(shown.stdout.split()).replace("- ", "-")  # a line may end at a hyphen
    for spec in dataclasses.fields(options) if options else ():
        if "help" in spec.metadata and spec.name not in ("exclude",):
            assert " ".join(spec.metadata["help"].split()).replace("- ", "-") in flat, (command, spec.name)


@pytest.fixture
def edit(tiny_bundle, tmp_path):
    out = tmp_path / "edited"
    photo = tmp_path / "photo.jpg"
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((120, 90, 3)) * 255).astype(np.uint8)).save(photo, quality=95)

    def run(*args, steps: int = 2):
        return invoke("edit", "--engines", tiny_bundle, "--out", out, "--steps", steps, *args)

    run.out, run.photo = out, photo
    return run


def test_edit_writes_each_clip_at_the_picture_size_and_records_its_source(edit, clips, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file" * 10)
    mask = tmp_path / "mask.png"
    white = np.zeros((60, 45), np.uint8)
    white[10:40, 10:30] = 255
    Image.fromarray(white).save(mask)
    code, output = edit(edit.photo, clips[0], bad, "--mask", mask, "--strength", 0.7, "--seed", 4)
    assert code == 1 and "note: mask.png is 45x60, the picture 90x120: resized to 90x120" in output
    assert "error: " in output and "bad.wav" in output
    assert output.strip().splitlines()[-1] == f"wrote 1 picture to {edit.out} (1 sound failed)"
    written = edit.out / f"photo-{clips[0].stem}.png"
    assert [p.name for p in edit.out.iterdir()] == [written.name]
    with Image.open(written) as picture, Image.open(edit.photo) as source:
        assert picture.size == source.size == (90, 120)
        kept = np.asarray(Image.fromarray(white).resize((90, 120), Image.NEAREST)) == 0
        assert np.array_equal(np.asarray(picture)[kept], np.asarray(source.convert("RGB"))[kept])
    meta = read_png_metadata(written)
    assert (meta["source"], meta["strength"], meta["mask"], meta["feather"], meta["seed"]) == (
        "photo.jpg", "0.7", "mask.png", "8", "4"
    )  # fmt: skip
    assert meta["source_sha256"] == hashlib.sha256(edit.photo.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strength", 1.5], "error: --strength is 1.5; it must be between 0"),
        (["--feather", -1], "error: --feather is -1 pixels"),
        (["--mix", "a.wav"], "error: --mix: 'a.wav' is not CLIP:WEIGHT"),
        (["--mix", "missing.wav:1"], "error: --mix: missing.wav: no such clip"),
    ],
)
def test_bad_edit_options_are_one_line_errors(edit, clips, args, message):
    code, output = edit(edit.photo, clips[0], *args)
    lines = output.strip().splitlines()
    assert code != 0 and lines[0].startswith(message), lines
    assert len(lines) <= 2 and not edit.out.exists()


def test_a_bad_picture_is_one_line_before_any_work(edit, clips, tmp_path):
    cut = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 100).save(cut)
    cut.write_bytes(cut.read_bytes()[:60])
    for picture, words in ((tmp_path / "none.png", "none.png: no such file"), (cut, "cut.png")):
        code, output = edit(picture, clips[0])
        lines = output.strip().splitlines()
        assert code == 1 and lines[0].startswith("error: ") and words in lines[0], lines
        assert "Traceback" not in output and not edit.out.exists()


def test_a_mix_is_one_more_picture_named_by_its_clips(generate, clips):
    mix = f"{clips[0]}:0.7,{clips[1]}:0.3"
    code, output = generate("--seed", 2, "--mix", mix, clips[0])
    assert code == 0, output
    mixed = generate.out / f"{clips[0].stem}+{clips[1].stem}.png"
    assert {p.name for p in generate.out.iterdir()} == {f"{clips[0].stem}.png", mixed.name}
    assert read_png_metadata(mixed)["clip"] == f"{clips[0].name}:0.7,{clips[1].name}:0.3"
    code, output = generate("--mix", f"{clips[0]}:1,{clips[1]}:-1")
    assert code != 0 and "error: mix weights 1, -1 must be finite and sum to a positive number" in output
    code, output = invoke("generate", "--engines", generate.out, "--out", generate.out)
    assert code != 0 and "error: no sound given" in output


def pixels(png: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(png)))


def test_skip_existing_finishes_an_interrupted_batch(generate, clips, tmp_path, monkeypatch):
    """A batch of 3 clips stopped after its first picture is finished without drawing that one again; a picture cut
    short is drawn again, the same as before."""
    from runtime.pipeline import Pipeline

    third = tmp_path / "third.wav"
    shutil.copy(clips[1], third)
    code, output = generate("--seed", 5, clips[0])
    assert code == 0, output
    first, second, last = (generate.out / f"{stem}.png" for stem in (clips[0].stem, clips[1].stem, "third"))
    before, stamp = first.read_bytes(), first.stat().st_mtime_ns
    real, drawn = Pipeline.draw, []

    def counted(self, sounds, *args, **kwargs):
        drawn.append(sounds)
        return real(self, sounds, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "draw", counted)
    code, output = generate("--seed", 5, "--skip-existing", clips[0], clips[1], third)
    assert code == 0, output
    assert [line for line in output.splitlines() if "kept" in line] == ["kept 1 picture that exists (--skip-existing)"]
    assert drawn == [clips[1], third] and [path for path, _ in WROTE.findall(output)] == [str(second), str(last)]
    assert first.read_bytes() == before and first.stat().st_mtime_ns == stamp
    assert output.strip().splitlines()[-1] == f"wrote 2 pictures to {generate.out}"

    whole = second.read_bytes()
    second.write_bytes(whole[: len(whole) // 2])  # a copy cut short, a full disk
    drawn.clear()
    code, output = generate("--seed", 5, "--skip-existing", clips[0], clips[1], third)
    assert code == 0, output
    assert "kept 2 pictures that exist (--skip-existing); 1 that does not read back as a PNG will be drawn again" in (
        output.splitlines()
    )
    assert drawn == [clips[1]] and [path for path, _ in WROTE.findall(output)] == [str(second)]
    assert np.array_equal(pixels(second.read_bytes()), pixels(whole))
    assert first.read_bytes() == before and first.stat().st_mtime_ns == stamp


def test_skip_existing_draws_the_missing_pictures_of_a_clip(generate, clips):
    code, output = generate("--seed", 7, "--num-images", 2, clips[0])
    assert code == 0, output
    kept, missing = (generate.out / f"{clips[0].stem}-{k}.png" for k in (0, 1))
    stamp, removed = kept.stat().st_mtime_ns, missing.read_bytes()
    missing.unlink()
    code, output = generate("--seed", 7, "--num-images", 2, "--skip-existing", clips[0])
    assert code == 0, output
    assert WROTE.findall(output) == [(str(missing), "8")] and kept.stat().st_mtime_ns == stamp
    assert np.array_equal(pixels(missing.read_bytes()), pixels(removed))


def test_overwrite_and_skip_existing_exclude_each_other(generate, clips, edit):
    for command in (generate, lambda *args: edit(edit.photo, *args)):
        code, output = command("--overwrite", "--skip-existing", clips[0])
        assert code == 1 and output.strip().splitlines() == [
            "error: --overwrite and --skip-existing exclude each other: replace the pictures that exist, or keep them"
        ]


def test_edit_skips_existing_pictures_too(edit, clips):
    code, output = edit(edit.photo, clips[0], "--seed", 4)
    assert code == 0, output
    first = edit.out / f"photo-{clips[0].stem}.png"
    stamp = first.stat().st_mtime_ns
    code, output = edit(edit.photo, clips[0], clips[1], "--seed", 4, "--skip-existing")
    assert code == 0, output
    assert "kept 1 picture that exists (--skip-existing)" in output.splitlines()
    assert [path for path, _ in WROTE.findall(output)] == [str(edit.out / f"photo-{clips[1].stem}.png")]
    assert first.stat().st_mtime_ns == stamp
