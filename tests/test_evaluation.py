"""The evaluation (docs/method.md#evaluation-metrics): hidden-answer invariants of AIS, IIS, AIC, FID and the bootstrap
on embeddings; the feature extractors against known answers recorded from the field's libraries; the models' loaders,
the sha256 records and the evaluate and compare commands on ``make-random --eval`` stand-ins (random weights, in the
published file formats); one-line errors for bad input.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import hashlib
import json
import os
import shutil
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

from audiotoken.evaluation import models as eval_models
from audiotoken.evaluation.compare import compare_command
from audiotoken.evaluation.evaluate import evaluate_command
from audiotoken.evaluation.inputs import (
    WAV2CLIP_SAMPLES,
    audio_files,
    clip_of_picture,
    clip_set,
    gather,
    read_frame,
    wav2clip_audio,
)
from audiotoken.evaluation.metrics import (
    bootstrap_mean,
    class_agreement,
    frechet_distance,
    frechet_interval,
    win_rates,
)
from audiotoken.evaluation.models import MODELS
from audiotoken.evaluation.networks import Spectrogram
from audiotoken.evaluation.scoring import METRICS, EvaluationOptions, Evaluator
from runtime.errors import CheckpointError
from runtime.picture import read_png_metadata
from tests.support import REPO

ORACLES = Path(os.environ.get("AUDIOTOKEN_ORACLES", REPO / ".cache" / "oracles"))
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
def stand_ins(tmp_path_factory) -> Path:
    """The random stand-ins ``audiotoken-rt make-random OUT --eval`` writes (OUT/eval), run as the command runs."""
    from audiotoken.cli import make_random_command

    app = typer.Typer(add_completion=False)
    app.command("make-random")(make_random_command)
    app.callback()(lambda: None)
    out = tmp_path_factory.mktemp("random") / "models"
    result = CliRunner().invoke(app, ["make-random", str(out), "--eval"])
    assert result.exit_code == 0, result.output
    return out / "eval"


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


# ---- the feature extractors against the field's libraries --------------------------------------------------------


def known_pictures() -> list[Image.Image]:
    """Three fixed pictures (arithmetic patterns, no random stream): square, and two sizes whose CLIP centre crop
    starts half a pixel off the grid for the tiny ViT-B/32 (80x50) and ViT-L/14 (45x40), where rounding matters."""

    def pattern(width: int, height: int, salt: int) -> Image.Image:
        y, x = np.mgrid[0:height, 0:width]
        channels = [((x * (3 + c) + y * (5 + 2 * c) + (x * y) // (7 + c) + 41 * salt) * 37) % 256 for c in range(3)]
        return Image.fromarray(np.stack(channels, -1).astype(np.uint8))

    return [pattern(64, 64, 0), pattern(80, 50, 1), pattern(45, 40, 2)]


def known_waves() -> np.ndarray:
    """Two fixed 442,763-sample waveforms (chirps and a tone, no random stream) -> [2, T] float32."""
    t = np.arange(WAV2CLIP_SAMPLES[44_100]) / 44_100
    chirps = [
        0.3 * np.sin(2 * np.pi * (220 + 80 * k) * t * (1 + 0.1 * t)) + 0.05 * np.sin(6e3 * np.pi * t + k)
        for k in range(2)
    ]
    return np.stack(chirps).astype(np.float32)


def new_embeddings(folder: Path) -> dict[str, np.ndarray]:
    """The stand-ins' embeddings of the known inputs, by the evaluation's loaders."""
    pictures = known_pictures()
    b32 = eval_models.ClipModel(folder / MODELS["clip_b32"].name, "cpu")
    l14 = eval_models.ClipModel(folder / MODELS["clip_l14"].name, "cpu")
    return {
        "b32_images": b32.embed_images(pictures),
        "l14_images": l14.embed_images(pictures),
        "l14_texts": l14.embed_texts(list(CLASSES)),
        "wav2clip": eval_models.Wav2ClipModel(folder / MODELS["wav2clip"].name, "cpu").embed(known_waves()),
        "inception": eval_models.InceptionModel(folder / MODELS["inception"].name, "cpu").embed_images(pictures),
    }


def digest(vectors: np.ndarray) -> np.ndarray:
    """Per row: its length, and its direction's projections on three fixed unit vectors -> [n, 4]."""
    v = np.asarray(vectors, np.float64)
    lengths = np.linalg.norm(v, axis=1)
    i = np.arange(v.shape[1])
    directions = np.stack([np.cos(0.7 * (k + 1) * i + k) for k in range(3)])  # [3, E]
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return np.column_stack([lengths, (v / lengths[:, None]) @ directions.T])


# Recorded from the field's own libraries on the seed-0 tiny stand-ins (``stand_ins``) and the known inputs above:
# open_clip 3.3.0 (the CLIPs converted to OpenAI's layout, ViT-B-32.pt and ViT-L-14.pt), wav2clip 0.1.0 and
# pytorch-fid 0.3.0 (torchvision 0.28.0), before they left the project. Then the whole embeddings of this package's
# extractors equalled theirs: CLIP pictures and Wav2CLIP bit for bit, CLIP class names within 7.3e-8 and the
# Inception within 2.5e-7 of the largest value. Rows: [length, three projections of the direction] (``digest``).
KNOWN_DIGESTS = {
    "b32_images": [
        [1.0, 0.0044851, -0.0815215, 0.0586604],
        [1.0000001, 0.0200412, -0.0495451, 0.0548304],
        [1.0, 0.0466187, -0.0770342, 0.0631653],
    ],
    "l14_images": [
        [0.9999999, 0.0624299, -0.1184438, 0.023604],
        [1.0000001, 0.0454257, -0.0682729, 0.2705705],
        [1.0, -0.0212463, -0.0586723, 0.2361018],
    ],
    "l14_texts": [
        [1.0, -0.2245578, 0.0743136, -0.0248833],
        [1.0, 0.0042737, 0.1087712, 0.0585733],
        [1.0, 0.1623939, -0.0142362, -0.0155868],
    ],
    "wav2clip": [[253.2503439, -0.0236759, -0.0479381, -0.0227253], [250.8110844, -0.0230621, -0.0482529, -0.0254956]],
    "inception": [
        [15.9062884, -0.0151126, -0.0281927, 0.0047407],
        [16.0313165, -0.0145062, -0.0283812, 0.0046673],
        [15.5664661, -0.0153819, -0.0279332, 0.0046811],
    ],
}


def test_the_extractors_give_the_field_libraries_answers_on_the_stand_ins(stand_ins):
    """transformers' CLIP (with OpenAI's preprocessing and zero-shot text side) and this package's Wav2CLIP and FID
    Inception, against what open_clip, wav2clip and pytorch-fid computed on the same weights and inputs."""
    embedded = new_embeddings(stand_ins)
    for name, expected in KNOWN_DIGESTS.items():
        got, expected = digest(embedded[name]), np.asarray(expected)
        assert got.shape == expected.shape, name
        assert np.allclose(got[:, 0], expected[:, 0], rtol=1e-5, atol=0), (name, got[:, 0], expected[:, 0])
        assert np.abs(got[:, 1:] - expected[:, 1:]).max() <= 1e-5, (name, got, expected)


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
    assert MODELS["clip_b32"].name in lines[0] and "not found" in lines[0]
    assert "hf download openai/clip-vit-base-patch32 pytorch_model.bin config.json" in lines[1]
    half = tmp_path / "half" / MODELS["clip_b32"].name  # a CLIP folder without its weights
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    lines = error("--pictures", pictures, "--models", half.parent)
    assert "no model.safetensors or pytorch_model.bin, no the tokenizer files" in lines[0], lines
    assert "needs the ground-truth frames" in error("--pictures", pictures, "--metrics", "IIS")[0]
    assert "--metrics: unknown metric" in error("--pictures", pictures, "--metrics", "CLAP")[0]
    assert "--bootstrap -1" in error("--pictures", pictures, "--bootstrap", "-1")[0]
    assert "--batch-size 100000" in error("--pictures", pictures, "--batch-size", "100000")[0]
    empty = tmp_path / "frames"
    empty.mkdir()
    assert "have no frame" in error("--pictures", pictures, "--frames", empty)[0]
    lines = error("--pictures", pictures, "--models", pictures / "clip-a.png")  # a file, not the models' folder
    assert "--models" in lines[0] and "is not a folder" in lines[0] and "not found" not in lines[0]
    code, output = invoke(*base, "--pictures", pictures, "--wav2clip-rate", "22050")
    assert code == 2 and "22050" in output and "16000" in output and "44100" in output


def test_a_foreign_weights_file_is_one_line(stand_ins, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(stand_ins, folder)
    (folder / MODELS["wav2clip"].name).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Wav2CLIP.pt: not a readable torch checkpoint"):
        eval_models.Wav2ClipModel(folder / MODELS["wav2clip"].name, "cpu")
    l14 = folder / MODELS["clip_l14"].name
    config = json.loads((l14 / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] += 1  # the weights lack a layer: transformers would invent it
    (l14 / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not hold the CLIP its config.json describes"):
        eval_models.ClipModel(l14, "cpu")


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
    for spec in MODELS.values():
        files = [Path(spec.name) / name for name in spec.hub_files] if spec.hub_files else [Path(spec.name)]
        for file in files:
            (folder / file).parent.mkdir(exist_ok=True)
            (folder / file).write_bytes(file.name.encode())
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


def test_a_report_says_whether_its_models_are_the_published_files(fake_models, picture_set, tmp_path, monkeypatch):
    """Every model file read is in the JSON with its sha256 (held to hashlib's); the title names the weights that
    are not the published files (here all), and is plain once their sha256 are the published ones."""
    folder, _ = fake_models
    args = ["evaluate", "--pictures", picture_set / "pictures", "--clips", picture_set, "--models", folder]
    args += ["--labels", picture_set / "labels.csv", "--frames", picture_set]
    code, output = invoke(*args, "--json", tmp_path / "unknown.json", "--report", tmp_path / "unknown")
    assert code == 0, output
    scores = json.loads((tmp_path / "unknown.json").read_text())
    read = {record["file"]: record for record in scores["models"]}
    expected = {str(Path(s.name) / n) for s in MODELS.values() for n in s.hub_files} | {"Wav2CLIP.pt"}
    assert set(read) == expected | {MODELS["inception"].name}
    for file, record in read.items():
        assert record["sha256"] == hashlib.sha256((folder / file).read_bytes()).hexdigest()
    assert read["Wav2CLIP.pt"]["status"] == "no published sha256 known"
    assert read["clip-vit-large-patch14/model.safetensors"]["status"] == "NOT the published file"
    assert not read["clip-vit-large-patch14/config.json"]["weights"] and scores["published_models"] is False
    page = (tmp_path / "unknown" / "index.html").read_text()
    title = page.split("<title>")[1].split("</title>")[0]
    assert "NOT the published models" in title and "Wav2CLIP.pt: no published sha256 known" in title
    assert "warning: NOT the published models" in output
    for key, spec in MODELS.items():  # as if the files were the published ones
        weights = str(Path(spec.name) / spec.hub_files[0]) if spec.hub_files else spec.name
        published = {weights: hashlib.sha256((folder / weights).read_bytes()).hexdigest()}
        monkeypatch.setitem(MODELS, key, dataclasses.replace(spec, published=published))
    code, output = invoke(*args, "--json", tmp_path / "published.json", "--report", tmp_path / "published")
    assert code == 0 and "warning" not in output, output
    assert json.loads((tmp_path / "published.json").read_text())["published_models"] is True
    assert "<title>audiotoken-rt evaluate</title>" in (tmp_path / "published" / "index.html").read_text()


def test_the_inception_file_name_carries_its_published_sha256():
    """torch.hub's convention: a weights file's name ends with the first digits of its sha256."""
    name = MODELS["inception"].name
    assert MODELS["inception"].published[name].startswith(name.rsplit("-", 1)[1].removesuffix(".pth"))


# ---- the commands, on random stand-ins ------------------------------------------------------------------------------


def test_evaluate_end_to_end(stand_ins, dataset, tmp_path):
    """Pictures that are the frames: IIS 100 and FID 0 whatever the (random) weights; an unreadable picture is
    reported and skipped; the table, the JSON and the report, whose title says the models are stand-ins."""
    pictures = frames_as_pictures(dataset, tmp_path / "pictures")
    (pictures / "clip-a-3.png").write_bytes(b"not a picture")
    out = tmp_path / "scores.json"
    args = ["--pictures", pictures, "--clips", dataset, "--labels", dataset / "labels.csv", "--frames", dataset]
    code, output = invoke("evaluate", *args, "--models", stand_ins, "--json", out, "--report", tmp_path / "report")
    assert code == 0, output
    assert "skipped clip-a-3.png" in output and "3 pictures of 3 clips" in output
    scores = json.loads(out.read_text())
    assert scores["IIS"] == 100.0 and scores["ci95"]["IIS"] == [100.0, 100.0]
    assert abs(scores["FID"]) < 1e-3 and scores["ci95"]["FID"][1] < 1e-3
    assert 0 <= scores["AIS"] <= 100 and scores["AIC"] * 3 / 100 == pytest.approx(round(scores["AIC"] * 3 / 100))
    assert scores["n"] == {"AIS": 3, "IIS": 3, "AIC": 3, "FID": 3} and scores["clips"] == 3
    assert [s["file"] for s in scores["skipped"]] == ["clip-a-3.png"]
    assert scores["published_models"] is False and len(scores["models"]) == 14  # 2 CLIPs of 6 files, 2 files
    page = (tmp_path / "report" / "index.html").read_text()
    assert "AudioToken (paper)" in page and "68.23" in page and 'src="sheet.png"' in page
    assert "NOT the published models" in page.split("</title>")[0]
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
    from runtime.sampling import DEFAULT, OFFICIAL

    recipes = [official[side]["recipe"] for side in ("a", "b")]  # what each side drew with, --steps over both
    assert recipes == [{**DEFAULT.to_json(), "steps": 2}, {**OFFICIAL.to_json(), "steps": 2}]


def test_compare_reports_the_metric_deltas(stand_ins, tiny_bundle, clips, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("name,label,split\n" + "".join(f"{c.stem},{CLASSES[i]},test\n" for i, c in enumerate(clips)))
    out = tmp_path / "compare.json"
    args = ["compare", tiny_bundle, tiny_bundle, *clips, "--steps", "2", "--models", stand_ins, "--labels", labels]
    code, output = invoke(*args, "--metrics", "AIC", "--json", out, "--report", tmp_path / "report")
    assert code == 0, output
    compared = json.loads(out.read_text())
    assert compared["delta"] == {"AIC": 0.0} and compared["metrics"]["a"]["n"] == {
        "AIS": 0,
        "IIS": 0,
        "AIC": 2,
        "FID": 0,
    }
    assert compared["metrics"]["a"]["IIS"] is None and compared["metrics"]["a"]["ci95"]["FID"] is None
    assert compared["metrics"]["a"]["AIC"] == compared["metrics"]["b"]["AIC"]
    read = [record["file"] for record in compared["metrics"]["a"]["models"]]
    assert read[0] == "clip-vit-large-patch14/model.safetensors" and not any("Wav2CLIP" in file for file in read)
    title = (tmp_path / "report" / "index.html").read_text().split("</title>")[0]
    assert "compare - NOT the published models (stand-ins or other weights: clip-vit-large-patch14/model.sa" in title


def test_compare_scores_each_picture_against_its_own_clip_in_any_order(stand_ins, tiny_bundle, clips, tmp_path):
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
    code, output = invoke(*args, "--models", stand_ins, "--json", out)
    assert code == 0, output
    compared = json.loads(out.read_text())
    assert compared["metrics"]["a"]["IIS"] == compared["metrics"]["b"]["IIS"] == 100.0
    assert [p["clip"] for p in compared["pictures"]] == [c.name for c in backwards]
    code, output = invoke(*args, "--models", frames / f"{clips[0].stem}.png")
    assert code == 1 and "is not a folder" in output and "PSNR" not in output


def test_compare_refuses_labels_or_frames_without_the_models_before_any_drawing(clips, tmp_path):
    for flag in ("--labels", "--frames"):  # no bundle exists at tmp_path/none: the check comes first
        code, output = invoke("compare", tmp_path / "none", tmp_path / "none", clips[0], flag, tmp_path)
        assert code == 1 and output.startswith("error: --labels and --frames feed the metrics"), output


BLOCK_TORCH = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
sys.meta_path.insert(0, Blocker())
"""


APP = """
import typer
from audiotoken.evaluation.compare import compare_command
from audiotoken.evaluation.evaluate import evaluate_command
app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
app.command("evaluate")(evaluate_command)
app.command("compare")(compare_command)
app.callback()(lambda: None)
app()
"""


def test_a_runtime_only_install_names_the_extra(tmp_path, clips):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "COLUMNS": "200"}
    evaluate = ["evaluate", "--pictures", tmp_path, "--clips", tmp_path, "--labels", tmp_path, "--models", tmp_path]
    compare = ["compare", tmp_path, tmp_path, clips[0], "--models", tmp_path]
    for args in (evaluate, compare):
        command = [sys.executable, "-c", APP, *map(str, args)]
        result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and "needs the PyTorch side" in lines[0] and "torch" in lines[0], result.stderr
        assert lines[1].startswith("hint: pip install torch==")


def test_importing_the_commands_needs_no_torch():
    code = "import sys, audiotoken.evaluation.evaluate, audiotoken.evaluation.compare; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


PACKAGE_ORDER = ("inputs", "metrics", "networks", "models", "stand_ins", "scoring", "report", "evaluate", "compare")


def test_the_evaluation_modules_import_only_the_ones_before_them():
    """No import circle: each module of audiotoken/evaluation (at module level or inside functions) imports only
    the modules before it in the package's data flow (its __init__ docstring)."""
    folder = REPO / "audiotoken" / "evaluation"
    assert sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") == sorted(PACKAGE_ORDER)
    for position, name in enumerate(PACKAGE_ORDER):
        imported = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "audiotoken.evaluation":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("audiotoken.evaluation."):
                imported.add(node.module.split(".")[2])
        assert imported <= set(PACKAGE_ORDER[:position]), (name, imported - set(PACKAGE_ORDER[:position]))
