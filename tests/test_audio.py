"""Tests of runtime/audio.py: any clip -> the [160_000] float32 waveform at 16 kHz (the first runtime stage).

No torch here: runtime/ never imports it, nor do its tests.
Clips are written with soundfile into tmp_path (libsndfile writes WAV, FLAC, Ogg Vorbis/Opus and MP3), and
some with FFmpeg through PyAV (a dev dependency; those tests skip without it) for files from another encoder;
the two real VGGSound clips come from ../shared/data/vggsound.
"""

from __future__ import annotations

import os
import re
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

import runtime.audio
from runtime.audio import (
    DOWNMIX_MODES,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    _mpeg_frame,
    load_audio,
    prepare_waveform,
)
from runtime.contract import N_SAMPLES, SAMPLE_RATE
from runtime.errors import AudioLoadError, ConfigError
from tests.support import CLIPS

F0, F1 = 440.0, 1000.0  # Hz: channel 0 and channel 1 of the stereo test clips
A0, A1 = 0.5, 0.3  # their amplitudes


@pytest.fixture(scope="module")
def vggsound_dir() -> Path:
    if not CLIPS.is_dir():
        pytest.skip(f"the real VGGSound clips are not at {CLIPS} (../shared/data/vggsound beside the repo)")
    return CLIPS


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


def load_error(path: Path, problem: str, **options) -> AudioLoadError:
    with pytest.raises(AudioLoadError, match=file_error(path, problem)) as info:
        load_audio(path, **options)
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
    np.testing.assert_array_equal(load_audio(path, downmix="second")[:SAMPLE_RATE], clip[:, 1])


def test_mono_forms_agree():
    clip = sine(F0, SAMPLE_RATE, 1.0)
    flat = prepare_waveform(clip, SAMPLE_RATE)
    np.testing.assert_array_equal(flat, prepare_waveform(clip[:, None], SAMPLE_RATE))
    np.testing.assert_array_equal(flat, prepare_waveform(clip[:, None], SAMPLE_RATE, downmix="mean"))
    np.testing.assert_array_equal(flat, prepare_waveform(clip[:, None], SAMPLE_RATE, downmix="second"))  # channel 0
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


# ---- the window: `start` ------------------------------------------------------------------------------------------


def ramp(n: int, channels: int = 0) -> np.ndarray:
    """[n] (or [n, channels]) distinct float32 values: any slip of the window by one sample shows."""
    x = np.linspace(-0.9, 0.9, n, dtype=np.float32)  # [n]
    return np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1) if channels else x  # [n, C]


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_start_zero_is_the_first_10_seconds(tmp_path, ext):
    path = write(tmp_path / f"long.{ext}", stereo(SAMPLE_RATE, 12.0), SAMPLE_RATE)
    decoded, _ = sf.read(path, dtype="float32")  # [192_000, 2]: the whole clip, as libsndfile decodes it
    out = load_audio(path)
    atol = 1e-6 if ext == "mp3" else 0  # libmpg123's last bit depends on how much is decoded per call
    np.testing.assert_allclose(out, decoded[:N_SAMPLES, 0], rtol=0, atol=atol)
    for zero in (0, 0.0, np.float64(0)):
        np.testing.assert_array_equal(load_audio(path, start=zero), out)
        np.testing.assert_array_equal(prepare_waveform(decoded, SAMPLE_RATE, start=zero), decoded[:N_SAMPLES, 0])


@pytest.mark.parametrize("start", [7 / SAMPLE_RATE, 0.5, 2.01, 2.5, 13.25, 14.999])  # 2.01 * 16000 = 32159.999...
def test_start_is_a_slice_of_the_clip(tmp_path, start):
    clip = ramp(25 * SAMPLE_RATE)  # [400_000], 25 s
    path = write(tmp_path / "ramp.wav", clip, SAMPLE_RATE, subtype="FLOAT")
    first = round(start * SAMPLE_RATE)
    np.testing.assert_array_equal(load_audio(path, start=start), clip[first : first + N_SAMPLES])
    np.testing.assert_array_equal(prepare_waveform(clip, SAMPLE_RATE, start=start), clip[first : first + N_SAMPLES])


def test_start_picks_the_window_in_every_channel_before_the_downmix(tmp_path):
    clip = ramp(12 * SAMPLE_RATE, channels=3)  # [192_000, 3]
    path = write(tmp_path / "ramp3.flac", clip, SAMPLE_RATE, subtype="PCM_24")
    decoded, _ = sf.read(path, dtype="float32")  # 24-bit: what the file holds
    window = decoded[SAMPLE_RATE : SAMPLE_RATE + N_SAMPLES]  # start = 1 s
    np.testing.assert_array_equal(load_audio(path, start=1.0), window[:, 0])
    np.testing.assert_allclose(load_audio(path, start=1.0, downmix="mean"), window.mean(axis=1), rtol=0, atol=1e-7)


@pytest.mark.parametrize("ext, rate", [("ogg", SAMPLE_RATE), ("mp3", SAMPLE_RATE), ("ogg", 44_100), ("mp3", 44_100)])
def test_start_in_lossy_formats_seeks_to_the_sample(tmp_path, ext, rate):
    rng = np.random.default_rng(5)
    clip = (stereo(rate, 25.0) + rng.uniform(-0.05, 0.05, (25 * rate, 2))).astype(np.float32)
    path = write(tmp_path / f"long.{ext}", clip, rate)
    decoded, _ = sf.read(path, dtype="float32")  # the whole clip decoded from its start
    start = 3.3
    expected = prepare_waveform(decoded[round(start * rate) :], rate)
    np.testing.assert_allclose(load_audio(path, start=start), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("start", [5.0, 11.0, 12.0 - 1 / SAMPLE_RATE])
def test_window_crossing_the_end_loop_tiles_the_rest(tmp_path, start):
    clip = ramp(12 * SAMPLE_RATE, channels=2)  # [192_000, 2], 12 s
    path = write(tmp_path / "ramp12.wav", clip, SAMPLE_RATE, subtype="FLOAT")
    rest = clip[round(start * SAMPLE_RATE) :, 0]  # 7 s, 1 s, one sample
    expected = rest[np.arange(N_SAMPLES) % len(rest)]  # repeated, never zero-padded
    np.testing.assert_array_equal(load_audio(path, start=start), expected)
    np.testing.assert_array_equal(prepare_waveform(clip, SAMPLE_RATE, start=start), expected)


@pytest.mark.parametrize("start", [3.7, 4.1])  # 4.1 * 44100 = 180809.999...: the window starts at the nearest sample
def test_start_with_resampling(tmp_path, start):
    rate = 44_100
    rng = np.random.default_rng(6)
    clip = rng.uniform(-0.5, 0.5, 25 * rate).astype(np.float32)  # 25 s at 44.1 kHz
    path = write(tmp_path / "long44.wav", clip, rate, subtype="FLOAT")
    rest = soxr.resample(
        clip[round(start * rate) :], rate, SAMPLE_RATE, quality="HQ"
    )  # the clip from `start`, at 16 kHz
    np.testing.assert_allclose(load_audio(path, start=start), rest[:N_SAMPLES], rtol=0, atol=1e-6)
    np.testing.assert_allclose(prepare_waveform(clip, rate, start=start), rest[:N_SAMPLES], rtol=0, atol=1e-6)
    assert not np.allclose(load_audio(path, start=start), load_audio(path, start=start + 0.1), atol=0.1), (
        "the window moves"
    )


def test_start_with_resampling_near_the_end(tmp_path):
    rate = 44_100
    rng = np.random.default_rng(7)
    clip = rng.uniform(-0.5, 0.5, 12 * rate).astype(np.float32)  # 12 s
    path = write(tmp_path / "short44.wav", clip, rate, subtype="FLOAT")
    rest = soxr.resample(clip[5 * rate :], rate, SAMPLE_RATE, quality="HQ")  # [112_000]: the 7 s left after 5 s
    expected = rest[np.arange(N_SAMPLES) % len(rest)]
    np.testing.assert_array_equal(load_audio(path, start=5.0), expected)
    np.testing.assert_array_equal(prepare_waveform(clip, rate, start=5.0), expected)


@pytest.mark.parametrize("bad", [-1.0, -1e-9, np.nan, np.inf, -np.inf, "2"], ids=repr)
def test_bad_start_is_a_config_error_before_any_file_access(tmp_path, bad):
    path = tmp_path / "missing.wav"
    with pytest.raises(
        ConfigError, match=file_error(path, re.escape(f"--start must be a finite number of seconds >= 0, got {bad!r}"))
    ):
        load_audio(path, start=bad)
    with pytest.raises(ConfigError, match=r"^<mic>: --start .* got " + re.escape(repr(bad))):
        prepare_waveform(np.zeros(10, np.float32), SAMPLE_RATE, name="<mic>", start=bad)


@pytest.mark.parametrize("rate", [SAMPLE_RATE, 44_100])
@pytest.mark.parametrize("start", [12.0, 8.3, 8.3 + 1e-6])
def test_start_at_or_past_the_end(tmp_path, rate, start):
    path = write(tmp_path / "x.wav", sine(F0, rate, 8.3), rate)  # 8.3 s
    error = load_error(path, re.escape(f"--start {start} s is past the end of the clip (8.3 s long)"), start=start)
    assert str(error) == f"{path}: --start {start} s is past the end of the clip (8.3 s long)"
    with pytest.raises(
        AudioLoadError, match=re.escape(f"<mic>: --start {start} s is past the end of the clip (8.3 s long)")
    ):
        prepare_waveform(sine(F0, rate, 8.3), rate, name="<mic>", start=start)


def test_start_just_before_the_end_tiles_the_last_sample(tmp_path):
    clip = ramp(round(8.3 * SAMPLE_RATE))  # [132_800]
    path = write(tmp_path / "x.wav", clip, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, start=8.3 - 1 / SAMPLE_RATE), np.full(N_SAMPLES, clip[-1]))


def test_past_the_end_message_rounds_the_length(tmp_path):
    path = write(tmp_path / "odd.wav", np.zeros(100_001, np.float32), 44_100)  # 2.2675963... s
    load_error(path, re.escape("--start 3.0 s is past the end of the clip (2.268 s long)"), start=3)


@pytest.mark.parametrize("start", [1e35, 1e305, 1.7976931348623157e308])
@pytest.mark.parametrize("rate", [8_000, 44_100])
def test_a_start_no_clip_reaches_is_past_the_end_not_an_overflow(tmp_path, start, rate):
    # start * rate overflowed to inf (1e305 s at 8 kHz in float64; 1e35 s at a float32 rate in float32 arithmetic),
    # and round(inf) raised OverflowError
    clip = sine(F0, rate, 0.5)
    path = write(tmp_path / "x.aiff", clip, rate)
    past_end = re.escape(f"--start {start} s is past the end of the clip (0.5 s long)")
    load_error(path, past_end, start=start)
    for rate_type in (int, np.float32, np.float64):
        with pytest.raises(AudioLoadError, match="^<mic>: " + past_end):
            prepare_waveform(clip, rate_type(rate), name="<mic>", start=start)


def test_a_start_larger_than_a_float_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("--start must be a finite number of seconds >= 0, got 1000")):
        load_audio(tmp_path / "missing.wav", start=10**400)  # finite, but float(start) overflows
    with pytest.raises(ConfigError, match="^<mic>: --start must be a finite number"):
        prepare_waveform(np.zeros(10, np.float32), SAMPLE_RATE, name="<mic>", start=10**400)


@pytest.mark.parametrize("name", ["clip.raw", "CLIP.RAW", "clip.Raw"])
@pytest.mark.parametrize("content", ["wav", "junk"])
def test_a_raw_file_is_refused_in_one_line_whatever_it_holds(tmp_path, name, content):
    # soundfile opens a file named .raw as headerless samples, and raised TypeError (samplerate must be specified)
    path = tmp_path / name
    if content == "wav":
        path.write_bytes(write(tmp_path / "clip.wav", sine(F0, SAMPLE_RATE, 0.5), SAMPLE_RATE).read_bytes())
    else:
        path.write_bytes(b"\xa4\xc0")
    load_error(path, re.escape("headerless RAW audio is not supported"))


def test_start_past_the_end_of_an_mp3(tmp_path):
    path = write(tmp_path / "x.mp3", sine(F0, 44_100, 3.0), 44_100)
    load_error(path, r"--start 60.0 s is past the end of the clip \(3.0\d* s long\)", start=60.0)
    assert load_audio(path, start=2.5).shape == (N_SAMPLES,)


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
    with pytest.raises(ConfigError, match="downmix must be one of 'first', 'mean', 'second', got 'avg'"):
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
        (np.zeros(10, np.float32), 0, r"sample rate 0 Hz is outside 4000\.\.384000 Hz"),
    ],
    ids=["empty", "no-channels", "channels-first", "3d", "nan", "uint8", "rate-0"],
)
def test_prepare_waveform_rejects_bad_arrays(samples, rate, problem):
    with pytest.raises(AudioLoadError, match="^<mic>: .*" + problem):
        prepare_waveform(samples, rate, name="<mic>")


# ---- bounds: the rate, the window cut before resampling, memory ---------------------------------------------------


@pytest.mark.parametrize(
    "rate",
    [0, 1, 0.5, MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, 10**9, -16_000, np.nan, np.inf, True, "16000"],
    ids=repr,
)
def test_a_rate_outside_4_to_384_khz_is_one_line_naming_it(rate):
    # 10_000 samples at 1 Hz grew a server by 1.4 GB: 10 s of them resample to 160_000, the rest to 140 M more.
    with pytest.raises(
        AudioLoadError, match=rf"^<mic>: sample rate {re.escape(repr(rate))} Hz is outside 4000\.\.384000 Hz$"
    ) as info:
        prepare_waveform(np.zeros(10_000, np.float32), rate, name="<mic>")
    assert info.value.hint


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1])
def test_a_file_at_a_rate_outside_the_range_is_refused_before_reading(tmp_path, rate):
    path = write(tmp_path / "odd-rate.wav", np.zeros(100, np.float32), rate, subtype="FLOAT")
    load_error(path, rf"sample rate {rate} Hz is outside 4000\.\.384000 Hz")


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE, 22_050.5, MAX_SAMPLE_RATE])
def test_the_range_bounds_are_accepted(tmp_path, rate):
    out = prepare_waveform(sine(F0, rate, 0.5), rate)
    assert out.shape == (N_SAMPLES,) and dominant_hz(out) == pytest.approx(F0, abs=1)
    if float(rate).is_integer():
        assert np.array_equal(load_audio(write(tmp_path / "edge.wav", sine(F0, rate, 0.5), rate, subtype="FLOAT")), out)


def resampled_calls(monkeypatch) -> list[int]:
    """Spy on soxr in runtime.audio: the length of every input it resamples."""
    lengths: list[int] = []
    resample = soxr.resample
    monkeypatch.setattr(
        runtime.audio.soxr, "resample", lambda x, *a, **k: lengths.append(len(x)) or resample(x, *a, **k)
    )
    return lengths


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE, 44_100, MAX_SAMPLE_RATE])
def test_only_the_window_and_its_margin_are_resampled(tmp_path, monkeypatch, rate):
    lengths = resampled_calls(monkeypatch)
    clip = np.zeros((60 * rate, 2), np.int16)  # [N, 2], 60 s
    prepare_waveform(clip, rate, start=7.0)
    load_audio(write(tmp_path / "long.wav", clip, rate), start=7.0)
    window = int(np.ceil(10.1 * rate))  # 10 s and the 0.1 s margin
    assert lengths == [window, window]


def old_recipe(samples: np.ndarray, rate: int, start: float) -> np.ndarray:
    """The recipe as it ran before the window was cut first: resample all that follows `start`, clip, tile, cut."""
    rest = soxr.resample(samples[round(start * rate) :], rate, SAMPLE_RATE, quality="HQ")  # [M]
    rest = np.clip(rest, -1.0, np.nextafter(np.float32(1), np.float32(0)))
    return np.tile(rest, -(-N_SAMPLES // len(rest)))[:N_SAMPLES]  # [160_000]


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_cutting_first_gives_todays_waveform_on_the_real_clips(vggsound_dir, tmp_path, rate):
    # The two real clips end to end (20 s), at 44.1 and 48 kHz: windows inside, crossing the end (tiled), and a
    # 3 s excerpt (looped). Where the rest is longer than the window and margin, the cut may move soxr's last
    # samples of the 10 s by float rounding (within 1e-6, 16 float32 steps at full scale); where it is shorter
    # nothing is cut and the waveform is today's exactly.
    parts = [sf.read(path, dtype="float32")[0] for path in sorted(vggsound_dir.glob("*.wav"))]
    both = soxr.resample(np.concatenate(parts), SAMPLE_RATE, rate, quality="HQ").astype(np.float32)  # [~20 s]
    path = write(tmp_path / f"both{rate}.wav", both, rate, subtype="FLOAT")
    for start in (0.0, 2.5, 9.95, 12.0):
        expected = old_recipe(both, rate, start)
        cut = len(both) - round(start * rate) > np.ceil(10.1 * rate)
        for got in (prepare_waveform(both, rate, start=start), load_audio(path, start=start)):
            if cut:
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
            else:
                np.testing.assert_array_equal(got, expected)
    excerpt = both[: 3 * rate]  # [3 s]: looped to 10 s
    np.testing.assert_array_equal(prepare_waveform(excerpt, rate), old_recipe(excerpt, rate, 0.0))


def test_a_long_array_costs_only_its_window():
    # 5 min of int16 at 48 kHz (27 MiB): converting it all to float32 took 55 MiB before the window was cut first.
    clip = (np.random.default_rng(9).standard_normal(5 * 60 * 48_000) * 3000).astype(np.int16)  # [14.4 M]
    tracemalloc.start()
    try:
        out = prepare_waveform(clip, 48_000, start=100.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (N_SAMPLES,)
    assert peak < 16 * 2**20  # measured 3.1 MiB: the 10.1 s window in float32 (1.9 MiB) and the output


def sparse_wav(path: Path, rate: int, channels: int, frames: int) -> Path:
    """A PCM_16 WAV of `frames` frames of silence, written as a sparse file (its data are holes on disk)."""
    sf.write(path, np.zeros((1, channels), np.int16), rate, subtype="PCM_16")
    head = bytearray(path.read_bytes())
    data = head.index(b"data")
    size = frames * channels * 2
    struct.pack_into("<I", head, data + 4, size)  # the data chunk's size
    struct.pack_into("<I", head, 4, data + size)  # RIFF size: the file less its first 8 bytes
    with open(path, "wb") as f:
        f.write(head[: data + 8])
        f.truncate(data + 8 + size)
    return path


@pytest.mark.parametrize("start", [0.0, 300.0])
def test_a_huge_file_of_many_channels_costs_only_its_mono_window(tmp_path, start):
    # 4 GB (sparse): 325 s of 64 channels at 96 kHz. Its 10.1 s window holds 62 M samples, 237 MiB as float32, and
    # was read whole before; block by block, downmixed as they come, the peak is the mono window and one block.
    path = sparse_wav(tmp_path / "huge.wav", 96_000, 64, 31_250_000)
    assert sf.info(path).frames == 31_250_000
    tracemalloc.start()
    try:
        out = load_audio(path, start=start, downmix="mean")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (N_SAMPLES,) and not out.any()
    assert peak < 32 * 2**20  # measured 11.6 MiB


def test_a_window_read_in_several_blocks_is_the_window(tmp_path, monkeypatch):
    # Blocks of 1000 frames (of 4 channels): the window, its downmix and its non-finite count are the one-read ones.
    clip = np.random.default_rng(10).uniform(-0.5, 0.5, (12 * SAMPLE_RATE, 4)).astype(np.float32)  # [192_000, 4]
    path = write(tmp_path / "wide.wav", clip, SAMPLE_RATE, subtype="FLOAT")
    for downmix in DOWNMIX_MODES:
        expected = prepare_waveform(clip, SAMPLE_RATE, downmix=downmix, start=1.0)
        np.testing.assert_array_equal(load_audio(path, downmix=downmix, start=1.0), expected)
        with monkeypatch.context() as patch:
            patch.setattr(runtime.audio, "_READ_BLOCK_SAMPLES", 4 * 1000 + 3)
            np.testing.assert_array_equal(load_audio(path, downmix=downmix, start=1.0), expected)
    clip[SAMPLE_RATE + N_SAMPLES - 1, 3] = np.nan  # the window's last sample, in a channel "first" leaves out
    bad = write(tmp_path / "wide-nan.wav", clip, SAMPLE_RATE, subtype="FLOAT")
    monkeypatch.setattr(runtime.audio, "_READ_BLOCK_SAMPLES", 4 * 1000 + 3)
    load_error(bad, "1 of 646400 samples are not finite", start=1.0)  # 10.1 s x 4 channels read


# ---- truncated Ogg and MP3: the cases libsndfile decodes quietly as a shorter clip --------------------------------


def noisy(rate: int, seconds: float, channels: int) -> np.ndarray:
    """A tone with a little noise: [N, channels] float32 that lossy encoders do not squash to nothing."""
    rng = np.random.default_rng(round(rate * seconds) + channels)
    x = sine(F0, rate, seconds)[:, None] + rng.uniform(-0.05, 0.05, (round(seconds * rate), channels))
    return x.astype(np.float32)  # [N, C]


def cut(path: Path, data: bytes, name: str = "cut") -> Path:
    out = path.with_name(f"{name}{path.suffix}")
    out.write_bytes(data)
    return out


def encode_with_av(path: Path, data: np.ndarray, rate: int, codec: str, bit_rate: int | None = None, **options) -> Path:
    """Encode [N, C] float32 with FFmpeg (PyAV, a dev dependency): files from another encoder and muxer than libsndfile's."""
    av = pytest.importorskip("av")
    layout = "mono" if data.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format=path.suffix[1:], options=options) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T), format="fltp", layout=layout)  # [C, N] planar
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def decodes_quietly(path: Path) -> int:
    """libsndfile's view of a cut file: it opens and decodes it without an error (the blind spot checked here)."""
    samples, _ = sf.read(path, dtype="float32")
    assert len(samples) > 0
    return len(samples)


OGG_CASES = [  # rate, channels, seconds, subtype
    (SAMPLE_RATE, 1, 0.3, "VORBIS"),
    (SAMPLE_RATE, 2, 3.0, "VORBIS"),
    (44_100, 1, 25.0, "VORBIS"),
    (44_100, 2, 3.7, "VORBIS"),
    (48_000, 2, 2.0, "OPUS"),
    (SAMPLE_RATE, 1, 12.0, "OPUS"),
]


@pytest.mark.parametrize("rate, channels, seconds, subtype", OGG_CASES)
def test_whole_ogg_files_load(tmp_path, rate, channels, seconds, subtype):
    path = write(tmp_path / "whole.ogg", noisy(rate, seconds, channels), rate, subtype=subtype)
    out = load_audio(path)
    assert out.shape == (N_SAMPLES,) and np.abs(out).max() > 0.1


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("rate, channels, seconds, subtype", [c for c in OGG_CASES if c[2] >= 2])
def test_truncated_ogg(tmp_path, rate, channels, seconds, subtype, fraction):
    data = write(tmp_path / "whole.ogg", noisy(rate, seconds, channels), rate, subtype=subtype).read_bytes()
    path = cut(tmp_path / "whole.ogg", data[: round(len(data) * fraction)])
    if subtype == "VORBIS" and fraction >= 0.5:  # (libsndfile refuses an Opus file, or a Vorbis one cut early, itself)
        decodes_quietly(path)
    load_error(
        path,
        r"file is truncated: its last Ogg page \(at byte \d+\) (needs \d+ bytes but only \d+ are left|ends inside its header)",
    )


def test_ogg_cut_inside_a_page_header(tmp_path):
    data = write(tmp_path / "whole.ogg", noisy(44_100, 3.0, 1), 44_100).read_bytes()
    last = data.rindex(b"OggS")  # the last page
    load_error(
        cut(tmp_path / "whole.ogg", data[: last + 20]),
        r"truncated: its last Ogg page \(at byte \d+\) ends inside its header",
    )


def test_ogg_cut_at_a_page_boundary_lacks_the_end_of_stream_flag(tmp_path):
    data = write(tmp_path / "whole.ogg", noisy(44_100, 3.0, 2), 44_100).read_bytes()
    path = cut(tmp_path / "whole.ogg", data[: data.rindex(b"OggS")])  # every page whole, the last one gone
    decodes_quietly(path)
    load_error(path, "truncated: its last Ogg page does not end the stream")


def test_ogg_cut_inside_its_header_pages(tmp_path):
    data = write(tmp_path / "whole.ogg", noisy(44_100, 3.0, 1), 44_100).read_bytes()
    load_error(cut(tmp_path / "whole.ogg", data[:100]), "truncated: its last Ogg page")


@pytest.mark.parametrize("where", ["between pages", "at the end"])
def test_garbage_in_an_ogg_file(tmp_path, where):
    data = write(tmp_path / "whole.ogg", noisy(44_100, 3.0, 1), 44_100).read_bytes()
    at = data.index(b"OggS", len(data) // 2) if where == "between pages" else len(data)
    path = cut(tmp_path / "whole.ogg", data[:at] + b"\0" * 64 + data[at:], "garbage")
    load_error(path, rf"truncated: the bytes from offset {at} on are not an Ogg page")


def test_ogg_opus_from_ffmpeg_loads(tmp_path):
    path = encode_with_av(tmp_path / "ffmpeg.ogg", noisy(48_000, 3.0, 2), 48_000, "libopus")
    assert load_audio(path).shape == (N_SAMPLES,)
    data = path.read_bytes()
    load_error(cut(path, data[: len(data) * 2 // 3]), "truncated: its last Ogg page")


MP3_CASES = [  # rate, channels, seconds, bitrate mode: MPEG-1 (32-48 kHz), MPEG-2 (16-24 kHz), MPEG-2.5 (8-12 kHz)
    (SAMPLE_RATE, 1, 0.3, "VARIABLE"),
    (SAMPLE_RATE, 2, 3.0, "CONSTANT"),
    (44_100, 1, 25.0, "VARIABLE"),
    (44_100, 2, 3.7, "CONSTANT"),
    (48_000, 2, 2.0, "CONSTANT"),
    (32_000, 1, 2.0, "VARIABLE"),
    (22_050, 2, 1.0, "VARIABLE"),
    (8_000, 1, 2.0, "VARIABLE"),
    (11_025, 2, 2.0, "CONSTANT"),
]


@pytest.mark.parametrize("rate, channels, seconds, mode", MP3_CASES)
def test_whole_mp3_files_load(tmp_path, rate, channels, seconds, mode):
    path = write(tmp_path / "whole.mp3", noisy(rate, seconds, channels), rate, bitrate_mode=mode, compression_level=0.5)
    out = load_audio(path)
    assert out.shape == (N_SAMPLES,) and np.abs(out).max() > 0.1


def frame_cut(data: bytes, fraction: float, into: int = 10) -> bytes:
    """The file cut `into` bytes into a frame near `fraction` of it (found by its sync word), so never between frames."""
    sync = data[data.index(b"\xff") : data.index(b"\xff") + 2]  # the first frame's sync and version/layer bits
    return data[: data.index(sync, round(len(data) * fraction)) + into]


def strip_xing(data: bytes) -> bytes:
    """A libsndfile MP3 without its first frame, the Xing (VBR) or Info (CBR) frame: then libsndfile estimates its length."""
    assert data[:2] == b"\xff\xfb" and (b"Xing" in data[:200] or b"Info" in data[:200])
    stripped = data[data.index(b"\xff\xfb", 4) :]
    assert b"Xing" not in stripped[:200] and b"Info" not in stripped[:200]
    return stripped


def test_libsndfile_writes_a_xing_header_and_a_cut_past_the_window_is_caught(tmp_path):
    # libsndfile (through LAME) starts its MP3s with a Xing frame, so libsndfile knows their length; but the
    # decoded window covers 10 s only, so a cut beyond it was invisible until the frame walk.
    data = write(tmp_path / "whole.mp3", noisy(44_100, 25.0, 2), 44_100).read_bytes()
    assert b"Xing" in data[:200]
    for fraction in (0.2, 0.6, 0.95):
        path = cut(tmp_path / "whole.mp3", frame_cut(data, fraction))
        load_error(path, r"truncated: its last MPEG audio frame \(at byte \d+\) needs \d+ bytes but only \d+ are left")


@pytest.mark.parametrize("channels", [1, 2])
def test_mp3_without_xing_header_from_libsndfile(tmp_path, channels):
    data = write(
        tmp_path / "x.mp3", noisy(44_100, 6.0, channels), 44_100, bitrate_mode="CONSTANT", compression_level=0.5
    ).read_bytes()
    whole = cut(tmp_path / "x.mp3", strip_xing(data), "whole")
    assert load_audio(whole).shape == (N_SAMPLES,)
    for fraction in (0.3, 0.8):
        path = cut(whole, frame_cut(whole.read_bytes(), fraction))
        assert decodes_quietly(path) < sf.info(whole).frames * (fraction + 0.05), "libsndfile sees a shorter clip"
        load_error(path, r"truncated: its last MPEG audio frame \(at byte \d+\) needs \d+ bytes")
    path = cut(whole, frame_cut(whole.read_bytes(), 0.5, into=2))  # the last frame's header itself cut short
    decodes_quietly(path)
    load_error(path, r"truncated: its last MPEG audio frame \(at byte \d+\) ends inside its header")


AV_MP3_CASES = [  # codec, rate, kbit/s: every MPEG version, both layers FFmpeg encodes, many frame sizes and paddings
    *[("libmp3lame", 44_100, k) for k in (32, 128, 320)],
    ("libmp3lame", 48_000, 96),
    ("libmp3lame", 32_000, 48),
    ("libmp3lame", 22_050, 160),
    ("libmp3lame", 24_000, 64),
    ("libmp3lame", 16_000, 16),
    ("libmp3lame", 8_000, 8),
    ("libmp3lame", 11_025, 32),
    ("mp2", 44_100, 192),
    ("mp2", 48_000, 384),
    ("mp2", 22_050, 64),
    ("mp2", 16_000, 8),
]


@pytest.mark.parametrize("codec, rate, kbps", AV_MP3_CASES)
def test_mp3_without_xing_header_from_ffmpeg(tmp_path, codec, rate, kbps):
    # FFmpeg's MP3 muxer: an ID3v2 tag first, and no Xing frame when asked (the other common kind of MP3).
    suffix = ".mp3" if codec == "libmp3lame" else ".mp2"
    options = {"write_xing": "0"} if codec == "libmp3lame" else {}
    whole = encode_with_av(tmp_path / f"whole{suffix}", noisy(rate, 2.3, 2), rate, codec, kbps * 1000, **options)
    data = whole.read_bytes()
    assert b"Xing" not in data and b"Info" not in data[:2000]
    assert load_audio(whole).shape == (N_SAMPLES,)
    for part in (frame_cut(data, 0.5), data[:-1]):
        path = cut(whole, part)
        decodes_quietly(path)
        load_error(path, r"truncated: its last MPEG audio frame")


@pytest.mark.parametrize("codec", ["libmp3lame", "mp2"])
def test_start_between_the_end_and_libsndfiles_estimate_of_it(tmp_path, codec):
    # Without a Xing/Info frame libsndfile estimates the length from the file size, here a little too long: a
    # start between the true end and the estimate is past the end, whether libsndfile's seek fails or reads nothing.
    suffix, options = (".mp3", {"write_xing": "0"}) if codec == "libmp3lame" else (".mp2", {})
    path = encode_with_av(tmp_path / f"x{suffix}", noisy(44_100, 3.0, 2), 44_100, codec, 128_000, **options)
    decoded, estimate = len(sf.read(path)[0]), sf.info(path).frames
    assert decoded < estimate, "libsndfile's estimate overshoots here; the case needs it"
    start = (decoded + estimate) // 2 / 44_100
    load_error(path, re.escape(f"--start {start} s is past the end of the clip (its length is unknown)"), start=start)
    assert load_audio(path, start=(decoded - 100) / 44_100).shape == (N_SAMPLES,)


def id3v2(payload_size: int) -> bytes:
    """An ID3v2.3 tag holding one padded TXXX frame: a 10-byte header with a syncsafe size, then the frames."""
    body = b"TXXX" + (payload_size - 10).to_bytes(4, "big") + b"\0\0" + b"\0" * (payload_size - 10)
    size = len(body)
    return b"ID3\x03\x00\x00" + bytes((size >> 21 & 0x7F, size >> 14 & 0x7F, size >> 7 & 0x7F, size & 0x7F)) + body


def ape_tag() -> bytes:
    """An APEv2 tag (header, one item, footer) as taggers append it after the last frame."""
    item = (5).to_bytes(4, "little") + (0).to_bytes(4, "little") + b"Title\0" + b"hello"

    def part(flags: int) -> bytes:
        return b"APETAGEX" + struct.pack("<4I", 2000, len(item) + 32, 1, flags) + b"\0" * 8

    return part(0xA0000000) + item + part(0x80000000)


ID3V1 = b"TAG" + b"a title".ljust(30, b"\0") + bytes(95)  # 128 bytes


@pytest.mark.parametrize(
    "tags", ["id3v2 300 bytes", "id3v2 + zeros", "id3v2 + id3v1", "ape + id3v1", "ape", "two id3v2"]
)
def test_mp3_tags_are_skipped(tmp_path, tags):
    data = strip_xing(
        write(
            tmp_path / "x.mp3", noisy(44_100, 3.0, 1), 44_100, bitrate_mode="CONSTANT", compression_level=0.5
        ).read_bytes()
    )
    head = {
        "id3v2 300 bytes": id3v2(300),
        "id3v2 + id3v1": id3v2(1000),
        "two id3v2": id3v2(200) + id3v2(150),
        "id3v2 + zeros": id3v2(300) + bytes(40),
    }.get(tags, b"")
    tail = {"id3v2 + id3v1": ID3V1, "ape + id3v1": ape_tag() + ID3V1, "ape": ape_tag()}.get(tags, b"")
    whole = cut(tmp_path / "x.mp3", head + data + tail, "whole")
    assert load_audio(whole).shape == (N_SAMPLES,)
    cut_short = cut(whole, head + data[:-7] + tail)  # the last frame loses 7 bytes; the tags are whole
    load_error(cut_short, r"truncated: its last MPEG audio frame .* needs \d+ bytes but only \d+ are left")


def test_mp3_cut_inside_its_id3v2_tag(tmp_path):
    data = write(tmp_path / "x.mp3", noisy(44_100, 1.0, 1), 44_100).read_bytes()
    load_error(
        cut(tmp_path / "x.mp3", (id3v2(2000) + data)[:500]),
        r"truncated: its ID3v2 tag runs to byte 2010 but the file holds 500 bytes",
    )


def test_mp3_ending_in_bytes_that_look_like_another_streams_header_loads(tmp_path):
    # An MPEG-2 (16 kHz) header and a few bytes after an MPEG-1 (44.1 kHz) stream: not a frame of this stream.
    data = write(tmp_path / "x.mp3", noisy(44_100, 3.0, 1), 44_100).read_bytes()
    path = cut(tmp_path / "x.mp3", data + bytes.fromhex("fff36864") + bytes(20), "stray")
    assert load_audio(path).shape == (N_SAMPLES,)


def test_mp3_with_junk_between_frames_loads(tmp_path):
    # The walk stops without a verdict where it meets anything but a frame: a file decoders accept is never refused.
    data = strip_xing(
        write(
            tmp_path / "x.mp3", noisy(44_100, 3.0, 1), 44_100, bitrate_mode="CONSTANT", compression_level=0.5
        ).read_bytes()
    )
    at = data.index(b"\xff\xfb", len(data) // 2)
    path = cut(tmp_path / "x.mp3", data[:at] + b"junk" * 20 + data[at:], "junk")
    assert load_audio(path).shape == (N_SAMPLES,)


@pytest.mark.parametrize(
    "header, length",
    [
        ("fffb9064", 417),  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz: 144 * 128000 / 44100
        ("fffb9264", 418),  # the same, padded
        ("fff36864", 216),  # MPEG-2 Layer III, 48 kbit/s, 16 kHz: 72 * 48000 / 16000
        ("ffe32864", 144),  # MPEG-2.5 Layer III, 16 kbit/s, 8 kHz: 72 * 16000 / 8000
        ("fffde404", 1152),  # MPEG-1 Layer II, 384 kbit/s, 48 kHz: 144 * 384000 / 48000
        ("ffffe804", 672),  # MPEG-1 Layer I, 448 kbit/s, 32 kHz: (12 * 448000 / 32000) * 4
        ("fff7e804", 768),  # MPEG-2 Layer I, 256 kbit/s, 16 kHz: (12 * 256000 / 16000) * 4
        ("fffb0064", None),  # free format: the header does not give the length
        ("fffbf064", None),  # bitrate index 15: invalid
        ("fffb9c64", None),  # sample-rate index 3: reserved
        ("ffeb9064", None),  # version 01: reserved
        ("fff99064", None),  # layer 00: reserved
        ("fff19064", None),  # an AAC ADTS header, not MPEG audio
    ],
)
def test_mpeg_frame_lengths(header, length):
    frame = _mpeg_frame(bytes.fromhex(header))
    assert (frame[1] if frame else None) == length
