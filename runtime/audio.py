"""Audio loading: any common audio file -> the 10 s, 16 kHz mono waveform the audio encoder takes.

Place in the data flow (DESIGN.md, "Runtime data flow"):
**load_audio** -> encode_audio -> encode_prompt -> denoise -> decode_latents -> save_png.

Steps (SPEC_AUDIOTOKEN.md 1.1, plus the resampling the official code lacks, Q9):
1. decode with libsndfile (WAV, FLAC, OGG/Vorbis, MP3, ...) to float32, full scale [-1, 1);
2. mono: channel 0 as the official `inference.py` does (`downmix="first"`), or the mean of the
   channels as the official HF Space does (`downmix="mean"`);
3. resample to 16 kHz with soxr (high quality) when the file's rate differs, then clip to [-1, 1);
4. loop-tile a short clip (repeat it, never zero-pad) and keep exactly the first 10 s.

`prepare_waveform` runs steps 2-4 on an in-memory array, so host apps can pass raw audio;
`load_audio` decodes a file and hands its samples to it. A bad clip raises `AudioLoadError` with a
one-line message that names it; a bad option raises `ConfigError`. Only numpy, soundfile and soxr are used: never torch.
"""

from __future__ import annotations

import math
import numbers
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from runtime.errors import AudioLoadError, ConfigError

SAMPLE_RATE = 16_000  # Hz: BEATs' Kaldi fbank hard-codes 16 kHz (spec 1.2)
CLIP_SECONDS = 10  # the official inference window: input_length = 10 s from offset 0 (spec 1.1)
N_SAMPLES = CLIP_SECONDS * SAMPLE_RATE  # 160_000 samples: the waveform input of the audio_encoder engine

DOWNMIX_MODES = ("first", "mean")  # channel 0 (official inference.py) | channel mean (official HF Space)
_MAX_CHANNELS = 1024  # libsndfile's own limit; a wider [N, C] array is almost surely a [C, N] one
_MAX_BELOW_ONE = np.nextafter(np.float32(1), np.float32(0))  # 1 - 2**-24: the top of [-1, 1) in float32
_RESAMPLE_MARGIN_SECONDS = 0.1  # decoded past 10 s so the resampler's lookahead sees real audio at the cut
_UNKNOWN_FRAMES = 2**62  # libsndfile reports SF_COUNT_MAX frames for a stream of unknown length
_HINT_REEXPORT = "the file was cut short or damaged (interrupted copy or download?): re-export or re-download it"


def load_audio(path: str | os.PathLike, *, downmix: str = "first") -> np.ndarray:
    """Decode an audio file into the [160_000] float32 waveform (16 kHz mono, 10 s, in [-1, 1)).

    Only the first 10 s (plus a short resampler margin) are decoded, so a long file costs little;
    a clip shorter than 10 s is repeated. Raises AudioLoadError (missing, empty, truncated, not
    audio, no samples, non-finite samples) or ConfigError (unknown `downmix`).
    """
    _check_downmix(downmix)
    path = Path(path)
    _check_file(path)
    cut_short = _riff_truncation(path)
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
    with f:
        sample_rate = f.samplerate
        known = f.frames < _UNKNOWN_FRAMES
        wanted = math.ceil((CLIP_SECONDS + _RESAMPLE_MARGIN_SECONDS) * sample_rate)
        frames = min(f.frames, wanted) if known else wanted
        try:
            samples = f.read(frames, dtype="float32", always_2d=True)  # [n, C], n <= frames
        except sf.SoundFileError as e:
            raise AudioLoadError(
                f"{path}: cannot decode the audio ({_reason(e)}): the file is truncated or corrupt",
                hint=_HINT_REEXPORT,
            ) from e

    # libsndfile takes the frame count from the header (FLAC STREAMINFO, MP3 Xing/Info), so fewer decoded
    # frames than promised means the file ends early. Blind spots: an Ogg file counts up to its last whole
    # page, and an MP3 without a Xing/Info header has an estimated count, so their truncation looks like a
    # shorter clip.
    if known and len(samples) < frames:
        raise AudioLoadError(
            f"{path}: file is truncated: decoded {len(samples)} of the {frames} frames its header promises",
            hint=_HINT_REEXPORT,
        )
    return prepare_waveform(samples, sample_rate, downmix=downmix, name=str(path))


def prepare_waveform(
    samples: np.ndarray, sample_rate: float, *, downmix: str = "first", name: str = "<waveform>"
) -> np.ndarray:
    """Turn raw samples ([N] or [N, C], as soundfile returns them) into the [160_000] float32 waveform.

    Float samples are taken as they are (full scale is [-1, 1)); signed integers are scaled by their
    full range (int16 / 32768). Downmix, resample to 16 kHz, clip to [-1, 1), loop-tile, cut to 10 s.
    `name` names the clip in error messages.
    """
    _check_downmix(downmix)
    if not (isinstance(sample_rate, numbers.Real) and 0 < sample_rate < math.inf):
        raise AudioLoadError(f"{name}: sample rate must be a positive number of Hz, got {sample_rate!r}")
    x = np.asarray(samples)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] > _MAX_CHANNELS):
        raise AudioLoadError(
            f"{name}: expected samples shaped [N] or [N, C] with C <= {_MAX_CHANNELS}, got shape {x.shape}",
            hint="put time on axis 0 (transpose a [C, N] array)",
        )
    if x.size == 0:
        raise AudioLoadError(f"{name}: holds no audio samples (shape {x.shape})", hint="re-export the clip")
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
        raise AudioLoadError(
            f"{name}: {n_bad} of {x.size} samples are not finite (NaN or Inf)",
            hint="the clip is corrupt or was written by a buggy tool: re-export it",
        )

    if x.ndim == 2:
        x = x[:, 0] if downmix == "first" else x.mean(axis=1, dtype=np.float32)  # [N, C] -> [N]
    x = np.ascontiguousarray(x)  # [N]
    if sample_rate != SAMPLE_RATE:
        n_in = len(x)
        x = soxr.resample(x, sample_rate, SAMPLE_RATE, quality="HQ")  # [N * 16000 / sample_rate]
        if len(x) == 0:  # a handful of samples at a higher rate can round to none
            raise AudioLoadError(f"{name}: {n_in} samples at {sample_rate} Hz are too few to resample to 16 kHz")
    x = np.clip(x, -1.0, _MAX_BELOW_ONE).astype(np.float32, copy=False)  # resampling may overshoot full scale

    repeats = -(-N_SAMPLES // len(x))  # ceil: enough copies to cover 10 s (spec 1.1 tiles, never zero-pads)
    return np.ascontiguousarray(np.tile(x, repeats)[:N_SAMPLES])  # [160_000]


def _check_downmix(downmix: str) -> None:
    if downmix not in DOWNMIX_MODES:
        raise ConfigError(
            f"downmix must be one of {', '.join(map(repr, DOWNMIX_MODES))}, got {downmix!r}",
            hint='"first" keeps channel 0 like the official inference; "mean" averages the channels',
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


def _riff_truncation(path: Path) -> str | None:
    """Say how a RIFF/WAVE file is cut short, or None when it is whole or not a WAV.

    libsndfile quietly shortens a WAV whose data chunk promises more bytes than the file holds
    (it only notes "should be" in its log), so the chunk sizes are checked here against the file size.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = "<" if head[:4] == b"RIFF" else ">"  # RIFX is the big-endian twin
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


def _reason(error: Exception) -> str:
    """libsndfile's own words, on one line and without the absolute path soundfile prefixes."""
    return " ".join(str(getattr(error, "error_string", error)).split()).removeprefix("Error : ")
