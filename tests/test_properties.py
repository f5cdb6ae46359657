"""Property tests (hypothesis) of the four readers of other people's input: the audio loader (runtime/audio.py), the
picture loader (runtime/source_picture.py), the manifest reader (runtime/bundle.py) and the layout parser
(runtime/regions.py). The property: any input gives a result that keeps the reader's promises, or ONE line of the
project's error hierarchy (AudioTokenError) naming the input; never another exception, a crash, a hang or a
runaway allocation.

Each example runs in a process of its own (``Sandbox``) under a time limit and a cap on the memory it may add, so a
segfault in a C decoder, a resampler that never returns or a header that asks for gigabytes is a failing example
that names its input, not a dead or stuck test run. The strategies go from arbitrary bytes to inputs built to pass
the first checks and reach deep: RIFF/WAVE and AIFF headers with hostile fields (channel counts, rates of 0 or 1 Hz,
data sizes that lie), valid files of every audio and picture format with bytes flipped or cut, PNG, GIF, BMP and
JPEG headers of huge dimensions (decompression bombs), manifests with each field retyped or dropped, and layouts
near the grammar.

Reproducible: ``PROPERTIES`` derandomizes hypothesis (the same examples on every run, no example database) and
leaves out shrinking, whose cost an example that hangs would multiply; a failure prints the example as drawn.
"""

from __future__ import annotations

import functools
import io
import json
import math
import multiprocessing
import os
import resource
import signal
import struct
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, features

from runtime.audio import DOWNMIX_MODES, load_audio, prepare_waveform
from runtime.bundle import (
    SCHEMA_VERSION,
    Engine,
    FileEntry,
    Lora,
    Manifest,
    OutputError,
    Parity,
    Plan,
    Recipe,
    Source,
    Variant,
    read_manifest,
)
from runtime.contract import N_SAMPLES, Dims, engine_contracts
from runtime.errors import AudioTokenError
from runtime.regions import MAX_REGIONS, Box, parse_layout, region_weights
from runtime.source_picture import MAX_PIXELS, SourcePicture, load_mask, load_picture

PROPERTIES = settings(
    max_examples=200,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,  # nothing written beside the repository
    deadline=None,  # the sandbox bounds each example's time, hangs included
    phases=(Phase.explicit, Phase.generate),  # no shrinking: a hanging example would cost TIME_LIMIT_S per step
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)
TIME_LIMIT_S = 20.0  # an example running longer hangs (the slowest legitimate one takes well under a second)
MEMORY_BUDGET = 2 << 30  # bytes of address space an example may add (a 64-megapixel picture decodes in less)

# --- running one example --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one call ended: "returned" (``value``), "refused" (an AudioTokenError: ``value`` is (class, message,
    hint)), "raised" (another exception: ``detail`` is its traceback), "crashed" or "hung" (``detail`` says how)."""

    kind: str
    value: object = None
    detail: str = ""


class Sandbox:
    """A Python process of its own (spawned: none of pytest's memory, threads or imports) that runs one call at a
    time, with at most MEMORY_BUDGET more address space than it starts with and TIME_LIMIT_S seconds a call; after
    a crash or a hang it is replaced. One per test module: an example costs a round trip through a pipe."""

    def __init__(self):
        self.process = None

    def run(self, function: Callable, *args, **kwargs) -> Outcome:
        """How ``function(*args, **kwargs)`` ends in the sandbox (the function and its arguments must pickle)."""
        if self.process is None:
            self._start()
        self.connection.send((function, args, kwargs))
        if not self.connection.poll(TIME_LIMIT_S):
            self.close()
            return Outcome("hung", detail=f"no answer within {TIME_LIMIT_S:g} s")
        try:
            return Outcome(*self.connection.recv())
        except EOFError:  # the process died
            self.process.join()
            code = self.process.exitcode
            self.close()
            how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exited with status {code}"
            return Outcome("crashed", detail=how)

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.connection.close()
            self.process = None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), daemon=True)
        self.process.start()
        theirs.close()
        try:
            if self.connection.poll(120) and self.connection.recv() == "ready":
                return
        except EOFError:
            pass
        raise RuntimeError("the sandbox process did not start")


def _serve(connection) -> None:
    """The sandbox's loop: cap the memory, then answer each call with (kind, value, detail) as Outcome takes them."""
    _cap_memory()
    connection.send("ready")
    while True:
        function, args, kwargs = connection.recv()
        try:
            result = ("returned", function(*args, **kwargs), "")
        except AudioTokenError as error:
            result = ("refused", (type(error).__name__, str(error), error.hint), "")
        except BaseException:  # anything else is what the property forbids: report it
            result = ("raised", None, traceback.format_exc())
        try:
            connection.send(result)
        except Exception:  # a result that does not pickle
            connection.send(("raised", None, traceback.format_exc()))


def _cap_memory() -> None:
    """Limit this process's address space to what it has now plus MEMORY_BUDGET (a bigger allocation fails)."""
    with open("/proc/self/status") as status:
        now = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = now + MEMORY_BUDGET if hard == resource.RLIM_INFINITY else min(now + MEMORY_BUDGET, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def expect_result_or_one_line(result: Outcome, check: Callable[[object], None], *, names: str | None = None) -> None:
    """The property: ``result`` returned a value ``check`` accepts, or refused with an AudioTokenError of one
    non-empty line (and a one-line hint) that contains ``names`` (the input's name) when given."""
    if result.kind == "returned":
        check(result.value)
        return
    if result.kind != "refused":
        pytest.fail(f"{result.kind} instead of a result or one error line: {result.detail}")
    _, message, hint = result.value
    assert message.strip() and "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert hint is None or "\n" not in hint, f"hint not one line: {hint!r}"
    if names is not None:
        assert names in message, f"the error does not name {names!r}: {message!r}"


@pytest.fixture(scope="module")
def sandbox():
    sandbox = Sandbox()
    yield sandbox
    sandbox.close()


def test_the_sandbox_reports_a_hang_a_crash_and_a_runaway_allocation_and_goes_on(sandbox, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "TIME_LIMIT_S", 0.5)
    assert sandbox.run(time.sleep, 5) == Outcome("hung", detail="no answer within 0.5 s")
    assert sandbox.run(os.abort) == Outcome("crashed", detail="killed by SIGABRT")
    runaway = sandbox.run(np.ones, MEMORY_BUDGET // 4)  # float64: twice the budget
    assert runaway.kind == "raised" and "MemoryError" in runaway.detail
    assert sandbox.run(len, "four") == Outcome("returned", 4)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder the examples write their files in (one name per test, rewritten by each example)."""
    return tmp_path_factory.mktemp("properties")


# --- shared strategies ----------------------------------------------------------------------------------------


@st.composite
def mutations(draw, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """(suffix, bytes): one of the valid ``seeds`` with a few bytes overwritten (most often in its headers), cut
    short, or with bytes inserted."""
    suffix = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[suffix])
    for _ in range(draw(st.integers(0, 6))):
        start = usually(draw, st.just(min(8, len(data) - 1)), st.just(0))  # mostly past the format's magic number
        position = draw(st.integers(start, max(start, min(len(data) - 1, 96))) | st.integers(start, len(data) - 1))
        data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]) | st.integers(0, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    if draw(st.integers(0, 3)) == 0:
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(min_size=1, max_size=16))
    return suffix, bytes(data)


def usually(draw, sane: st.SearchStrategy, hostile: st.SearchStrategy):
    """A field of a structured input: most often a sane value (so the examples get past the first checks and reach
    deep), one time in four a hostile one."""
    return draw(hostile if draw(st.integers(0, 3)) == 0 else sane)


UINT16 = st.sampled_from([0, 1, 2, 255, 256, 65535]) | st.integers(0, 65535)
UINT32 = st.sampled_from([0, 1, 2, 2**31 - 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)


# --- the audio loader -----------------------------------------------------------------------------------------

AUDIO_SUFFIXES = ("", ".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".caf", ".raw", ".txt")


def check_waveform(waveform: object) -> None:
    """What load_audio and prepare_waveform promise: [160_000] float32, finite, in [-1, 1)."""
    assert isinstance(waveform, np.ndarray) and waveform.shape == (N_SAMPLES,) and waveform.dtype == np.float32
    assert np.all(np.isfinite(waveform)) and waveform.min() >= -1 and waveform.max() < 1


@functools.cache
def audio_seeds() -> dict[str, bytes]:
    """Small valid files of each format libsndfile reads (0.2 s of stereo noise), by suffix."""
    formats = {
        ".wav": ("WAV", "PCM_16", 16_000),
        ".f32.wav": ("WAV", "FLOAT", 44_100),
        ".wavex.wav": ("WAVEX", "PCM_24", 48_000),
        ".flac": ("FLAC", "PCM_16", 22_050),
        ".ogg": ("OGG", "VORBIS", 44_100),
        ".opus": ("OGG", "OPUS", 48_000),
        ".mp3": ("MP3", "MPEG_LAYER_III", 44_100),
        ".aiff": ("AIFF", "PCM_16", 8_000),
        ".caf": ("CAF", "PCM_16", 16_000),
        ".w64": ("W64", "PCM_16", 16_000),
        ".au": ("AU", "PCM_16", 16_000),
    }
    seeds = {}
    for suffix, (container, subtype, rate) in formats.items():
        noise = np.random.default_rng(0).uniform(-0.5, 0.5, (rate // 5, 2)).astype(np.float32)  # [N, 2]
        buffer = io.BytesIO()
        sf.write(buffer, noise, rate, format=container, subtype=subtype)
        seeds[suffix] = buffer.getvalue()
    return seeds


@st.composite
def riff_waves(draw) -> bytes:
    """A RIFF/WAVE (or RIFX) file whose fmt and data chunks are well formed but whose fields are hostile."""
    order = draw(st.sampled_from(["<", ">"]))  # RIFF (little-endian) or RIFX (big-endian)
    tag = usually(draw, st.sampled_from([1, 3, 0xFFFE]), st.sampled_from([0, 2, 6, 0x55, 0xFFFF]))  # PCM, float, ...
    channels = usually(draw, st.sampled_from([1, 2, 8]), st.sampled_from([0, 1024, 1025, 65535]) | UINT16)
    rate = usually(draw, st.sampled_from([4000, 16_000, 44_100, 384_000]), st.sampled_from([0, 1, 2, 3999]) | UINT32)
    bits = usually(draw, st.sampled_from([8, 16, 24, 32]), st.sampled_from([0, 1, 12, 64, 65535]))
    align = usually(draw, st.just((channels * bits // 8) & 0xFFFF), st.sampled_from([0, 1, 65535]))
    byte_rate = usually(draw, st.just((rate * align) & 0xFFFFFFFF), st.sampled_from([0, 2**32 - 1]))
    fmt = struct.pack(order + "HHIIHH", tag, channels, rate, byte_rate, align, bits)
    if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: size, valid bits, channel mask, sub-format GUID
        guid = draw(st.sampled_from([b"\x01\x00", b"\x03\x00", b"\xff\xff"])) + b"\x00\x00\x00\x00\x10\x00\x80\x00"
        fmt += struct.pack(order + "HHI", 22, draw(UINT16), draw(UINT32)) + guid + b"\x00\xaa\x00\x38\x9b\x71"
    fmt_size = usually(draw, st.just(len(fmt)), st.sampled_from([14, 16, 18, 40, 0, 2**32 - 1]))
    samples = draw(st.binary(max_size=2048))
    data_size = usually(
        draw, st.just(len(samples)), st.sampled_from([0, 1, len(samples) + 1, 4 * len(samples) + 100, 2**32 - 1])
    )
    chunks = struct.pack(order + "4sI", b"fmt ", fmt_size) + fmt
    if draw(st.booleans()):  # a chunk before the data, odd-sized (and so padded), sometimes lying about its size
        junk = draw(st.binary(max_size=9))
        chunks += struct.pack(order + "4sI", b"LIST", draw(st.sampled_from([len(junk), 2**32 - 1]))) + junk
        chunks += b"\0" * (len(junk) & 1)
    chunks += struct.pack(order + "4sI", b"data", data_size) + samples
    riff_size = usually(draw, st.just(4 + len(chunks)), st.sampled_from([0, 4, 2**32 - 1]))
    return struct.pack(order + "4sI4s", b"RIFF" if order == "<" else b"RIFX", riff_size, b"WAVE") + chunks


def extended80(value: float) -> bytes:
    """An IEEE 754 80-bit extended float (AIFF's sample rate), big-endian; inf and nan as their bit patterns."""
    if math.isnan(value):
        return b"\x7f\xff\xc0" + b"\0" * 7
    if math.isinf(value):
        return (b"\xff\xff" if value < 0 else b"\x7f\xff") + b"\x80" + b"\0" * 7
    if value == 0:
        return b"\0" * 10
    mantissa, exponent = math.frexp(abs(value))  # value = mantissa * 2**exponent, 0.5 <= mantissa < 1
    sign = 0x8000 if value < 0 else 0
    return struct.pack(">HQ", sign | (exponent - 1 + 16383), int(mantissa * 2**64) & (2**64 - 1))


@st.composite
def aiff_files(draw) -> bytes:
    """An AIFF file whose COMM chunk holds hostile channels, frame count, sample size and 80-bit sample rate."""
    hostile_rates = st.sampled_from([0.0, 1.0, 0.5, 3999.0, 1e9, 1e300, math.inf, math.nan, -16_000.0])
    rate = usually(draw, st.sampled_from([8000.0, 44_100.0, 22_050.5]), hostile_rates)
    channels = usually(draw, st.sampled_from([1, 2]), st.sampled_from([0, 1024, 32767, -1]))
    bits = usually(draw, st.sampled_from([8, 16, 24]), st.sampled_from([0, 1, 33, 32767]))
    sound = draw(st.binary(max_size=1024))
    frames = usually(draw, st.just(len(sound) // max(1, channels * bits // 8)), UINT32)
    comm = struct.pack(">hIh", channels, frames, bits) + extended80(rate)
    ssnd = struct.pack(">II", 0, 0) + sound
    body = b"AIFF" + struct.pack(">4sI", b"COMM", len(comm)) + comm
    body += struct.pack(">4sI", b"SSND", usually(draw, st.just(len(ssnd)), st.sampled_from([2**32 - 1, 8]))) + ssnd
    return struct.pack(">4sI", b"FORM", len(body)) + body


@PROPERTIES
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(AUDIO_SUFFIXES))
def test_load_audio_of_any_bytes(sandbox, scratch, data, suffix):
    path = scratch / f"any{suffix}"
    path.write_bytes(data)
    expect_result_or_one_line(sandbox.run(load_audio, path), check_waveform, names=str(path))


@PROPERTIES
@given(data=riff_waves() | aiff_files(), suffix=st.sampled_from([".wav", ".aiff", ""]))
def test_load_audio_of_hostile_headers(sandbox, scratch, data, suffix):
    path = scratch / f"header{suffix}"
    path.write_bytes(data)
    expect_result_or_one_line(sandbox.run(load_audio, path), check_waveform, names=str(path))


@PROPERTIES
@given(file=mutations(audio_seeds()), start=st.sampled_from([0.0, 0.1, 9.9]) | st.floats(0, 30))
def test_load_audio_of_damaged_files(sandbox, scratch, file, start):
    suffix, data = file
    path = scratch / f"damaged{suffix}"
    path.write_bytes(data)
    result = sandbox.run(load_audio, path, start=start, downmix="mean")
    expect_result_or_one_line(result, check_waveform, names=str(path))


@PROPERTIES
@given(
    suffix=st.sampled_from(sorted(audio_seeds())),
    start=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70) | st.booleans(),
    downmix=st.sampled_from(DOWNMIX_MODES) | st.text(max_size=8),
)
def test_load_audio_with_any_options(sandbox, scratch, suffix, start, downmix):
    path = scratch / f"valid{suffix}"
    path.write_bytes(audio_seeds()[suffix])
    expect_result_or_one_line(sandbox.run(load_audio, path, start=start, downmix=downmix), check_waveform)


SAMPLE_RATES = (
    st.sampled_from([0, 1, 0.5, 1e-300, 3999, 4000, 16_000, 44_100, 384_000, 384_001, 1e15, 1e300, 2**64])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([True, np.float32(22_050), np.int64(8_000), np.float64(np.nan), "16000", None])
)
SAMPLE_DTYPES = st.sampled_from("float16 float32 float64 int8 int16 int32 int64 uint8 uint16 bool complex64".split())


@st.composite
def sample_arrays(draw) -> np.ndarray:
    """Raw samples as a host app might pass them: any dtype, [N], [N, C] or another rank, any values."""
    shape = draw(st.sampled_from([(), (0,), (0, 2), (3, 0)]) | hnp.array_shapes(min_dims=1, max_dims=3, max_side=48))
    return draw(hnp.arrays(draw(SAMPLE_DTYPES), shape))


@PROPERTIES
@given(
    samples=sample_arrays(),
    rate=SAMPLE_RATES,
    start=st.sampled_from([0.0, 0.001]) | st.floats(allow_nan=True, allow_infinity=True),
    downmix=st.sampled_from(DOWNMIX_MODES),
)
def test_prepare_waveform_of_any_array_and_rate(sandbox, samples, rate, start, downmix):
    result = sandbox.run(prepare_waveform, samples, rate, downmix=downmix, name="clip<7>", start=start)
    expect_result_or_one_line(result, check_waveform)


# --- the picture loader ---------------------------------------------------------------------------------------


def checked_picture(max_pixels: int) -> Callable[[object], None]:
    """What load_picture promises: RGB [H, W, 3] uint8, alpha None or [H, W] uint8, at most ``max_pixels``."""

    def check(picture: object) -> None:
        assert isinstance(picture, SourcePicture)
        height, width, bands = picture.rgb.shape
        assert bands == 3 and picture.rgb.dtype == np.uint8 and 1 <= width * height <= max_pixels
        assert picture.alpha is None or (picture.alpha.shape == (height, width) and picture.alpha.dtype == np.uint8)
        assert len(picture.sha256) == 64

    return check


@functools.cache
def picture_seeds() -> dict[str, bytes]:
    """Small valid pictures of each format and many modes, by suffix (the JPEG with an EXIF orientation)."""
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)  # [H, W, 3]
    picture = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn clockwise
    palette = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    frames = [palette, palette.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    cases = {
        ".png": (picture, "PNG", {}),
        ".rgba.png": (picture.convert("RGBA"), "PNG", {}),
        ".p.png": (palette, "PNG", {"transparency": 3}),
        ".i16.png": (Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG", {}),
        ".exif.png": (picture, "PNG", {"exif": exif}),
        ".jpg": (picture, "JPEG", {"exif": exif, "quality": 90}),
        ".gif": (frames[0], "GIF", {"save_all": True, "append_images": frames[1:], "transparency": 0}),
        ".bmp": (picture, "BMP", {}),
        ".tif": (picture, "TIFF", {"compression": "tiff_deflate", "exif": exif}),
        ".f.tif": (Image.fromarray(rgb[..., 0].astype(np.float32) / 255), "TIFF", {}),
        ".webp": (picture.convert("RGBA"), "WEBP", {"quality": 80}),
        ".avif": (picture, "AVIF", {"quality": 80}),
    }
    seeds = {}
    for suffix, (image, kind, options) in cases.items():
        if kind in ("WEBP", "AVIF") and not features.check(kind.lower()):  # optional in Pillow's own builds
            continue
        buffer = io.BytesIO()
        image.save(buffer, kind, **options)
        seeds[suffix] = buffer.getvalue()
    return seeds


DIMENSION = st.sampled_from([0, 1, 2, 8192, 8193, 65535, 2**31 - 1, 2**32 - 1]) | st.integers(0, 80)
MAX_PIXELS_ARGUMENT = st.sampled_from([MAX_PIXELS]) | st.integers(1, 6000)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@st.composite
def png_files(draw) -> tuple[bytes, int]:
    """(PNG bytes, width * height from its header): a well-formed PNG of hostile dimensions and fields, whose
    pixels (zeros or noise, deflated) may be fewer than its header promises: at the sizes over the limit, a
    decompression bomb."""
    width, height = draw(DIMENSION), draw(DIMENSION)
    depth, colour = usually(
        draw,
        st.sampled_from([(8, 0), (16, 0), (1, 0), (8, 2), (16, 2), (8, 3), (4, 3), (8, 4), (8, 6), (16, 6)]),
        st.tuples(st.integers(0, 255), st.integers(0, 255)),
    )
    interlace = usually(draw, st.sampled_from([0, 1]), st.just(2))
    chunks = [png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))]
    if colour == 3 or draw(st.booleans()):
        chunks.append(png_chunk(b"PLTE", draw(st.binary(max_size=96))))
    if draw(st.booleans()):
        chunks.append(png_chunk(b"tRNS", draw(st.binary(max_size=8))))
    if draw(st.booleans()):
        orientation = draw(st.integers(0, 9))
        exif = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0" * 4
        chunks.append(png_chunk(b"eXIf", draw(st.sampled_from([exif, exif[:12], b"II*\0\xff\xff\xff\xff"]))))
    row_bytes = (width * max(depth, 1) * 4 + 7) // 8 + 1  # at most four samples a pixel, plus the filter byte
    size = min(row_bytes * height, draw(st.sampled_from([1 << 16, 1 << 20, 16])))
    raw = bytes(size) if draw(st.booleans()) else draw(st.binary(min_size=0, max_size=256)) * 8
    chunks.append(png_chunk(b"IDAT", zlib.compress(raw)))
    chunks.append(png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks), width * height


@st.composite
def other_headers(draw) -> tuple[bytes, int]:
    """(bytes, width * height): a GIF, BMP or JPEG whose header gives hostile dimensions, then little or no data."""
    kind = draw(st.sampled_from(["gif", "bmp", "jpeg"]))
    tail = draw(st.binary(max_size=64))
    if kind == "gif":
        width, height = draw(UINT16), draw(UINT16)
        screen = struct.pack("<HHBBB", draw(UINT16), draw(UINT16), draw(st.sampled_from([0, 0x80, 0xF7])), 0, 0)
        table = bytes(draw(st.sampled_from([0, 6, 768])))
        image = b"," + struct.pack("<HHHHB", 0, 0, width, height, draw(st.sampled_from([0, 0x40, 0x80]))) + b"\x08"
        return b"GIF89a" + screen + table + image + bytes([len(tail)]) + tail + b"\x00;", width * height
    if kind == "bmp":
        width = draw(st.sampled_from([0, 1, -1, 65535, 2**31 - 1, -(2**31)]) | st.integers(-64, 64))
        height = draw(st.sampled_from([0, 1, -1, 65535, 2**31 - 1, -(2**31)]) | st.integers(-64, 64))
        bits, compression = draw(st.sampled_from([1, 4, 8, 16, 24, 32, 0, 64])), draw(st.sampled_from([0, 1, 2, 3, 99]))
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, compression, len(tail), 0, 0, 0, 0)
        header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(tail), 0, 0, 14 + len(info))
        return header + info + tail, abs(width) * abs(height)
    width, height = draw(UINT16), draw(UINT16)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    scan = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return b"\xff\xd8" + sof + scan + tail + b"\xff\xd9", width * height


def expect_no_bomb(result: Outcome, area: int, max_pixels: int, label: str) -> None:
    """The picture property, plus: a picture whose header promises more than ``max_pixels`` never loads."""
    expect_result_or_one_line(result, checked_picture(max_pixels), names=label)
    if area > max_pixels:  # refused, and before its pixels were allocated
        assert result.kind == "refused", f"a {area}-pixel header over {max_pixels} gave {result.kind}"
        assert "not enough memory" not in result.value[1], result.value[1]


@PROPERTIES
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(["", ".png", ".jpg", ".gif", ".tif", ".webp"]))
def test_load_picture_of_any_bytes(sandbox, scratch, data, suffix):
    path = scratch / f"any{suffix}"
    path.write_bytes(data)
    expect_result_or_one_line(sandbox.run(load_picture, path), checked_picture(MAX_PIXELS), names=str(path))
    result = sandbox.run(load_picture, data, name="upload")
    expect_result_or_one_line(result, checked_picture(MAX_PIXELS), names="upload")


@PROPERTIES
@given(file=png_files() | other_headers(), max_pixels=MAX_PIXELS_ARGUMENT)
def test_load_picture_of_hostile_headers_and_bombs(sandbox, file, max_pixels):
    data, area = file
    result = sandbox.run(load_picture, data, name="bomb", max_pixels=max_pixels)
    expect_no_bomb(result, area, max_pixels, "bomb")


@PROPERTIES
@given(file=mutations(picture_seeds()))
def test_load_picture_and_mask_of_damaged_files(sandbox, scratch, file):
    suffix, data = file
    path = scratch / f"damaged{suffix}"
    path.write_bytes(data)
    expect_result_or_one_line(sandbox.run(load_picture, path), checked_picture(MAX_PIXELS), names=str(path))

    def check_mask(mask: object) -> None:
        assert mask.may_change.shape == (10, 12) and set(np.unique(mask.may_change)) <= {0.0, 1.0}

    expect_result_or_one_line(sandbox.run(load_mask, path, (12, 10)), check_mask, names=str(path))


@PROPERTIES
@given(
    pixels=hnp.arrays(
        st.sampled_from([np.uint8, np.uint16, np.bool_, np.float32, np.float64, np.int32, np.int8, np.float16]),
        st.sampled_from([(0, 4), (4, 0, 3)]) | hnp.array_shapes(min_dims=1, max_dims=4, max_side=9),
    ),
    max_pixels=MAX_PIXELS_ARGUMENT,
)
def test_load_picture_of_any_array(sandbox, pixels, max_pixels):
    result = sandbox.run(load_picture, pixels, name="array", max_pixels=max_pixels)
    expect_result_or_one_line(result, checked_picture(max_pixels), names="array")


# --- the manifest reader --------------------------------------------------------------------------------------


@functools.cache
def valid_manifest() -> dict:
    """A manifest as export writes it (the current schema: a LoRA with its distillation preset, a UNet with external
    data, a TensorRT plan and a variant), as the dict json.loads gives."""
    dims = Dims(token_dim=32, height=64, width=64, unet_batches=(2,), token_slots=4)

    def entry(path: str, fill: str) -> FileEntry:
        return FileEntry(path, fill * 64, 1234)

    def parity(output: str) -> Parity:
        return Parity("onnxruntime", "the export sample", 0.001, (OutputError(output, 1.5e-5, 2.5e-6),))

    engines = {}
    for k, (name, contract) in enumerate(engine_contracts(dims).items()):
        unet = name == "unet"
        engines[name] = Engine(
            name=name,
            file=entry(f"{name}.onnx", "0123456789"[k]),
            data=entry(f"{name}.onnx.data", "a") if unet else None,
            precision="fp32",
            inputs=contract.inputs,
            outputs=contract.outputs,
            parity=parity(contract.outputs[0].name),
            plans=(Plan(entry(f"{name}.plan", "b"), "10.13", "NVIDIA H100", parity("noise_pred")),) if unet else (),
            variants=(Variant(entry("unet.mha.onnx", "c"), ("cpu", "cuda"), parity("noise_pred")),) if unet else (),
        )
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        key="d" * 64,
        sources=(Source("sd", "runwayml/stable-diffusion-v1-5", {"unet/model.safetensors": "e" * 64}),),
        precision="fp32",
        opset=17,
        token_dim=32,
        placeholder="<*>",
        placeholder_id=49408,
        template="a photo of <*>, 4k, high resolution",
        height=64,
        width=64,
        vae_scaling_factor=0.18215,
        prediction_type="epsilon",
        scheduler_config={"num_train_timesteps": 1000, "beta_schedule": "scaled_linear"},
        tokenizer="tokenizer",
        files=(entry("tokenizer/tokenizer.json", "f"), entry("scheduler_config.json", "f")),
        engines=engines,
        created_with={"audiotoken-rt": "0.1.0", "onnx": "1.17.0"},
        recipe=Recipe(unet_batches=(2,), lora=Lora("latent-consistency/lcm-lora-sdv1-5", "f" * 64, 1.0), preset="lcm"),
        token_slots=4,
    )
    return json.loads(manifest.to_json())


def json_paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) into a JSON value, its own root included, outside free-form configs."""
    if prefix and prefix[-1] == "scheduler_config":  # diffusers' own config, read by the schedulers
        return [prefix]
    if isinstance(value, dict):
        children = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        return [prefix]
    return [prefix, *(path for key, child in children for path in json_paths(child, (*prefix, key)))]


def json_kind(value: object) -> str:
    """The JSON kind of a value: None, True, False, integer (a float without a fraction too: a reader may take 3.0
    for 3), fraction, string, array or object."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, float):
        return "integer" if value.is_integer() else "fraction"
    return {int: "integer", str: "string", list: "array", dict: "object"}[type(value)]


def kinds_of_field(path: tuple, value: object) -> set[str]:
    """The JSON kinds the field at ``path`` may hold, ``value`` being what the writer put there: a float field takes
    integers too; a file's external data and the LoRA are an object or None."""
    if path[-1] in ("data", "lora"):
        return {"None", "object"}
    return {"integer", "fraction"} if isinstance(value, float) else {json_kind(value)}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def replaced(document: object, path: tuple, value: object) -> object:
    """A copy of ``document`` with the value at ``path`` replaced (``value`` is ``DELETE``: removed)."""
    if not path:
        return value
    copy = dict(document) if isinstance(document, dict) else list(document)
    head, rest = path[0], path[1:]
    if value is DELETE and not rest:
        del copy[head]
    else:
        copy[head] = replaced(document[head], rest, value)
    return copy


DELETE = object()


def field_name(path: tuple) -> str:
    """How an error names the manifest field at ``path``: ``engines.unet.inputs[0].shape[1]``, a key that is not a
    plain identifier quoted (``sources[0].files['unet/model.safetensors']``)."""
    name = ""
    for key in path:
        if isinstance(key, int):
            name += f"[{key}]"
        elif key.isidentifier():
            name += f".{key}" if name else key
        else:
            name += f"[{key!r}]"
    return name


def check_manifest(manifest: object) -> None:
    assert isinstance(manifest, Manifest)


@PROPERTIES
@given(text=st.text(max_size=256) | st.sampled_from(["{}" * 3, '{"schema_version": 3}', '{"schema_version": 1}']))
def test_manifest_from_any_text(sandbox, text):
    result = sandbox.run(Manifest.from_json, text, "bundle/manifest.json")
    expect_result_or_one_line(result, check_manifest, names="bundle/manifest.json")


@PROPERTIES
@given(data=st.data())
def test_manifest_with_any_field_replaced_or_dropped(sandbox, data):
    document = valid_manifest()
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(json_paths(document)[1:]))
        document = replaced(document, path, data.draw(st.just(DELETE) | JSON_VALUES))
    text = json.dumps(document)
    result = sandbox.run(Manifest.from_json, text, "bundle/manifest.json")
    expect_result_or_one_line(result, check_manifest, names="bundle/manifest.json")


@PROPERTIES
@given(data=st.data())
def test_manifest_with_a_field_of_the_wrong_type_is_refused(sandbox, data):
    document = valid_manifest()
    path = data.draw(st.sampled_from(json_paths(document)[1:]))
    current = document
    for key in path:
        current = current[key]
    kinds = kinds_of_field(path, current)
    value = data.draw(JSON_VALUES.filter(lambda v: json_kind(v) not in kinds))
    text = json.dumps(replaced(document, path, value))
    result = sandbox.run(Manifest.from_json, text, "bundle/manifest.json")
    field = field_name(path)
    assert result.kind == "refused", f"manifest field {field} = {value!r} gave {result.kind}: {result.detail}"
    expect_result_or_one_line(result, check_manifest, names="bundle/manifest.json")
    named = "manifest schema version" if path == ("schema_version",) else f"{field} "
    assert result.value[1].startswith(f"bundle/manifest.json: {named}"), f"does not name {field}: {result.value[1]!r}"


@PROPERTIES
@given(data=st.binary(max_size=512) | st.text(max_size=128).map(str.encode))
def test_read_manifest_of_any_bytes(sandbox, scratch, data):
    folder = scratch / "bundle"
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_bytes(data)
    expect_result_or_one_line(sandbox.run(read_manifest, folder), check_manifest, names=str(folder))


def test_the_valid_manifest_reads_back():
    """The base the mutations start from is a manifest the reader takes, unchanged by a round trip."""
    manifest = Manifest.from_json(json.dumps(valid_manifest()))
    assert json.loads(manifest.to_json()) == valid_manifest()


# --- the layout parser ----------------------------------------------------------------------------------------

NUMBERS = st.sampled_from(["0", "1", "0.5", ".5", "1e-9", "-0", "nan", "inf", "1e400", "١", "½", "0x1", "1_0"]) | (
    st.floats(-0.5, 1.5).map(repr)
)


@st.composite
def near_layouts(draw) -> str:
    """Layouts close to the grammar: named ones in any case, grids of any numbers, box lists of any numbers."""
    kind = draw(st.sampled_from(["named", "grid", "boxes"]))
    if kind == "named":
        name = draw(st.sampled_from(["left,right", "right,left", "top,bottom", "bottom,top", "left,left"]))
        return "".join(c.upper() if draw(st.booleans()) else c for c in name) + draw(st.sampled_from(["", " ", "\t"]))
    if kind == "grid":
        digits = st.integers(0, 10**6).map(str) | st.sampled_from(["", "²", "٣", "0" * 5000 + "2", "9" * 5000])
        return f"{draw(digits)}{draw(st.sampled_from(['x', 'X', ' x ', 'xx']))}{draw(digits)}"
    boxes = draw(st.lists(st.lists(NUMBERS, min_size=3, max_size=5).map(",".join), min_size=1, max_size=40))
    return draw(st.sampled_from([";", "; ", ";;"])).join(boxes) + draw(st.sampled_from(["", ";"]))


@st.composite
def grid_of_any_size(draw) -> str:
    return f"{draw(st.integers(1, 10**9))}x{draw(st.integers(1, 10**9))}"


def checked_layout(background: bool) -> Callable[[object], None]:
    """What parse_layout promises (1..MAX_REGIONS boxes inside the picture, none overlapping), and what
    region_weights then gives: weights over the latents that are finite and sum to one, or one error line."""

    def check(found: object) -> None:
        boxes, weights = found
        assert 1 <= len(boxes) <= MAX_REGIONS and all(isinstance(box, Box) for box in boxes)
        for i, a in enumerate(boxes):
            assert 0 <= a.x0 < a.x1 <= 1 and 0 <= a.y0 < a.y1 <= 1, a
            assert all(a.overlap(b) <= 1e-9 for b in boxes[i + 1 :])
        if isinstance(weights, str):
            assert not background and "\n" not in weights and "no sound" in weights
            return
        assert weights.shape == (len(boxes) + background, 1, 16, 24) and np.all(np.isfinite(weights))
        np.testing.assert_allclose(weights.sum(axis=0), 1, atol=1e-5)

    return check


def layout_and_weights(text: str, background: bool) -> tuple[tuple[Box, ...], np.ndarray | str]:
    boxes = parse_layout(text)
    try:
        return boxes, region_weights(boxes, (16, 24), background=background)
    except AudioTokenError as error:
        return boxes, str(error)


@PROPERTIES
@given(text=st.text(max_size=64) | near_layouts() | grid_of_any_size(), background=st.booleans())
def test_parse_layout_of_any_text(sandbox, text, background):
    result = sandbox.run(layout_and_weights, text, background)
    expect_result_or_one_line(result, checked_layout(background), names="--layout")


# --- the examples these properties found (each a regression test) ---------------------------------------------


def test_a_grid_layout_of_superscript_digits_is_one_error_line(sandbox):
    result = sandbox.run(parse_layout, "²x2")  # str.isdigit passed it, int() raised ValueError
    assert result.kind == "refused" and "a grid is ROWSxCOLS" in result.value[1], result


@pytest.mark.parametrize("layout", ["99999999x99999999", "5x5", "0,0,0.1,0.1;" * 3000, "9" * 5000 + "x1"])
def test_a_layout_of_too_many_regions_is_refused_at_once(sandbox, layout):
    result = sandbox.run(parse_layout, layout)  # was: a hang, a quadratic overlap check, int()'s digit limit
    assert result.kind == "refused" and f"at most {MAX_REGIONS}" in result.value[1], result
    assert len(result.value[1]) < 200  # the message quotes a long layout cut short


def test_a_grid_of_max_regions_is_taken():
    assert len(parse_layout("4x4")) == MAX_REGIONS == 16
    assert len(parse_layout(";".join(f"{k / 16},0,{(k + 1) / 16},1" for k in range(16)))) == MAX_REGIONS


def test_a_raw_audio_file_is_one_error_line(sandbox, tmp_path):
    path = tmp_path / "clip.raw"
    path.write_bytes(b"\xa4\xc0")
    expect_result_or_one_line(sandbox.run(load_audio, path), check_waveform, names=str(path))


def test_a_start_of_1e305_seconds_is_one_error_line(sandbox, tmp_path):
    path = tmp_path / "clip.aiff"
    path.write_bytes(audio_seeds()[".aiff"])  # 8 kHz: 1e305 s * 8000 Hz is inf
    expect_result_or_one_line(sandbox.run(load_audio, path, start=1e305), check_waveform, names=str(path))


def test_a_start_of_1e35_seconds_at_a_float32_rate_is_one_error_line(sandbox):
    samples = np.zeros(1, np.float32)
    result = sandbox.run(prepare_waveform, samples, np.float32(22_050), name="clip", start=1e35)  # float32: inf
    expect_result_or_one_line(result, check_waveform, names="clip")


def test_a_deeply_nested_manifest_is_one_error_line(sandbox):
    result = sandbox.run(Manifest.from_json, "[" * 5000, "bundle/manifest.json")
    expect_result_or_one_line(result, check_manifest, names="bundle/manifest.json")


def test_a_manifest_not_in_utf8_is_one_error_line(sandbox, tmp_path):
    (tmp_path / "manifest.json").write_bytes(b"\xee{}")
    expect_result_or_one_line(sandbox.run(read_manifest, tmp_path), check_manifest, names=str(tmp_path))


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("height",), "512", "height is '512': expected a whole number"),
        (("template",), 7, "template is 7: expected a string"),
        (("schema_version",), True, "manifest schema version True, "),  # True == 1: it read as version 1
        (("files",), {}, "files is {}: expected an array"),  # iterating it read no file
        (("engines", "unet", "inputs", 0, "shape", 0), None, "engines.unet.inputs[0].shape[0] is None: expected"),
        (("engines", "vae_decoder", "data"), 0, "engines.vae_decoder.data is 0: expected an object"),  # 0: no data
        (("recipe", "steps"), 2.5, "recipe.steps is 2.5: expected a whole number 1 or more"),
    ],
    ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else repr(v),
)
def test_a_manifest_field_of_the_wrong_type_is_refused(sandbox, path, value, expected):
    text = json.dumps(replaced(valid_manifest(), path, value))
    result = sandbox.run(Manifest.from_json, text, "bundle/manifest.json")
    assert result.kind == "refused" and result.value[1].startswith(f"bundle/manifest.json: {expected}"), result


@pytest.mark.parametrize("path", [("files", 0), ("engines", "unet", "plans", 0, "file"), ("recipe", "lora")])
def test_a_manifest_key_holding_a_newline_is_still_one_error_line(sandbox, path):
    text = json.dumps(replaced(valid_manifest(), path, {"\n": None}))  # an object whose one key is a newline
    result = sandbox.run(Manifest.from_json, text, "bundle/manifest.json")
    expect_result_or_one_line(result, check_manifest, names="bundle/manifest.json")
