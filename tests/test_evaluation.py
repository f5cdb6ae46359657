"""The evaluation (SPEC 7): hidden-answer invariants of AIS, IIS, AIC, FID and the bootstrap on embeddings; the
models' loaders and the evaluate and compare commands on ``make-random --eval`` stand-ins (random weights, in the
published file formats); one-line errors for bad input.

Commands that load the evaluation models run in a subprocess: open_clip and pytorch-fid need torchvision, which here
sits aside in ``.cache/eval`` (``.ci/setup``; or the folder named by ``AUDIOTOKEN_EVAL_LIBS``) because transformers
imports any torchvision it finds; this test process never imports it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import soundfile as sf
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from audiotoken import eval_models
from audiotoken.eval_models import MODEL_FILES, Spectrogram, wav2clip_audio
from audiotoken.evaluate_cli import compare_command, evaluate_command
from audiotoken.evaluation import (
    METRICS,
    WAV2CLIP_SAMPLES,
    EvaluationOptions,
    Evaluator,
    audio_files,
    bootstrap_mean,
    class_agreement,
    clip_of_picture,
    clip_set,
    frechet_distance,
    frechet_interval,
    gather,
    read_frame,
    win_rates,
)
from runtime.picture import read_png_metadata
from tests.support import REPO

EVAL_LIBS = Path(os.environ.get("AUDIOTOKEN_EVAL_LIBS", REPO / ".cache" / "eval"))
ORACLES = Path(os.environ.get("AUDIOTOKEN_ORACLES", REPO / ".cache" / "oracles"))
APP = """
import typer
from audiotoken.evaluate_cli import compare_command, evaluate_command
app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
app.command("evaluate")(evaluate_command)
app.command("compare")(compare_command)
app.callback()(lambda: None)
app()
"""
STAND_INS = """
import json, sys, typer
from audiotoken import eval_models
from audiotoken.cli import make_random_command
app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
app.command("make-random")(make_random_command)
app.callback()(lambda: None)
try:
    app(["make-random", sys.argv[1], "--eval"])
except SystemExit as done:
    assert not done.code, done.code
open_clip, inception = eval_models.import_library("open_clip"), eval_models.import_library("pytorch_fid.inception")
import wav2clip  # imported by then, torchaudio stood in for
print(json.dumps({"clip_b32": open_clip.get_pretrained_url("ViT-B-32", "openai"),
                  "clip_l14": open_clip.get_pretrained_url("ViT-L-14", "openai"),
                  "wav2clip": wav2clip.MODEL_URL, "inception": inception.FID_WEIGHTS_URL}))
"""
CLASSES = ("dog barking", "rain", "engine")


def local_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    app.command("evaluate")(evaluate_command)
    app.command("compare")(compare_command)
    app.callback()(lambda: None)
    return app


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(local_app(), [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def eval_env() -> dict[str, str]:
    """The environment of a subprocess that can import the evaluation's libraries (torchvision from EVAL_LIBS)."""
    missing = [
        name for name in ("open_clip", "pytorch_fid", "wav2clip", "librosa") if not importlib.util.find_spec(name)
    ]
    if importlib.util.find_spec("torchvision") is None and not (EVAL_LIBS / "torchvision").is_dir():
        missing.append(f"torchvision (nor in {EVAL_LIBS})")
    if missing:
        pytest.skip(f"the evaluation libraries are not installed ({', '.join(missing)}): run `just setup`")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(EVAL_LIBS), str(REPO)]), "COLUMNS": "200"}


def run(env: dict[str, str], script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], env=env, cwd=REPO, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def stand_ins(eval_env, tmp_path_factory) -> tuple[Path, dict]:
    """The random stand-ins ``make-random --eval`` writes, and the libraries' own download addresses."""
    out = tmp_path_factory.mktemp("eval") / "models"
    result = run(eval_env, STAND_INS, out)
    assert result.returncode == 0, result.stderr
    return out / "eval", json.loads(result.stdout.strip().splitlines()[-1])


def write_clip(path: Path, seed: int, seconds: float = 1.0, rate: int = 16_000, channels: int = 1) -> Path:
    noise = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(seconds * rate), channels)).astype(np.float32)
    sf.write(path, noise, rate)
    return path


def write_video(path: Path, frames: list[np.ndarray], fps: int = 2) -> None:
    """An H.264 mp4 (lossless luma) of RGB frames, with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": "0"}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A training-dataset folder: audio/, images/ (and one clip's frame as video/<name>.mp4), labels.csv with a class
    that only a train row names."""
    root = tmp_path_factory.mktemp("dataset")
    for folder in ("audio", "images", "video"):
        (root / folder).mkdir()
    rng = np.random.default_rng(0)
    names = ["-_gaZzFfzDQ_517000_527000", "clip-a", "clip-a-1"]  # a leading dash; a name that looks numbered
    for i, name in enumerate(names):
        write_clip(root / "audio" / f"{name}.wav", seed=i)
    for name in names[:2]:
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
    write_video(root / "video" / f"{names[2]}.mp4", [np.full((32, 32, 3), 12 * i, np.uint8) for i in range(20)])
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "label", "split"])
        writer.writerows([[name, CLASSES[i], "test"] for i, name in enumerate(names)] + [["other", "cat", "train"]])
    return root


def frames_as_pictures(dataset: Path, out: Path) -> Path:
    """One picture per clip equal to its ground-truth frame (the video's frame as the evaluation reads it)."""
    out.mkdir()
    audio = audio_files(dataset)
    clips = clip_set(sorted(audio), audio, dataset / "labels.csv", dataset)
    for name, frame in zip(clips.names, clips.frames, strict=True):
        read_frame(frame, name).save(out / f"{name}.png")
    return out


# ---- the metrics, on embeddings ---------------------------------------------------------------------------------------


def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """FID as pytorch-fid computes it: scipy's sqrtm of the covariance product."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sa @ sb).real
    difference = a.mean(0) - b.mean(0)
    return float(difference @ difference + np.trace(sa) + np.trace(sb) - 2 * np.trace(root))


def test_frechet_distance_matches_scipy_sqrtm_and_is_zero_against_itself():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))  # correlated features
    b = rng.normal(0.3, 1.5, size=(250, 16)) @ rng.normal(size=(16, 16))
    assert abs(frechet_distance(a, b) - reference_frechet(a, b)) < 1e-3
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), abs=1e-9)
    # fewer rows than features + 1 on one side or both: the centred rows are the covariance factor (no eigh)
    c = rng.normal(0.3, 1.5, size=(300, 16)) @ rng.normal(size=(16, 16))
    for rows_a, rows_b in ((10, 300), (300, 10), (8, 12), (17, 17)):
        few_a, few_b = a[:rows_a], c[:rows_b]
        assert abs(frechet_distance(few_a, few_b) - reference_frechet(few_a, few_b)) < 1e-3, (rows_a, rows_b)
    few = rng.normal(size=(6, 2048))  # fewer pictures than Inception features: singular covariances
    assert abs(frechet_distance(few, few)) < 1e-9 and abs(frechet_distance(a, a)) < 1e-9
    assert frechet_distance(few, few + 1.0) == pytest.approx(2048.0)  # a shift by 1 in every feature: |mu|^2
    assert frechet_distance(a[rng.permutation(300)], b[rng.permutation(250)]) == pytest.approx(frechet_distance(a, b))


def test_iis_is_one_when_the_pictures_are_the_frames():
    frames = np.random.default_rng(2).normal(size=(40, 24))  # [clips, E]
    clip_of = np.repeat(np.arange(40), 3)  # three pictures per clip, each its clip's frame (scaled: cosine)
    assert np.all(win_rates(frames[clip_of] * 2.5, frames, clip_of) == 1.0)


def test_aic_is_one_when_the_class_texts_are_the_pictures_own_embeddings():
    pictures = np.random.default_rng(3).normal(size=(30, 24))
    assert np.all(class_agreement(pictures, pictures, np.arange(30)) == 1.0)
    assert np.all(class_agreement(pictures, pictures, (np.arange(30) + 1) % 30) == 0.0)


def test_win_rates_of_random_pairs_are_one_half_in_expectation():
    rng = np.random.default_rng(4)
    clip_of = np.repeat(np.arange(300), 2)
    rates = win_rates(rng.normal(size=(600, 32)), rng.normal(size=(300, 32)), clip_of)
    assert abs(rates.mean() - 0.5) < 0.04
    low, high = bootstrap_mean(rates, clip_of, 1000, np.random.default_rng(0))
    assert low < 0.5 < high and high - low < 0.1
    assert set(np.unique(rates * 299).round(6)) <= set(range(300))  # ranks among the 299 other clips


def test_permuting_pictures_and_clips_together_changes_nothing():
    rng = np.random.default_rng(5)
    pictures, targets = rng.normal(size=(50, 16)), rng.normal(size=(20, 16))
    clip_of = rng.integers(0, 20, 50)
    rates = win_rates(pictures, targets, clip_of)
    order, relabel = rng.permutation(50), rng.permutation(20)  # new position of clip c: relabel[c]
    moved = np.empty_like(targets)
    moved[relabel] = targets
    assert np.allclose(win_rates(pictures[order], moved, relabel[clip_of[order]]), rates[order])
    agree = class_agreement(pictures, targets, clip_of)
    assert np.array_equal(class_agreement(pictures[order], moved, relabel[clip_of[order]]), agree[order])


def test_the_bootstrap_resamples_clips_not_pictures():
    rng = np.random.default_rng(6)
    scores = (rng.random(2000) < 0.3).astype(float)  # one picture per clip, Bernoulli(0.3)
    low, high = bootstrap_mean(scores, np.arange(2000), 2000, np.random.default_rng(0))
    assert low < scores.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 2000), rel=0.2)
    # three identical pictures per clip carry no more information than one: the same interval, not sqrt(3) narrower
    tripled = bootstrap_mean(np.repeat(scores, 3), np.repeat(np.arange(2000), 3), 2000, np.random.default_rng(0))
    assert tripled == pytest.approx((low, high))
    assert bootstrap_mean(np.full(10, 0.7), np.arange(10), 100, np.random.default_rng(0)) == pytest.approx((0.7, 0.7))
    assert bootstrap_mean(np.ones(4), np.zeros(4), 100, np.random.default_rng(0)) is None  # one clip: no interval


def test_the_fid_interval_holds_the_fid_of_two_samples_of_one_distribution():
    """Resampling with replacement repeats rows, and repeated rows inflate a Frechet distance (fewer distinct rows:
    a larger bias), so bootstrap replicates of FID lie above it. The interval is the spread of FID at its count."""
    rng = np.random.default_rng(0)
    a, b, clips = rng.normal(size=(200, 64)), rng.normal(size=(200, 64)), np.arange(200)
    value = frechet_distance(a, b)
    low, high = frechet_interval(a, clips, b, clips, 100, np.random.default_rng(0))
    assert low < value < high
    fresh = [frechet_distance(rng.normal(size=(200, 64)), rng.normal(size=(200, 64))) for _ in range(100)]
    spread = np.percentile(fresh, 97.5) - np.percentile(fresh, 2.5)  # FID's own 95% range over new samples
    assert spread < high - low < 2 * spread  # conservative, not far off
    assert frechet_interval(a[:2], clips[:2], b[:2], clips[:2], 100, np.random.default_rng(0)) is None  # 2 clips


# ---- inputs ---------------------------------------------------------------------------------------------------------


def test_pictures_are_matched_to_clips_by_name():
    clips = {name: Path(name) for name in ("dog", "dog-1", "-_x_1_2", "rain")}
    assert clip_of_picture("dog", clips) == "dog" and clip_of_picture("dog-3", clips) == "dog"
    assert clip_of_picture("dog-1", clips) == "dog-1"  # an exact name wins over <clip>-<k>
    assert clip_of_picture("dog-1-0", clips) == "dog-1" and clip_of_picture("-_x_1_2-0", clips) == "-_x_1_2"
    assert clip_of_picture("dog-x", clips) is None and clip_of_picture("cat", clips) is None


def test_gather_reads_a_training_dataset_layout(dataset, tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name in ("clip-a.png", "clip-a-1.png", "clip-a-1-0.png", "clip-a-1-1.jpg"):
        Image.new("RGB", (8, 8)).save(pictures / name)
    clips, found = gather(pictures, dataset, dataset / "labels.csv", dataset)
    assert clips.names == ("clip-a", "clip-a-1") and clips.classes == ("cat", "dog barking", "engine", "rain")
    assert [clips.label(i) for i in range(2)] == ["rain", "engine"]
    assert [f.suffix for f in clips.frames] == [".png", ".mp4"]
    assert [(p.name, clips.names[p.clip]) for p in found] == [
        ("clip-a.png", "clip-a"),
        ("clip-a-1-0.png", "clip-a-1"),
        ("clip-a-1-1.jpg", "clip-a-1"),
        ("clip-a-1.png", "clip-a-1"),
    ]


def test_a_video_frame_is_drawn_over_the_clip_and_the_same_every_run(tmp_path):
    path = tmp_path / "ramp.mp4"
    write_video(path, [np.full((32, 32, 3), 12 * i, np.uint8) for i in range(20)])  # 10 s at 2 fps
    grey = {name: round(np.asarray(read_frame(path, name), np.float64).mean() / 12) for name in "abcdefgh"}
    assert set(grey.values()) <= set(range(20)) and len(set(grey.values())) > 2  # drawn over the whole clip
    assert all(round(np.asarray(read_frame(path, n), np.float64).mean() / 12) == g for n, g in grey.items())


def test_wav2clip_hears_44k_mono_padded_to_its_fixed_length_or_16k_when_asked(tmp_path):
    stereo = write_clip(tmp_path / "stereo.wav", seed=1, seconds=0.5, channels=2)
    wave = wav2clip_audio(stereo)
    assert wave.shape == (WAV2CLIP_SAMPLES[44_100],) == (442_763,) and wave.dtype == np.float32
    assert np.abs(wave[:20_000]).mean() > 0.05 and not wave[22_100:].any()  # 0.5 s at 44.1 kHz, then zeros
    long = wav2clip_audio(write_clip(tmp_path / "long.flac", seed=2, seconds=12.0))
    assert long.shape == (442_763,) and np.abs(long[-1000:]).mean() > 0.05  # cut, not padded
    own = wav2clip_audio(stereo, 16_000)  # Wav2CLIP's training rate: 10 s at 16 kHz
    assert own.shape == (WAV2CLIP_SAMPLES[16_000],) == (160_000,)
    assert np.abs(own[:7_000]).mean() > 0.05 and not own[8_100:].any()  # 0.5 s at 16 kHz, then zeros


def test_the_spectrogram_standing_in_for_torchaudio_is_torchaudios(monkeypatch):
    """wav2clip's one torchaudio transform, against torchaudio's own code (its Python files, from the oracle folder)."""
    if not (ORACLES / "torchaudio" / "transforms" / "_transforms.py").is_file():
        pytest.skip(f"torchaudio's files are not in {ORACLES}: pip install --no-deps --target {ORACLES} torchaudio")
    package = types.ModuleType("torchaudio")
    package.__path__ = [str(ORACLES / "torchaudio")]  # its modules, without its __init__ (the native extension)
    extension = types.ModuleType("torchaudio._extension")
    extension.fail_if_no_align, extension._IS_TORCHAUDIO_EXT_AVAILABLE = (lambda function: function), False
    monkeypatch.setitem(sys.modules, "torchaudio", package)
    monkeypatch.setitem(sys.modules, "torchaudio._extension", extension)
    try:
        from torchaudio.transforms import Spectrogram as Reference
    finally:  # leave no half of torchaudio behind (the two stand-ins go at teardown)
        for name in [n for n in sys.modules if n.startswith("torchaudio.") and n != "torchaudio._extension"]:
            del sys.modules[name]
    waves = torch.from_numpy(np.random.default_rng(7).uniform(-1, 1, (2, 1, 44_100)).astype(np.float32))
    ours, reference = Spectrogram(n_fft=512, hop_length=353), Reference(n_fft=512, hop_length=353)
    assert list(ours.state_dict()) == list(reference.state_dict()) == ["window"]
    assert torch.equal(ours.window, reference.window)
    expected = reference(waves)  # [2, 1, 257, 125]
    assert ours(waves).shape == expected.shape and torch.allclose(ours(waves), expected, rtol=1e-5, atol=1e-6)


# ---- one-line errors --------------------------------------------------------------------------------------------------


def test_bad_input_is_one_line_each(dataset, tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.new("RGB", (8, 8)).save(pictures / "clip-a.png")
    base = ["evaluate", "--clips", dataset, "--labels", dataset / "labels.csv", "--models", tmp_path / "none"]

    def error(*args) -> list[str]:
        code, output = invoke(*base, *args)
        lines = [line for line in output.splitlines() if line.startswith(("error:", "hint:"))]
        assert code == 1 and "Traceback" not in output and lines[0].startswith("error:"), output
        return lines

    assert "no such folder" in error("--pictures", tmp_path / "missing")[0]
    assert "is not a folder" in error("--pictures", pictures, "--report", pictures / "clip-a.png")[0]
    Image.new("RGB", (8, 8)).save(pictures / "thunder-0.png")
    lines = error("--pictures", pictures)
    assert "1 picture(s)" in lines[0] and "thunder-0.png" in lines[0] and "<clip>-<k>.png" in lines[1]
    (pictures / "thunder-0.png").unlink()
    unlabelled = tmp_path / "labels.csv"
    unlabelled.write_text("name,label,split\nclip-a-1,rain,test\n")
    assert "clip-a" in error("--pictures", pictures, "--labels", unlabelled)[0]  # the later --labels wins
    lines = error("--pictures", pictures)  # every model file is checked before any work
    assert MODEL_FILES["clip_b32"].name in lines[0] and "not found" in lines[0]
    assert "openaipublic.azureedge.net" in lines[1] and "ViT-B-32.pt" in lines[1]
    assert "needs the ground-truth frames" in error("--pictures", pictures, "--metrics", "IIS")[0]
    assert "unknown metric" in error("--pictures", pictures, "--metrics", "CLAP")[0]
    empty = tmp_path / "frames"
    empty.mkdir()
    assert "have no frame" in error("--pictures", pictures, "--frames", empty)[0]
    lines = error("--pictures", pictures, "--models", pictures / "clip-a.png")  # a file, not the models' folder
    assert "--models" in lines[0] and "is not a folder" in lines[0] and "not found" not in lines[0]
    code, output = invoke(*base, "--pictures", pictures, "--wav2clip-rate", "22050")
    assert code == 2 and "22050" in output and "16000" in output and "44100" in output


# ---- the Evaluator on stand-in models: pixels as embeddings ---------------------------------------------------------

EMBED = 48  # 4x4 RGB


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((4, 4)), np.float64).reshape(-1) - 127.5  # [48]


class PixelModel:
    """Stands in for CLIP and the FID Inception: a picture's embedding is its pixels at 4x4, a class name's a random
    vector seeded by the name."""

    def __init__(self, path: Path, device: str):
        pass

    def embed_images(self, images: list) -> np.ndarray:
        return np.stack([pixels(image) for image in images])  # [B, 48]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([np.random.default_rng(zlib.crc32(text.encode())).normal(size=EMBED) for text in texts])


@pytest.fixture
def fake_models(monkeypatch, tmp_path) -> tuple[Path, list[int]]:
    """A --models folder (empty files of the right names) whose loaders are the stand-ins above, and the lengths of
    the waveforms the Wav2CLIP stand-in was fed."""
    heard: list[int] = []

    class Wav2Clip:
        def __init__(self, path: Path, device: str):
            pass

        def embed(self, waves: np.ndarray) -> np.ndarray:
            heard.extend([waves.shape[1]] * len(waves))
            return waves[:, : EMBED * 50].reshape(len(waves), EMBED, 50).std(axis=2)  # [B, 48]

    folder = tmp_path / "fake-models"
    folder.mkdir()
    for spec in MODEL_FILES.values():
        (folder / spec.name).write_bytes(b"")
    loaders = {"clip_b32": PixelModel, "clip_l14": PixelModel, "wav2clip": Wav2Clip, "inception": PixelModel}
    monkeypatch.setattr(eval_models, "LOADERS", loaders)
    return folder, heard


@pytest.fixture(scope="module")
def picture_set(tmp_path_factory) -> Path:
    """12 clips of 0.2 s, three classes; every third clip's frame a 10 s video whose frames all differ, the others'
    a picture; two random pictures per clip in pictures/."""
    root = tmp_path_factory.mktemp("picture-set")
    (root / "pictures").mkdir()
    rng = np.random.default_rng(8)
    rows = []
    for i in range(12):
        name = f"clip{i:02d}"
        write_clip(root / f"{name}.wav", seed=20 + i, seconds=0.2)
        base = rng.integers(0, 128, (32, 32, 3))
        if i % 3 == 0:
            write_video(root / f"{name}.mp4", [(base + 6 * k).astype(np.uint8) for k in range(20)])
        else:
            Image.fromarray(base.astype(np.uint8)).save(root / f"{name}.png")
        for k in range(2):
            picture = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(picture).save(root / "pictures" / f"{name}-{k}.png")
        rows.append(f"{name},{CLASSES[i % 3]},test\n")
    (root / "labels.csv").write_text("name,label,split\n" + "".join(rows))
    return root


def evaluate_with(models: Path, root: Path, **options):
    clips, pictures = gather(root / "pictures", root, root / "labels.csv", root)
    return Evaluator(clips, models, EvaluationOptions(**options)).score(pictures)


def test_the_seed_moves_the_intervals_not_the_values(fake_models, picture_set):
    """The seed is the bootstrap's: the frame drawn from a video depends on the clip's name alone."""
    scores = {seed: evaluate_with(fake_models[0], picture_set, seed=seed) for seed in (0, 1, 2)}
    assert list(scores[0].metrics) == list(METRICS)
    for metric in METRICS:
        assert scores[0].metrics[metric].value == scores[1].metrics[metric].value == scores[2].metrics[metric].value
    moved = {metric for metric in METRICS if scores[0].metrics[metric].ci95 != scores[1].metrics[metric].ci95}
    assert "FID" in moved and moved & {"AIS", "IIS", "AIC"}  # (means of a few clips may repeat an interval)


def test_each_metric_draws_its_own_replicates(fake_models, picture_set):
    every = evaluate_with(fake_models[0], picture_set)
    for metric in METRICS:
        alone = evaluate_with(fake_models[0], picture_set, metrics=(metric,))
        assert alone.metrics[metric].ci95 == every.metrics[metric].ci95, metric


def test_wav2clip_hears_the_rate_asked_for(fake_models, picture_set, tmp_path):
    folder, heard = fake_models
    args = ["evaluate", "--pictures", picture_set / "pictures", "--clips", picture_set, "--models", folder]
    args += ["--labels", picture_set / "labels.csv", "--metrics", "AIS"]
    for rate, samples in ((None, 442_763), ("16000", 160_000), ("44100", 442_763)):
        heard.clear()
        out = tmp_path / f"{rate}.json"
        code, output = invoke(*args, "--json", out, *(["--wav2clip-rate", rate] if rate else []))
        assert code == 0, output
        assert heard == [samples] * 12
        assert json.loads(out.read_text())["protocol"]["wav2clip_rate"] == int(rate or 44_100)


# ---- the models and the commands, on random stand-ins ---------------------------------------------------------------


def test_stand_ins_are_the_published_files_and_the_sources_are_the_libraries_own(stand_ins):
    folder, sources = stand_ins
    assert sorted(p.name for p in folder.iterdir()) == sorted(spec.name for spec in MODEL_FILES.values())
    for key, spec in MODEL_FILES.items():
        assert spec.source.split()[0] == sources[key]
    b32 = torch.load(folder / "ViT-B-32.pt", weights_only=True)  # OpenAI's layout, which open_clip reads back
    assert b32["text_projection"].shape[1] == 512 and b32["visual.conv1.weight"].dtype == torch.float16
    wav2clip = torch.load(folder / "Wav2CLIP.pt", weights_only=True)
    assert "audio_encoder.spectrogram.window" in wav2clip and "audio_transform.sequential.3.weight" in wav2clip
    assert torch.load(folder / MODEL_FILES["inception"].name, weights_only=True)["fc.weight"].shape == (1008, 2048)


def test_evaluate_end_to_end(eval_env, stand_ins, dataset, tmp_path):
    """Pictures that are the frames: IIS 100 and FID 0 whatever the (random) weights; an unreadable picture is
    reported and skipped; the table, the JSON and the report."""
    pictures = frames_as_pictures(dataset, tmp_path / "pictures")
    (pictures / "clip-a-3.png").write_bytes(b"not a picture")
    out = tmp_path / "scores.json"
    args = ["--pictures", pictures, "--clips", dataset, "--labels", dataset / "labels.csv", "--frames", dataset]
    result = run(
        eval_env, APP, "evaluate", *args, "--models", stand_ins[0], "--json", out, "--report", tmp_path / "report"
    )
    assert result.returncode == 0, result.stderr
    assert "skipped clip-a-3.png" in result.stderr and "3 pictures of 3 clips" in result.stdout
    scores = json.loads(out.read_text())
    assert scores["IIS"] == 100.0 and scores["ci95"]["IIS"] == [100.0, 100.0]
    assert abs(scores["FID"]) < 1e-3 and scores["ci95"]["FID"][1] < 1e-3
    assert 0 <= scores["AIS"] <= 100 and scores["AIC"] * 3 / 100 == pytest.approx(round(scores["AIC"] * 3 / 100))
    assert scores["n"] == {"AIS": 3, "IIS": 3, "AIC": 3, "FID": 3} and scores["clips"] == 3
    assert [s["file"] for s in scores["skipped"]] == ["clip-a-3.png"]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "AudioToken (paper)" in page and "68.23" in page and 'src="sheet.png"' in page
    with Image.open(tmp_path / "report" / "sheet.png") as sheet:
        assert sheet.width >= 3 * 160 and sheet.height >= 3 * 160  # 3 rows: frame, picture, (unreadable)


def test_compare_draws_both_sides_with_the_same_seeds(tiny_bundle, clips, tmp_path):
    out, report = tmp_path / "pictures", tmp_path / "report"
    args = ["compare", tiny_bundle, tiny_bundle, clips[0], "--steps", "2", "--num-images", "2", "--seed", "5"]
    code, output = invoke(*args, "--out", out, "--json", tmp_path / "same.json", "--report", report)
    assert code == 0, output
    same = json.loads((tmp_path / "same.json").read_text())
    assert same["psnr"] == {"pictures": 2, "identical": 2, "mean_db": None, "min_db": None}
    assert [p["seed"] for p in same["pictures"]] == [5, 6]
    for side in ("a", "b"):
        assert sorted(p.name for p in (out / side).iterdir()) == [f"{clips[0].stem}-0.png", f"{clips[0].stem}-1.png"]
    assert read_png_metadata(out / "b" / f"{clips[0].stem}-1.png")["seed"] == "6"
    assert (report / "sheet.png").is_file() and "PSNR of B against A" in (report / "index.html").read_text()
    code, output = invoke(*args, "--out", out)
    assert code == 1 and "already exist" in output  # nothing is overwritten without --overwrite
    code, output = invoke(*args, "--preset-b", "official", "--json", tmp_path / "official.json")
    assert code == 0, output
    official = json.loads((tmp_path / "official.json").read_text())  # PNDM against DPM-Solver++: other pictures
    assert official["psnr"]["identical"] == 0 and 5 < official["psnr"]["min_db"] < 80


def test_compare_reports_the_metric_deltas(eval_env, stand_ins, tiny_bundle, clips, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("name,label,split\n" + "".join(f"{c.stem},{CLASSES[i]},test\n" for i, c in enumerate(clips)))
    out = tmp_path / "compare.json"
    args = ["compare", tiny_bundle, tiny_bundle, *clips, "--steps", "2", "--models", stand_ins[0], "--labels", labels]
    result = run(eval_env, APP, *args, "--metrics", "AIC", "--json", out)
    assert result.returncode == 0, result.stderr
    compared = json.loads(out.read_text())
    assert compared["delta"] == {"AIC": 0.0} and compared["metrics"]["a"]["n"] == {
        "AIS": 0,
        "IIS": 0,
        "AIC": 2,
        "FID": 0,
    }
    assert compared["metrics"]["a"]["IIS"] is None and compared["metrics"]["a"]["ci95"]["FID"] is None
    assert compared["metrics"]["a"]["AIC"] == compared["metrics"]["b"]["AIC"]


def test_compare_scores_each_picture_against_its_own_clip_in_any_order(
    eval_env, stand_ins, tiny_bundle, clips, tmp_path
):
    """Clips given out of name order: each clip's frame is here its own picture, so IIS is 100 when every picture is
    scored against its own clip (0 against the other's); --models naming a file is refused before any drawing."""
    backwards = clips[::-1]
    assert [c.stem for c in backwards] != sorted(c.stem for c in backwards)
    drawn = tmp_path / "drawn"
    code, output = invoke("compare", tiny_bundle, tiny_bundle, *backwards, "--steps", "2", "--out", drawn)
    assert code == 0, output
    frames = drawn / "a"  # <clip>.png: each clip's picture, the same on every draw (the same seed)
    out = tmp_path / "compare.json"
    args = ["compare", tiny_bundle, tiny_bundle, *backwards, "--steps", "2", "--frames", frames, "--metrics", "IIS"]
    result = run(eval_env, APP, *args, "--models", stand_ins[0], "--json", out)
    assert result.returncode == 0, result.stderr
    compared = json.loads(out.read_text())
    assert compared["metrics"]["a"]["IIS"] == compared["metrics"]["b"]["IIS"] == 100.0
    assert [p["clip"] for p in compared["pictures"]] == [c.name for c in backwards]
    result = run(eval_env, APP, *args, "--models", frames / f"{clips[0].stem}.png")
    assert result.returncode == 1 and "is not a folder" in result.stderr and "PSNR" not in result.stdout


BLOCK_TORCH = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
sys.meta_path.insert(0, Blocker())
"""


def test_a_runtime_only_install_names_the_extra(tmp_path, clips):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "COLUMNS": "200"}
    evaluate = ["evaluate", "--pictures", tmp_path, "--clips", tmp_path, "--labels", tmp_path, "--models", tmp_path]
    compare = ["compare", tmp_path, tmp_path, clips[0], "--models", tmp_path]
    for args in (evaluate, compare):
        result = run(env, APP, *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and "needs the PyTorch side" in lines[0] and "torch" in lines[0], result.stderr
        assert lines[1].startswith("hint: pip install torch==")


def test_importing_the_command_module_needs_no_torch():
    code = "import sys; import audiotoken.evaluate_cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
