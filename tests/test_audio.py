"""Tests of runtime/audio.py: any clip -> the [160_000] float32 waveform at 16 kHz (the first runtime stage).

Only numpy, soundfile and soxr here: runtime/ never imports torch, nor do its tests.
Clips are written with soundfile into tmp_path; the two real VGGSound clips come from ../shared/data/vggsound.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from runtime.audio import N_SAMPLES, SAMPLE_RATE, load_audio, prepare_waveform
from runtime.errors import AudioLoadError, ConfigError

F0, F1 = 440.0, 1000.0  # Hz: channel 0 and channel 1 of the stereo test clips
A0, A1 = 0.5, 0.3  # their amplitudes


@pytest.fixture(scope="module")
def vggsound_dir() -> Path:
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vggsound"
    if not path.is_dir():
        pytest.skip(f"the real VGGSound clips are not at {path} (../shared/data/vggsound beside the repo)")
    return path


def sine(freq: float, sample_rate: int, seconds: float, amp: float = A0) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate  # [N] seconds
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)  # [N]


def stereo(sample_rate: int, seconds: float) -> np.ndarray:
    return np.stack([sine(F0, sample_rate, seconds, A0), sine(F1, sample_rate, seconds, A1)], axis=1)  # [N, 2]


def amplitude_at(x: np.ndarray, freq: float, sample_rate: int = SAMPLE_RATE) -> float:
    """Amplitude of the sinusoid at `freq` in x (projection onto e^{-i 2 pi f t})."""
    t = np.arange(len(x)) / sample_rate
    return float(2 * abs(np.dot(x.astype(np.float64), np.exp(-2j * np.pi * freq * t))) / len(x))


def dominant_hz(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))  # [N/2 + 1]
    return float(np.argmax(spectrum) * sample_rate / len(x))


def write(path: Path, data: np.ndarray, sample_rate: int, **kwargs) -> Path:
    sf.write(path, data, sample_rate, **kwargs)
    return path


def file_error(path: Path, problem: str) -> str:
    """The `match` pattern for an AudioLoadError: the message starts with the file, then names the problem."""
    return "^" + re.escape(str(path)) + ": .*" + problem


def load_error(path: Path, problem: str) -> AudioLoadError:
    with pytest.raises(AudioLoadError, match=file_error(path, problem)) as info:
        load_audio(path)
    assert "\n" not in str(info.value), "messages are one line"
    assert info.value.hint, "every load error says what to do next"
    return info.value


# ---- the real clips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["-_gaZzFfzDQ_517000_527000.wav", "3YOH4c9HXpo_290000_300000.wav"])
def test_real_vggsound_clip_is_its_first_10_seconds(vggsound_dir, name):
    path = vggsound_dir / name  # the first name starts with "-"
    raw, rate = sf.read(path, dtype="float32")  # [160_125]
    assert rate == SAMPLE_RATE and raw.shape == (160_125,)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.shape == (N_SAMPLES,)
    np.testing.assert_array_equal(out, raw[:N_SAMPLES])
    assert np.abs(out).max() > 0.01, "a real clip is not silent"


def test_relative_path_starting_with_dash(vggsound_dir, monkeypatch):
    monkeypatch.chdir(vggsound_dir)
    out = load_audio("-_gaZzFfzDQ_517000_527000.wav")
    raw, _ = sf.read("-_gaZzFfzDQ_517000_527000.wav", dtype="float32", frames=N_SAMPLES)
    np.testing.assert_array_equal(out, raw)


def test_file_named_just_dash_is_a_file_not_stdin(tmp_path, monkeypatch):
    clip = sine(F0, SAMPLE_RATE, 1.0)
    write(tmp_path / "-", clip, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    monkeypatch.chdir(tmp_path)
    null, saved = os.open(os.devnull, os.O_RDONLY), os.dup(0)
    os.dup2(null, 0)  # libsndfile reads the path "-" as stdin; make a regression fail rather than wait on a tty
    try:
        out = load_audio("-")
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(null)
    np.testing.assert_array_equal(out[: len(clip)], clip)


# ---- formats, rates, downmix ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [44_100, 22_050])
@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_every_format_resamples_and_downmixes(tmp_path, ext, rate):
    path = write(tmp_path / f"stereo.{ext}", stereo(rate, 2.0), rate)  # 2 s: tiling gives whole cycles of both sines
    lossy = ext in ("ogg", "mp3")
    tol = 0.05 if lossy else 2e-3

    first = load_audio(path)
    assert first.dtype == np.float32 and first.shape == (N_SAMPLES,)
    assert abs(dominant_hz(first) - F0) < 1.0
    assert amplitude_at(first, F0) == pytest.approx(A0, abs=tol)
    assert amplitude_at(first, F1) < tol, "channel 1 leaked into the default (channel 0) downmix"

    mean = load_audio(path, downmix="mean")
    assert mean.shape == (N_SAMPLES,)
    assert amplitude_at(mean, F0) == pytest.approx(A0 / 2, abs=tol)
    assert amplitude_at(mean, F1) == pytest.approx(A1 / 2, abs=tol)

    if not lossy:  # sample by sample, away from the clip's edges where the resampler sees a step
        expected = sine(F0, SAMPLE_RATE, 2.0)  # [32_000]
        np.testing.assert_allclose(first[1_000:31_000], expected[1_000:31_000], atol=2e-3)


@pytest.mark.parametrize(
    "subtype, step",
    [("PCM_U8", 1 / 128), ("PCM_16", 2**-15), ("PCM_24", 2**-23), ("PCM_32", 2**-31), ("FLOAT", 0), ("DOUBLE", 0)],
)
def test_wav_sample_formats(tmp_path, subtype, step):
    clip = sine(F0, SAMPLE_RATE, 1.0)
    path = write(tmp_path / f"{subtype}.wav", clip, SAMPLE_RATE, subtype=subtype)
    assert sf.info(path).subtype == subtype
    out = load_audio(path)
    assert out.dtype == np.float32 and out.shape == (N_SAMPLES,)
    np.testing.assert_allclose(out[: len(clip)], clip, rtol=0, atol=step + 1e-7)


def test_multichannel_first_and_mean(tmp_path):
    rng = np.random.default_rng(0)
    clip = rng.uniform(-0.5, 0.5, (SAMPLE_RATE, 6)).astype(np.float32)  # [16_000, 6], e.g. 5.1
    path = write(tmp_path / "six.wav", clip, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path)[:SAMPLE_RATE], clip[:, 0])
    np.testing.assert_allclose(load_audio(path, downmix="mean")[:SAMPLE_RATE], clip.mean(axis=1), atol=1e-7)


def test_mono_forms_agree():
    clip = sine(F0, SAMPLE_RATE, 1.0)
    flat = prepare_waveform(clip, SAMPLE_RATE)
    np.testing.assert_array_equal(flat, prepare_waveform(clip[:, None], SAMPLE_RATE))
    np.testing.assert_array_equal(flat, prepare_waveform(clip[:, None], SAMPLE_RATE, downmix="mean"))
    np.testing.assert_array_equal(flat[: len(clip)], clip)


def test_int16_samples_are_scaled_like_the_hf_space():
    clip = (sine(F0, SAMPLE_RATE, 1.0) * 32768).astype(np.int16)
    out = prepare_waveform(clip, SAMPLE_RATE)
    np.testing.assert_array_equal(out[: len(clip)], clip.astype(np.float32) / 32768)


def test_resampled_output_stays_in_range(tmp_path):
    rate = 44_100
    square = np.where(sine(F0, rate, 1.0) >= 0, 0.999, -1.0).astype(np.float32)  # full scale: resampling overshoots
    assert soxr.resample(square, rate, SAMPLE_RATE, quality="HQ").max() > 1.0, "the check below would be vacuous"
    out = load_audio(write(tmp_path / "square.wav", square, rate, subtype="FLOAT"))
    assert out.min() >= -1.0 and out.max() < 1.0


# ---- length: loop-tile short clips, cut long ones -----------------------------------------------------------------


def test_short_clip_is_loop_tiled_not_zero_padded(tmp_path):
    rng = np.random.default_rng(1)
    clip = rng.uniform(-0.9, 0.9, 3 * SAMPLE_RATE).astype(np.float32)  # [48_000], 3 s
    out = load_audio(write(tmp_path / "short.wav", clip, SAMPLE_RATE, subtype="FLOAT"))
    i = np.arange(N_SAMPLES)
    np.testing.assert_array_equal(out, clip[i % len(clip)])


def test_short_clip_is_tiled_after_resampling(tmp_path):
    rng = np.random.default_rng(2)
    clip = rng.uniform(-0.5, 0.5, 3 * 44_100).astype(np.float32)  # 3 s at 44.1 kHz -> 48_000 samples at 16 kHz
    out = load_audio(write(tmp_path / "short44.wav", clip, 44_100, subtype="FLOAT"))
    period = 3 * SAMPLE_RATE
    np.testing.assert_array_equal(out, out[np.arange(N_SAMPLES) % period])
    assert np.abs(out[-period:]).max() > 0.1, "the tail is audio, not padding"


def test_one_sample_clip_fills_10_seconds():
    out = prepare_waveform(np.array([0.25], np.float32), SAMPLE_RATE)
    np.testing.assert_array_equal(out, np.full(N_SAMPLES, 0.25, np.float32))


def test_long_clip_is_cut_to_its_first_10_seconds(tmp_path):
    rng = np.random.default_rng(3)
    clip = rng.uniform(-0.5, 0.5, 25 * SAMPLE_RATE).astype(np.float32)  # 25 s
    out = load_audio(write(tmp_path / "long.wav", clip, SAMPLE_RATE, subtype="FLOAT"))
    np.testing.assert_array_equal(out, clip[:N_SAMPLES])


def test_long_clip_resampled_matches_resampling_the_whole_file(tmp_path):
    # load_audio decodes only 10 s plus a margin: the cut must not change the samples it keeps.
    rate = 44_100
    rng = np.random.default_rng(4)
    clip = rng.uniform(-0.5, 0.5, 25 * rate).astype(np.float32)
    out = load_audio(write(tmp_path / "long44.wav", clip, rate, subtype="FLOAT"))
    whole = soxr.resample(clip, rate, SAMPLE_RATE, quality="HQ")  # [400_000]
    np.testing.assert_allclose(out, whole[:N_SAMPLES], rtol=0, atol=1e-6)


def test_silence_is_valid(tmp_path):
    out = load_audio(write(tmp_path / "silence.wav", np.zeros(2 * SAMPLE_RATE, np.float32), SAMPLE_RATE))
    assert out.dtype == np.float32 and out.shape == (N_SAMPLES,)
    assert not out.any()


# ---- bad input ----------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    load_error(tmp_path / "nope.wav", "no such file")


def test_directory(tmp_path):
    load_error(tmp_path, "is a directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    load_error(path, r"empty \(0 bytes\)")


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_truncated_wav(tmp_path, subtype):
    whole = write(tmp_path / "whole.wav", sine(F0, SAMPLE_RATE, 1.0), SAMPLE_RATE, subtype=subtype)
    data = whole.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    assert sf.info(cut).frames > 0, "libsndfile opens it and quietly shortens it: the case the check exists for"
    error = load_error(cut, r"truncated: its data chunk promises \d+ bytes but only \d+ are present")
    assert "truncated" in error.hint or "cut short" in error.hint


def test_wav_cut_right_after_its_data_header(tmp_path):
    whole = write(tmp_path / "whole.wav", sine(F0, SAMPLE_RATE, 1.0), SAMPLE_RATE, subtype="PCM_16")
    data = whole.read_bytes()
    cut = tmp_path / "header_only.wav"
    cut.write_bytes(data[: data.index(b"data") + 8])
    load_error(cut, r"truncated: .* only 0 are present")


def test_streamed_wav_with_unknown_data_size_loads(tmp_path):
    # Writers that stream to a pipe leave 0xFFFFFFFF as the data size: not a truncation.
    clip = sine(F0, SAMPLE_RATE, 1.0)
    data = bytearray(write(tmp_path / "whole.wav", clip, SAMPLE_RATE, subtype="FLOAT").read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = b"\xff\xff\xff\xff"
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    np.testing.assert_array_equal(load_audio(streamed)[: len(clip)], clip)


@pytest.mark.parametrize("ext", ["flac", "mp3"])
def test_truncated_compressed(tmp_path, ext):
    whole = write(tmp_path / f"whole.{ext}", sine(F0, 44_100, 3.0), 44_100)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) * 6 // 10])
    load_error(cut, "truncated")


@pytest.mark.parametrize(
    "content",
    [b"this is a text file, not audio\n" * 20, b"\x89PNG\r\n\x1a\n" + bytes(200)],
    ids=["text", "png"],
)
def test_not_audio(tmp_path, content):
    path = tmp_path / "fake.wav"
    path.write_bytes(content)
    load_error(path, "not a recognised audio file")


def test_zero_samples(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), SAMPLE_RATE)
    assert sf.info(path).frames == 0
    load_error(path, "holds no audio samples")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    clip = sine(F0, SAMPLE_RATE, 1.0)
    clip[[10, 500]] = bad
    path = write(tmp_path / "nonfinite.wav", clip, SAMPLE_RATE, subtype="FLOAT")
    load_error(path, r"2 of 16000 samples are not finite")


def test_unknown_downmix_is_a_config_error_before_any_file_access(tmp_path):
    with pytest.raises(ConfigError, match="downmix must be one of 'first', 'mean', got 'avg'"):
        load_audio(tmp_path / "missing.wav", downmix="avg")
    with pytest.raises(ConfigError, match="got 'left'"):
        prepare_waveform(np.zeros(10, np.float32), SAMPLE_RATE, downmix="left")


@pytest.mark.parametrize(
    "samples, rate, problem",
    [
        (np.zeros(0, np.float32), SAMPLE_RATE, "holds no audio samples"),
        (np.zeros((100, 0), np.float32), SAMPLE_RATE, "holds no audio samples"),
        (np.zeros((2, N_SAMPLES), np.float32), SAMPLE_RATE, r"shaped \[N\] or \[N, C\].*got shape \(2, 160000\)"),
        (np.zeros((2, 3, 4), np.float32), SAMPLE_RATE, r"got shape \(2, 3, 4\)"),
        (np.array([0.1, np.nan], np.float32), SAMPLE_RATE, "1 of 2 samples are not finite"),
        (np.zeros(10, np.uint8), SAMPLE_RATE, "dtype uint8"),
        (np.zeros(10, np.float32), 0, "sample rate must be a positive number"),
    ],
    ids=["empty", "no-channels", "channels-first", "3d", "nan", "uint8", "rate-0"],
)
def test_prepare_waveform_rejects_bad_arrays(samples, rate, problem):
    with pytest.raises(AudioLoadError, match="^<mic>: .*" + problem):
        prepare_waveform(samples, rate, name="<mic>")


def test_module_imports_no_torch():
    code = "import sys, runtime.audio; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, "runtime.audio imported torch"
