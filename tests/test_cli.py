"""The ``audiotoken-rt`` command line as a user meets it, on the tiny bundle: one ``error:`` line for every failure
and never a traceback, outputs checked before any work, a batch that keeps going past a bad sound and stops at a
failure that is not a sound's, one stdout line per picture with its seed (everything else on stderr), random seeds,
the forms the README and ``--help`` show for clip names starting with '-', a missing GPU library named by the extra
that brings it, ``info`` at 80 columns, and help that reads at 80 columns."""

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
from runtime.audio import load_audio
from runtime.commands.bench import BenchOptions
from runtime.picture import read_png_metadata
from runtime.pipeline import GenerationOptions
from tests.support import REPO

WROTE = re.compile(r"^(.+\.png)\tseed (\d+)$", re.MULTILINE)  # a picture line (stdout)
COUNTED = re.compile(r"\d+ sounds? failed")  # the closing count of sounds that failed


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


def test_verbose_prints_each_clips_stage_timings_in_the_order_they_ran(generate, clips):
    code, output = generate("--verbose", "--seed", 2, *clips)
    assert code == 0, output
    assert re.findall(r"^(.+): stage timings$", output, re.MULTILINE) == [str(clip) for clip in clips]
    row = re.compile(r"^\s*([a-z_]+(?: \(per call\))?)\s*\u2502\s*(\d+\.\d)\s*$", re.MULTILINE)  # stage │ ms
    stages = ["load_audio", "encode_audio", "encode_prompt", "denoise", "unet", "decode_latents", "unet (per call)"]
    for table in output.split(": stage timings")[1:]:
        timed = {stage: float(ms) for stage, ms in row.findall(table)}
        assert list(timed) == stages
        assert timed["unet"] <= timed["denoise"]
        assert timed["unet (per call)"] == pytest.approx(timed["unet"] / 2, abs=0.08)  # 2 steps, a call each


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
        (["--steps", 5000], "error: --steps is 5000; dpm++2m takes 1 to 998 steps with this model's schedule"),
        (["--scheduler", "lcm", "--steps", 60], "error: --steps is 60; lcm takes 1 to 50 steps"),
        (["--negative-prompt", "blurry " * 80], "error: --negative-prompt: prompt 'blurry blurry"),
        (["--eta", 2], "error: --eta is 2.0; it must be a finite number from 0 to 1"),
        (["--eta", 0.5], "error: --eta 0.5: dpm++2m has no eta; only ddim and tcd take one"),  # the bundle's scheduler
        (["--spacing", "sideways"], "error: Invalid value for '--spacing': 'sideways' is not one of leading"),
        (
            ["--scheduler", "lcm", "--spacing", "trailing"],
            "error: --spacing 'trailing': lcm spaces no timesteps; they are its distillation schedule's, which already "
            "starts at the last training timestep, even for one step",
        ),
        (["--scheduler", "tcd", "--spacing", "trailing"], "error: --spacing 'trailing': tcd spaces no timesteps"),
        (["--scheduler", "tcd", "--steps", 51], "error: --steps is 51; tcd takes 1 to 50 steps"),
    ],
)
def test_bad_options_are_one_line_errors(generate, clips, args, message):
    code, output = generate(*args, clips[0])
    lines = output.strip().splitlines()
    assert code != 0 and lines[0].startswith(message), lines
    assert len(lines) <= 2 and all(line.startswith(("error:", "hint:")) for line in lines)
    assert "num_inference_steps" not in output and not COUNTED.search(output)  # the option's name; no sound counted
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


@pytest.mark.parametrize(
    "unet, message",
    [
        ("raises", "ONNX Runtime failed running engine unet on cpu ([ONNXRuntimeError]"),  # a BundleError
        ("gives NaN", "denoise: 256 of 256 values of the latents after step 1 of 2 are NaN or Inf"),  # NumericsError
    ],
)
def test_a_failure_that_is_not_a_sounds_stops_the_batch_in_one_line(generate, clips, monkeypatch, unet, message):
    """The UNet breaks after the first clip's picture: that picture stays written, the failure is reported once with
    its hint, the batch stops (the third clip is never read), and no sound is counted as failed."""
    import onnxruntime

    real, unet_runs = onnxruntime.InferenceSession.run, []

    def breaks_after_one_picture(self, names, feeds, *args):
        outputs = real(self, names, feeds, *args)
        if "sample" in feeds:
            unet_runs.append(1)
            if len(unet_runs) > 2:  # the first picture's 2 steps ran
                if unet == "raises":
                    raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : out of memory")
                return [np.full_like(outputs[0], np.nan)]
        return outputs

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", breaks_after_one_picture)
    read = []
    monkeypatch.setattr("runtime.pipeline.load_audio", lambda path, **kw: read.append(path) or load_audio(path, **kw))
    code, output = generate("--seed", 1, clips[0], clips[1], clips[0].parent / "never-read.wav")
    lines = output.strip().splitlines()
    assert code == 1 and "Traceback" not in output and not COUNTED.search(output), lines
    assert WROTE.findall(output) == [(str(generate.out / f"{clips[0].stem}.png"), "1")]
    (error,) = [line for line in lines if line.startswith("error:")]
    assert message in error and lines[lines.index(error) + 1].startswith("hint: ")
    assert (
        lines[-1]
        == f"wrote 1 picture to {generate.out}; stopped with 2 sounds not drawn (that failure is not a sound's)"
    )
    assert read == [clips[0], clips[1]]


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


def test_skip_existing_replaces_no_file_that_is_not_a_png(generate, clips):
    """Only a PNG cut short is drawn again: a file of another kind under a picture's name is refused before any work,
    and left as it was."""
    target = generate.out / f"{clips[0].stem}.png"
    generate.out.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"\xff\xd8\xff\xe0 a JPEG of someone's, named .png")
    code, output = generate("--skip-existing", clips[0])
    assert code == 1 and output.strip().splitlines()[0] == (
        f"error: {target}: exists and not as a PNG picture; nothing was drawn"
    )
    assert target.read_bytes() == b"\xff\xd8\xff\xe0 a JPEG of someone's, named .png"


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


@pytest.mark.parametrize(
    "backend, device, extra",
    [("tensorrt", "cpu", "audiotoken-rt[trt]"), ("onnxruntime", "cuda", "audiotoken-rt[gpu]"),
     ("onnxruntime", "tensorrt", "audiotoken-rt[gpu]")],
)  # fmt: skip
def test_a_backend_without_its_libraries_names_the_extra_before_any_work(
    tiny_bundle, clips, tmp_path, monkeypatch, backend, device, extra
):
    """TensorRT and onnxruntime-gpu are missing (simulated: also where they are installed): generate and bench say so
    in the two lines doctor gives (one owner: runtime.backends.backend_ready), before the bundle is read."""
    import onnxruntime

    from runtime.commands.doctor import device_ready

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ModuleNotFoundError
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr("runtime.bundle.Bundle.open", lambda *a, **k: pytest.fail("the bundle was read"))
    monkeypatch.setattr("runtime.commands.bench.run_worker", lambda *a, **k: pytest.fail("a bench worker ran"))
    check = device_ready(backend, device)
    assert check.failed and extra in check.hint and check.hint.startswith("pip install")
    expected = [f"error: {check.detail}", f"hint: {check.hint}"]
    common = ["--engines", tiny_bundle, "--device", device]
    for command in (
        ["generate", clips[0], "--out", tmp_path / "out", "--backend", backend, *common],
        ["bench", clips[0], "--backends", backend, *common],
    ):
        code, output = invoke(*command)
        assert code == 1 and output.strip().splitlines() == expected, (command, output)
    assert not (tmp_path / "out").exists()


def test_picture_lines_go_to_stdout_and_everything_else_to_stderr(tiny_bundle, clips, tmp_path):
    """`generate ... | xargs` in a terminal: stdout (a pipe) holds exactly one PATH<TAB>seed N line per picture, while
    the progress bar, the bad clip's error and the count go to stderr (the terminal)."""
    import os
    import pty
    import threading

    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    out = tmp_path / "out"
    terminal, stderr_end = pty.openpty()
    seen = bytearray()

    def drain() -> None:  # what the terminal shows; read so that the bar never blocks on a full pty
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    args = ["generate", clips[0], bad, clips[1], "--engines", tiny_bundle, "--out", out, "--steps", 2, "--seed", 3]
    done = subprocess.run(
        [sys.executable, "-m", "audiotoken_rt", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=stderr_end,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    os.close(stderr_end)
    reader.join(timeout=10)
    os.close(terminal)
    assert done.returncode == 1  # the bad clip
    pictures = [out / f"{clips[0].stem}.png", out / f"{clips[1].stem}.png"]
    assert done.stdout.decode().splitlines() == [f"{path}\tseed 3" for path in pictures]
    assert all(path.is_file() for path in pictures)
    shown = seen.decode(errors="replace")
    assert "error: " in shown and "bad.wav" in shown and f"wrote 2 pictures to {out} (1 sound failed)" in shown


def test_two_clips_of_one_name_are_told_apart_by_their_whole_paths(generate, tmp_path, clips):
    first, second = tmp_path / "a" / "dog.wav", tmp_path / "b" / "dog.wav"
    for path in (first, second):
        path.parent.mkdir()
        shutil.copy(clips[0], path)
    code, output = generate(first, second)
    assert code == 1 and output.strip().splitlines()[0] == (
        f"error: {first} and {second} would both write {generate.out / 'dog.png'}"
    )


def test_paths_are_shown_as_they_are_even_with_brackets(generate, tmp_path):
    bad = tmp_path / "[bold]clips" / "[red]bad.wav"  # rich markup, were it read as markup
    bad.parent.mkdir()
    bad.write_text("not audio")
    code, output = generate(bad)
    assert code == 1 and f"error: {bad}: not a recognised audio file" in output, output


def test_fast_help_and_refusal_give_the_export_command_a_pip_user_runs(generate, clips):
    from runtime.sampling import FAST

    command = f"audiotoken-rt export ... {FAST.export_flags}"
    help_text = subprocess.run(
        [sys.executable, "-m", "audiotoken_rt", "generate", "--help"], capture_output=True, text=True, cwd=REPO
    ).stdout
    assert command in " ".join(help_text.split()).replace("- ", "-")
    code, output = generate("--fast", clips[0])  # the tiny bundle is not a fast one
    assert code == 1 and f"hint: export one with: {command}" in output


def info_lines(bundle) -> list[str]:
    import os

    from rich.cells import cell_len

    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}
    shown = subprocess.run(
        [sys.executable, "-m", "audiotoken_rt", "info", str(bundle)], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 80 and "…" not in shown.stdout  # fits, nothing cut off
    return lines


def row(lines: list[str], label: str) -> str:
    """A fact's value in info's bundle table: the cell beside ``label`` with the lines it wraps onto, spaces
    dropped (a long value wraps at a space, or folds inside a word)."""
    (first,) = [i for i, line in enumerate(lines) if line.split("│")[0].strip() == label]
    cells = [lines[first].split("│", 1)[1]]
    for line in lines[first + 1 :]:
        label_cell, _, value = line.partition("│")
        if label_cell.strip() or not value:
            break
        cells.append(value)
    return "".join("".join(cells).split())


def bare(text: str) -> str:
    return "".join(text.split())


def test_info_shows_the_recipe_lora_decoder_batches_and_slots_at_80_columns(tiny_bundle, fast_bundle):
    from runtime.bundle import read_manifest

    plain = info_lines(tiny_bundle)
    assert row(plain, "recipe") == bare("dpm++2m, 25 steps, guidance 7.5 (the defaults)")
    assert row(plain, "fused LoRA") == "none"
    assert row(plain, "decoder") == bare("sd-vae (Stable Diffusion's autoencoder)")
    assert row(plain, "UNet batches") == bare("2 (guidance above 1)")
    assert row(plain, "token slots") == bare("4: a compose prompt holds <1>..<4>")
    for name, engine in read_manifest(tiny_bundle).engines.items():  # every tensor on a line of its own
        for spec in (*engine.inputs, *engine.outputs):
            assert any(line.split()[0] == f"{name}.{spec.name}" and str(list(spec.shape)) in line
                       for line in plain), (name, spec.name)  # fmt: skip
    fast = info_lines(fast_bundle)
    lora = read_manifest(fast_bundle).recipe.lora
    assert row(fast, "recipe") == bare("lcm, 4 steps, guidance 1 (the defaults); --fast works")
    assert row(fast, "fused LoRA") == bare(f"{lora.source}, scale {lora.scale:g}, sha256 {lora.sha256[:16]}")
    assert row(fast, "decoder") == bare("taesd (the tiny autoencoder, TAESD)")
    assert row(fast, "UNet batches") == bare("1 (guidance 1)")
