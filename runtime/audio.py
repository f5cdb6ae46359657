"""Audio loading: any common audio file -> the 10 s, 16 kHz mono waveform the audio encoder takes.

Place in the data flow (docs/architecture.md, "The data flow of one picture"):
**load_audio** -> encode_audio -> encode_prompt -> denoise -> decode_latents -> save_png.

The reading recipe (docs/method.md#audio, plus the resampling the official code lacks, quirk Q9, and a chosen window):
1. decode with libsndfile (WAV, FLAC, OGG/Vorbis or Opus, MP3, ...) to float32, full scale [-1, 1): the 10 s
   window that begins `start` seconds into the clip (`start=0`, the default, is the first 10 s, as the official
   inference reads it), plus a short margin for the resampler. Only that window is decoded (libsndfile seeks
   to its first frame), block by block, each block downmixed as it comes, so neither a long file nor one of
   many channels costs more than the mono window;
2. mono: channel 0 as the official `inference.py` does (`downmix="first"`), or the mean of the
   channels as the official HF Space does (`downmix="mean"`), or channel 1 (`downmix="second"`, the right of a
   stereo pair, channel 0 of a mono clip: `generate --stereo` hears each side);
3. resample to 16 kHz with soxr (high quality) when the clip's rate differs, then clip to [-1, 1);
4. when less than 10 s remain from `start` (a short clip, or a start near the end), loop-tile what remains
   (repeat it, never zero-pad); keep exactly 160_000 samples.

`prepare_waveform` runs the same recipe on an in-memory array, so host apps can pass raw audio: it too cuts the
window (plus the margin) out before converting or resampling anything, so the work is bounded by 10 s of audio
whatever the array's length. `load_audio` decodes a file's window and hands its mono samples on. The rate must lie
in MIN_SAMPLE_RATE..MAX_SAMPLE_RATE (4-384 kHz: every rate in use, and a bound on the samples 10 s can hold); the
C++ runtime's waveform.cpp mirrors these two numbers. A `start` past the end of the clip (however large: the frame
it names is computed in Python floats) is refused as such. A headerless `.raw` file is refused (soundfile opens a
file of that name as raw samples, whose rate, channels and format it must be told); libsndfile itself reads a
headerless `.au`/`.snd` as 8 kHz mu-law, `.vox` as 8 kHz (`.vox6`: 6 kHz) VOX ADPCM and `.gsm` as 8 kHz GSM 6.10,
the conventions of those telephony files. A bad clip raises `AudioLoadError` with a one-line message that names it;
a bad option raises `ConfigError`. Only numpy, soundfile and soxr are used: never torch.

A file cut short (an interrupted copy or download) must fail, not load as a shorter clip. libsndfile knows a
FLAC file's frame count from its header, so a window that decodes short is caught. But it quietly decodes what
is there in three cases: a WAV whose data chunk runs past the end of the file, an Ogg file (it counts up to its
last whole page) and an MP3 without a Xing/Info frame (it estimates the length from the file size). So
`_truncation` checks those formats' structure by hand before decoding, reading headers only: RIFF chunk sizes,
Ogg pages (RFC 3533) and MPEG audio frame headers, to the end of the file. This is written here because
libsndfile does not report these cases and no small, well-kept library does this check; each check is a short
walk over headers (a 10-minute MP3 has about 23 000 frames: some tens of milliseconds).
"""

from __future__ import annotations

import math
import numbers
import os
import struct
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from runtime.contract import CLIP_SECONDS, N_SAMPLES, SAMPLE_RATE
from runtime.errors import AudioLoadError, ConfigError, shown

# channel 0 (official inference.py) | channel mean (official HF Space) | channel 1 (a stereo pair's right; channel 0
# of a mono clip): generate --stereo reads "first" and "second"
DOWNMIX_MODES = ("first", "mean", "second")
MIN_SAMPLE_RATE = 4_000  # Hz: below telephone speech (8 kHz); 10 s from 1 Hz would resample 10 samples to 160_000
MAX_SAMPLE_RATE = 384_000  # Hz: the highest rate audio interfaces record; 10 s of it is 3.84 M samples per channel
MAX_CHANNELS = 1024  # libsndfile's own limit; a wider [N, C] array is almost surely a [C, N] one
_MAX_BELOW_ONE = np.nextafter(np.float32(1), np.float32(0))  # 1 - 2**-24: the top of [-1, 1) in float32
# Input kept past the 10 s window, so that soxr's lookahead sees real audio at the cut. Measured on noise at 90 rates
# in 4-384 kHz: cutting the input moves soxr HQ's output by more than 1e-6 only in its last 22 ms of output, and at
# all (block rounding) in its last 160 ms; so the 10 s kept are the whole rest's, resampled, within 1e-6
# (tests/test_audio.py checks it on the real clips at 44.1 and 48 kHz).
RESAMPLE_MARGIN_SECONDS = 0.1
_READ_BLOCK_SAMPLES = 2**20  # samples (over all channels) decoded per read: 4 MiB of float32, downmixed at once
_UNKNOWN_FRAMES = 2**62  # libsndfile reports SF_COUNT_MAX frames for a stream of unknown length
_HINT_REEXPORT = "the file was cut short or damaged (interrupted copy or download?): re-export or re-download it"


def load_audio(path: str | os.PathLike, *, downmix: str = "first", start: float = 0.0) -> np.ndarray:
    """Decode an audio file into the [160_000] float32 waveform (16 kHz mono, 10 s, in [-1, 1)).

    The window begins `start` seconds into the clip (0: its first 10 s). Only that window (plus a short
    resampler margin) is decoded, block by block and downmixed as it comes, so a long file or one of many
    channels costs little; when less than 10 s remain, what remains is repeated. Raises AudioLoadError (missing,
    empty, truncated, not audio, headerless RAW, a rate outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE, no samples,
    non-finite samples, `start` at or past the end) or ConfigError (unknown `downmix`, negative or non-finite
    `start`).
    """
    path = Path(path)
    _check_options(downmix, start, str(path))
    f = open_clip(path)
    with f:
        sample_rate, total = f.samplerate, f.frames
        # libsndfile takes the frame count from the header (WAV, FLAC STREAMINFO, an MP3's Xing/Info frame), but
        # estimates an MP3's from its size when it has no such frame: a short read then proves nothing. For MPEG
        # audio (libsndfile's "MP3", layers I-III) the frame walk of `_truncation` is the check.
        known, mp3 = total < _UNKNOWN_FRAMES, f.format == "MP3"
        first = _first_frame(start, sample_rate)
        if 0 < total and first >= min(total, _UNKNOWN_FRAMES):  # (a clip of no frames gets its own error below)
            raise _past_end(str(path), start, total / sample_rate if known else None)
        wanted = _window_samples(sample_rate)
        frames = min(total - first, wanted) if known else wanted
        try:
            if first:
                f.seek(first)  # sample-accurate in libsndfile, lossy formats included
            mono, non_finite = _read_mono(f, frames, downmix)  # [n], n <= frames
        except sf.SoundFileError as e:
            raise AudioLoadError(
                f"{path}: cannot decode the audio ({_reason(e)}): the file is truncated or corrupt",
                hint=_HINT_REEXPORT,
            ) from e
        channels = f.channels

    if known and not mp3 and len(mono) < frames:
        raise AudioLoadError(
            f"{path}: file is truncated: decoding stopped at frame {first + len(mono)} "
            f"of the {total} frames its header promises",
            hint=_HINT_REEXPORT,
        )
    if first and len(mono) == 0:  # the start lies past the true end, where the length was unknown or an estimate
        raise _past_end(str(path), start, None)
    if len(mono) == 0:
        raise AudioLoadError(f"{path}: holds no audio samples (0 frames)", hint="re-export the clip")
    if non_finite:
        raise _not_finite(str(path), non_finite, len(mono) * channels)
    return _to_clip(mono, sample_rate, str(path))


def open_clip(path: str | os.PathLike) -> sf.SoundFile:
    """An audio file opened for reading (libsndfile), after the checks every reader of a clip makes: a readable,
    non-empty file, not headerless RAW, not cut short (`_truncation`), recognised as audio, at a rate within
    MIN_SAMPLE_RATE..MAX_SAMPLE_RATE. `load_audio` reads its window; `runtime.live` reads it as a stream, block by
    block. Raises AudioLoadError naming the file; the caller closes what it gets."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".raw":  # soundfile opens a .raw file as headerless samples, of a format it must be told
        raise AudioLoadError(
            f"{path}: headerless RAW audio is not supported (it does not say its rate, channels or sample format)",
            hint="convert it to WAV or FLAC with its true format, e.g. `ffmpeg -f s16le -ar 16000 -ac 1 -i CLIP.raw clip.wav`",
        )
    cut_short = _truncation(path)
    if cut_short:
        raise AudioLoadError(f"{path}: file is truncated: {cut_short}", hint=_HINT_REEXPORT)
    # libsndfile reads the path "-" as stdin, so hand it an absolute path (names starting with "-" are common).
    try:
        f = sf.SoundFile(str(path.absolute()))
    except sf.SoundFileError as e:
        raise AudioLoadError(
            f"{path}: not a recognised audio file ({_reason(e)})",
            hint="use WAV, FLAC, OGG/Vorbis or MP3, e.g. `ffmpeg -i CLIP -ac 1 -ar 16000 clip.wav`",
        ) from e
    try:
        _check_rate(f.samplerate, str(path))  # before anything is read: the rate sizes the window
    except AudioLoadError:
        f.close()
        raise
    return f


def _read_mono(f: sf.SoundFile, frames: int, downmix: str) -> tuple[np.ndarray, int]:
    """Up to `frames` frames from `f`'s position, downmixed block by block: ([n] float32, non-finite samples seen
    in any channel). Only a block of all channels is held at a time, so memory is that of the mono window."""
    block = max(1, _READ_BLOCK_SAMPLES // f.channels)  # frames per read
    parts, non_finite, left = [], 0, frames
    while left > 0:
        samples = f.read(min(block, left), dtype="float32", always_2d=True)  # [b, C]
        if len(samples) == 0:
            break
        non_finite += samples.size - int(np.count_nonzero(np.isfinite(samples)))
        parts.append(downmix_samples(samples, downmix))  # [b]
        left -= len(samples)
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), non_finite  # [n]


def prepare_waveform(
    samples: np.ndarray,
    sample_rate: float,
    *,
    downmix: str = "first",
    name: str = "<waveform>",
    start: float = 0.0,
) -> np.ndarray:
    """Turn raw samples ([N] or [N, C], as soundfile returns them) into the [160_000] float32 waveform.

    Float samples are taken as they are (full scale is [-1, 1)); signed integers are scaled by their
    full range (int16 / 32768). Start `start` seconds in and keep 10 s plus the resampler's margin (the rest is
    never converted, checked or resampled), downmix, resample to 16 kHz, clip to [-1, 1), loop-tile, cut to
    10 s. `name` names the clip in error messages. Raises AudioLoadError (bad shape or dtype, a rate outside
    MIN_SAMPLE_RATE..MAX_SAMPLE_RATE, no samples, non-finite samples in the window, `start` at or past the end)
    or ConfigError (bad `downmix` or `start`).
    """
    _check_options(downmix, start, name)
    _check_rate(sample_rate, name)
    x = np.asarray(samples)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] > MAX_CHANNELS):
        raise AudioLoadError(
            f"{name}: expected samples shaped [N] or [N, C] with C <= {MAX_CHANNELS}, got shape {x.shape}",
            hint="put time on axis 0 (transpose a [C, N] array)",
        )
    if x.size == 0:
        raise AudioLoadError(f"{name}: holds no audio samples (shape {x.shape})", hint="re-export the clip")
    first = _first_frame(start, sample_rate)  # the window's first sample
    if first >= len(x):
        raise _past_end(name, start, len(x) / sample_rate)
    x = x[first : first + _window_samples(sample_rate)]  # [n] or [n, C]: the window and the margin
    if x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
    elif x.dtype.kind == "i":
        x = x.astype(np.float32) / np.float32(-np.iinfo(x.dtype).min)  # int16: / 32768 -> [-1, 1)
    else:
        raise AudioLoadError(
            f"{name}: expected float or signed integer samples, got dtype {x.dtype}",
            hint="convert to float32 in [-1, 1)",
        )
    n_bad = x.size - int(np.count_nonzero(np.isfinite(x)))
    if n_bad:
        raise _not_finite(name, n_bad, x.size)
    return _to_clip(downmix_samples(x, downmix), sample_rate, name)


def _to_clip(x: np.ndarray, sample_rate: float, name: str) -> np.ndarray:
    """Mono samples [n] at `sample_rate` (the window and its margin) -> the [160_000] waveform: resampled to
    16 kHz, clipped to [-1, 1), loop-tiled, cut to 10 s."""
    x = np.ascontiguousarray(x)  # [n]
    if sample_rate != SAMPLE_RATE:
        n_in = len(x)
        x = soxr.resample(x, sample_rate, SAMPLE_RATE, quality="HQ")  # [N * 16000 / sample_rate]
        if len(x) == 0:  # a handful of samples at a higher rate can round to none
            raise AudioLoadError(f"{name}: {n_in} samples at {sample_rate} Hz are too few to resample to 16 kHz")
    x = np.clip(x, -1.0, _MAX_BELOW_ONE).astype(np.float32, copy=False)  # resampling may overshoot full scale

    repeats = -(-N_SAMPLES // len(x))  # ceil: enough copies to cover 10 s (docs/method.md#audio: tiled, not padded)
    return np.ascontiguousarray(np.tile(x, repeats)[:N_SAMPLES])  # [160_000]


def downmix_samples(x: np.ndarray, downmix: str) -> np.ndarray:
    """[n, C] -> [n] as `downmix` says ("mean": in float32); a 1-D [n] is mono already."""
    if x.ndim == 1:
        return x
    if downmix == "mean":
        return x.mean(axis=1, dtype=np.float32)  # [n]
    return x[:, 0 if downmix == "first" else min(1, x.shape[1] - 1)]  # [n]


def _first_frame(start: float, sample_rate: float) -> int:
    """The frame `start` seconds into a clip at `sample_rate`, computed in Python floats (a float32 rate makes
    float32 arithmetic, which overflows at 1e35 s); _UNKNOWN_FRAMES, past the end of every clip, for a start
    beyond it (1e305 s at 8 kHz is more than a float holds)."""
    frame = float(start) * float(sample_rate)
    return round(frame) if frame < _UNKNOWN_FRAMES else _UNKNOWN_FRAMES


def _window_samples(sample_rate: float) -> int:
    """Input samples (per channel) that give the 10 s window and the resampler's margin at `sample_rate`."""
    return math.ceil((CLIP_SECONDS + RESAMPLE_MARGIN_SECONDS) * sample_rate)


def _check_rate(sample_rate, name: str) -> None:
    if isinstance(sample_rate, bool) or not (
        isinstance(sample_rate, numbers.Real) and MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE
    ):  # NaN fails too
        raise AudioLoadError(
            f"{name}: sample rate {shown(sample_rate)} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz",
            hint="resample the clip, e.g. `ffmpeg -i CLIP -ar 16000 clip.wav`; pass the samples' true rate",
        )


def _not_finite(name: str, bad: int, total: int) -> AudioLoadError:
    return AudioLoadError(
        f"{name}: {bad} of {total} samples are not finite (NaN or Inf)",
        hint="the clip is corrupt or was written by a buggy tool: re-export it",
    )


def _check_options(downmix: str, start: float, name: str) -> None:
    if downmix not in DOWNMIX_MODES:
        raise ConfigError(
            f"downmix must be one of {', '.join(map(repr, DOWNMIX_MODES))}, got {downmix!r}",
            hint='"first" keeps channel 0 like the official inference; "mean" averages the channels; "second" keeps channel 1',
        )
    if not (isinstance(start, numbers.Real) and 0 <= start <= sys.float_info.max):  # a float holds it: NaN, inf fail
        raise ConfigError(
            f"{name}: --start must be a finite number of seconds >= 0, got {shown(start)}",
            hint="the 10 s window begins this many seconds into the clip; 0 reads its first 10 s",
        )


def _past_end(name: str, start: float, seconds: float | None) -> AudioLoadError:
    """The error for a window that would begin at or past the end of a clip `seconds` long."""
    length = f"{round(seconds, 3)} s long" if seconds is not None else "its length is unknown"
    return AudioLoadError(
        f"{name}: --start {float(start)} s is past the end of the clip ({length})",
        hint="choose a start inside the clip, or 0 for its first 10 s",
    )


def _check_file(path: Path) -> None:
    """Refuse what is not a readable, non-empty regular file, before libsndfile sees it."""
    if not path.exists():
        raise AudioLoadError(f"{path}: no such file", hint="check the path and the working directory")
    if path.is_dir():
        raise AudioLoadError(f"{path}: is a directory, expected an audio file", hint="pass one clip")
    if not os.access(path, os.R_OK):
        raise AudioLoadError(f"{path}: permission denied", hint="make the file readable")
    if path.stat().st_size == 0:
        raise AudioLoadError(f"{path}: file is empty (0 bytes)", hint=_HINT_REEXPORT)


def _truncation(path: Path) -> str | None:
    """Say how a WAV, Ogg or MP3 file is cut short, or None when it looks whole (or is of another format)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
            return _riff_truncation(f, size, "<" if head[:4] == b"RIFF" else ">")  # RIFX: the big-endian twin
        if head[:4] == b"OggS":
            return _ogg_truncation(f, size)
        if head[:3] == b"ID3" or _mpeg_frame(head[:4]):
            return _mpeg_truncation(f, size)
    return None


def _riff_truncation(f: BinaryIO, size: int, order: str) -> str | None:
    """A WAV whose data chunk promises more bytes than the file holds (libsndfile only notes "should be" in its log)."""
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk_id, chunk_size = struct.unpack(order + "4sI", f.read(8))
        if chunk_id == b"data":
            present = size - (pos + 8)
            # 0 and 0xFFFFFFFF are "length unknown" placeholders left by streaming writers.
            if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > present:
                return f"its data chunk promises {chunk_size} bytes but only {present} are present"
            return None
        pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even size
    return None


def _ogg_truncation(f: BinaryIO, size: int) -> str | None:
    """An Ogg file is a chain of pages (RFC 3533): "OggS", version 0, header type (0x04: end of stream),
    granule position, serial, page number, CRC, a segment count, the segment table, then the body, whose
    size is the sum of the table. A whole file ends with a whole page that ends the stream."""
    pos = header_type = 0
    while pos < size:
        f.seek(pos)
        header = f.read(27)  # [27]: the page header up to the segment table
        if not b"OggS".startswith(header[:4]) or header[4:5] not in (b"", b"\0"):
            return f"the bytes from offset {pos} on are not an Ogg page (a gap or garbage in the stream)"
        table = f.read(header[26]) if len(header) == 27 else b""  # [segments]: the body's lacing values
        if len(header) < 27 or len(table) < header[26]:
            return f"its last Ogg page (at byte {pos}) ends inside its header"
        end = pos + 27 + len(table) + sum(table)
        if end > size:
            return f"its last Ogg page (at byte {pos}) needs {end - pos} bytes but only {size - pos} are left"
        pos, header_type = end, header[5]
    if not header_type & 0x04:
        return "its last Ogg page does not end the stream (the end-of-stream flag is missing)"
    return None


# MPEG audio frame headers (ISO 11172-3, 13818-3, and the MPEG-2.5 extension): 4 bytes, 11 sync bits, then the
# version (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5), the layer (3 - bits: I, II, III), a CRC bit, the bitrate index,
# the sample-rate index and the padding bit. Bitrates in kbit/s for indices 1..14, by (MPEG-1?, layer):
_MPEG_KBPS = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000), 0: (11_025, 12_000, 8_000)}  # Hz, by version


def _mpeg_frame(header: bytes) -> tuple[tuple[int, int, int], int] | None:
    """(stream kind, length in bytes) of the MPEG audio frame that starts with `header`, or None if none does."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer = (header[1] >> 3) & 3, 4 - ((header[1] >> 1) & 3)
    index, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or layer == 4 or index in (0, 15) or rate_index == 3:
        return None  # reserved values, or "free format", whose header does not give the frame's length
    bitrate, rate = _MPEG_KBPS[version == 3, layer][index - 1] * 1000, _MPEG_RATES[version][rate_index]
    if layer == 1:  # 384 samples, in 4-byte slots
        length = (12 * bitrate // rate + padding) * 4
    else:  # 1152 samples (576 in Layer III of MPEG-2 and 2.5): samples / 8 * bitrate / rate bytes
        length = (72 if layer == 3 and version != 3 else 144) * bitrate // rate + padding
    return (version, layer, rate_index), length


def _mpeg_truncation(f: BinaryIO, size: int) -> str | None:
    """Walk an MP3's frames, header to header, from its ID3v2 tags to its ID3v1 and APE tags. Only a frame that
    runs past the end counts: where the walk meets anything else (free format, junk, another tag) it stops
    without a verdict, so a valid file is never refused."""
    pos = 0
    f.seek(0)
    head = f.read(10)
    while head[:3] == b"ID3" and len(head) == 10:  # ID3v2: "ID3", version, flags, a 4-byte syncsafe size
        pos += 10 + sum((b & 0x7F) << (21 - 7 * i) for i, b in enumerate(head[6:10])) + (10 if head[5] & 0x10 else 0)
        f.seek(pos)
        head = f.read(10)
    if pos > size:
        return f"its ID3v2 tag runs to byte {pos} but the file holds {size} bytes"
    f.seek(pos)
    lead = f.read(4096)
    pos += len(lead) - len(lead.lstrip(b"\0"))  # zero padding some taggers leave after the tag
    end = size - _mpeg_trailer(f, size)
    kind = None
    while pos < end:
        f.seek(pos)
        header = f.read(min(4, end - pos))
        if len(header) < 4:  # 1-3 bytes left: the start of a header cut short, or stray bytes
            return f"its last MPEG audio frame (at byte {pos}) ends inside its header" if header[0] == 0xFF else None
        frame = _mpeg_frame(header)
        if frame is None or kind not in (None, frame[0]):
            return None
        kind, length = frame
        if pos + length > end:
            return f"its last MPEG audio frame (at byte {pos}) needs {length} bytes but only {end - pos} are left"
        pos += length
    return None


def _mpeg_trailer(f: BinaryIO, size: int) -> int:
    """The size of the tags after an MP3's last frame: an ID3v1 tag (128 bytes, "TAG"), and before it an APE tag."""
    trailer = 0
    if size >= 128:
        f.seek(size - 128)
        trailer = 128 if f.read(3) == b"TAG" else 0
    if size - trailer >= 32:
        f.seek(size - trailer - 32)
        footer = f.read(32)  # "APETAGEX", version, size (items + footer), item count, flags, reserved
        if footer[:8] == b"APETAGEX":
            _, tag_size, _, flags = struct.unpack("<4I", footer[8:24])
            trailer += tag_size + (32 if flags & 0x80000000 else 0)  # bit 31: the tag also has a 32-byte header
    return trailer


def _reason(error: Exception) -> str:
    """libsndfile's own words, on one line and without the absolute path soundfile prefixes."""
    return " ".join(str(getattr(error, "error_string", error)).split()).removeprefix("Error : ")
