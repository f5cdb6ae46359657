"""runtime/cpp/tools/picture_file.cpp, the C++ example's picture reader, against runtime/source_picture.py.

Pictures are written with Pillow (and, for what Pillow does not write, PNG chunks put together here) in every
format and mode the Python side reads, then read by ``audiotoken-rt-cpp-picture-check`` (tests/test_cpp.py's
sanitized build, one run for the whole corpus) and by ``load_picture``: the RGB bytes, the alpha (or its absence)
and the size must be equal, pixel for pixel, lossy formats included: Debian's libjpeg-turbo 2.1, libwebp 1.2 and
libavif 0.11 give the same bytes as the newer copies in Pillow's wheel (no tolerance is needed). Refusals: a missing file, a folder, an empty
file, a non-picture and a picture over the pixel limit (from its header, before its pixels are decoded) in Python's
words; truncated files in one line naming the file.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.errors import ConfigError
from runtime.source_picture import MAX_PIXELS, load_picture
from tests import test_cpp
from tests.test_cpp import run

cpp = test_cpp.cpp  # the sanitized build, a session fixture: built once for both modules' tests

WIDTH, HEIGHT = 37, 23  # odd sizes: no row or block arithmetic lines up by chance


def rgb_noise(seed: int, width: int = WIDTH, height: int = HEIGHT, channels: int = 3) -> np.ndarray:
    """A smooth gradient with noise on it: JPEG and WebP keep detail of both kinds."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.linspace(0.3, 1, height)[:, None, None]  # [H, W, 1]
    noise = rng.integers(-40, 40, (height, width, channels))
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)  # [H, W, C]


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


# --- PNG put together by hand: what Pillow does not write (16-bit colour, 2- and 4-bit grey, Adam7) -----------


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(samples: np.ndarray, depth: int, colour: int, *, interlaced: bool = False, extra: bytes = b"") -> bytes:
    """samples [H, W, C] (values < 2**depth) as a PNG of `depth` bits and colour type `colour`, filter 0."""
    height, width = samples.shape[:2]

    def rows(block: np.ndarray) -> bytes:  # [h, w, C] -> filtered scanlines
        out = b""
        for row in block:
            if depth == 16:
                packed = row.astype(">u2").tobytes()
            elif depth == 8:
                packed = row.astype(np.uint8).tobytes()
            else:  # 1, 2, 4 bits, one sample per pixel (grey)
                bits = np.unpackbits(row.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - depth :]  # [w, depth]
                packed = np.packbits(bits.reshape(-1)).tobytes()
            out += b"\0" + packed
        return out

    if interlaced:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b"".join(rows(samples[y0::dy, x0::dx]) for x0, y0, dx, dy in passes if samples[y0::dy, x0::dx].size)
    else:
        raw = rows(samples)
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 1 if interlaced else 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def saved(image: Image.Image, format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=format, **options)
    return out.getvalue()


def animation(format: str, mode: str, **options) -> bytes:
    frames = [Image.fromarray(rgb_noise(seed)).convert(mode) for seed in (20, 21, 22)]
    return saved(frames[0], format, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)


def corpus() -> dict[str, bytes]:
    """name -> a picture file's bytes, in every format and mode the Python side reads."""
    rgb = Image.fromarray(rgb_noise(1))
    rgba = Image.fromarray(rgb_noise(2, channels=4))
    grey = rgb.convert("L")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=50)
    rng = np.random.default_rng(3)
    grey16 = rng.integers(0, 65536, (HEIGHT, WIDTH, 1)).astype(np.uint16)
    rgb16 = rng.integers(0, 65536, (HEIGHT, WIDTH, 3)).astype(np.uint16)
    rgb16_alpha = rng.integers(0, 65536, (HEIGHT, WIDTH, 4)).astype(np.uint16)
    files = {
        # PNG
        "rgb.png": saved(rgb, "PNG"),
        "rgba.png": saved(rgba, "PNG"),
        "l.png": saved(grey, "PNG"),
        "la.png": saved(rgba.convert("LA"), "PNG"),
        "1.png": saved(rgb.convert("1"), "PNG"),
        "p.png": saved(palette, "PNG"),
        "p-transparency.png": saved(palette, "PNG", transparency=bytes(range(0, 250, 5))),
        "rgb-transparency.png": saved(rgb, "PNG", transparency=tuple(int(v) for v in rgb_noise(1)[0, 0])),
        "l-transparency.png": saved(grey, "PNG", transparency=int(np.asarray(grey)[3, 4])),
        "grey16.png": png_bytes(grey16, 16, 0),
        "grey16-pillow.png": saved(Image.fromarray(grey16[..., 0]), "PNG"),
        "rgb16.png": png_bytes(rgb16, 16, 2),
        "rgba16.png": png_bytes(rgb16_alpha, 16, 6),
        "la16.png": png_bytes(rng.integers(0, 65536, (HEIGHT, WIDTH, 2)).astype(np.uint16), 16, 4),
        "grey2.png": png_bytes(rng.integers(0, 4, (HEIGHT, WIDTH, 1)), 2, 0),
        "grey4.png": png_bytes(rng.integers(0, 16, (HEIGHT, WIDTH, 1)), 4, 0),
        "interlaced.png": png_bytes(rgb_noise(4), 8, 2, interlaced=True),
        "interlaced-rgba16.png": png_bytes(rgb16_alpha, 16, 6, interlaced=True),
        "exif-6.png": saved(rgb, "PNG", exif=exif_orientation(6)),
        # JPEG
        "rgb.jpg": saved(rgb, "JPEG", quality=90),
        "rgb-444.jpg": saved(rgb, "JPEG", quality=95, subsampling=0),
        "rgb-422.jpg": saved(rgb, "JPEG", quality=75, subsampling=1),
        "progressive.jpg": saved(rgb, "JPEG", quality=80, progressive=True),
        "l.jpg": saved(grey, "JPEG"),
        "cmyk.jpg": saved(rgb.convert("CMYK"), "JPEG"),
        "mpo.jpg": saved(rgb, "MPO", save_all=True, append_images=[grey.convert("RGB")]),
        **{f"exif-{o}.jpg": saved(rgb, "JPEG", exif=exif_orientation(o)) for o in range(1, 9)},
        # WebP
        "lossy.webp": saved(rgb, "WEBP", quality=80),
        "lossy-rgba.webp": saved(rgba, "WEBP", quality=80),
        "lossless.webp": saved(rgb, "WEBP", lossless=True),
        "lossless-rgba.webp": saved(rgba, "WEBP", lossless=True),
        "animated.webp": animation("WEBP", "RGB"),
        "exif-6.webp": saved(rgb, "WEBP", exif=exif_orientation(6)),
        # GIF
        "p.gif": saved(palette, "GIF"),
        "p-transparency.gif": saved(palette, "GIF", transparency=7),
        "l.gif": saved(grey, "GIF"),
        "interlaced.gif": saved(palette, "GIF", interlace=True),
        "animated.gif": animation("GIF", "P"),
        # TIFF
        "rgb.tif": saved(rgb, "TIFF"),
        "rgb-lzw.tif": saved(rgb, "TIFF", compression="tiff_lzw"),
        "rgb-deflate.tif": saved(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "rgba.tif": saved(rgba, "TIFF"),
        "l.tif": saved(grey, "TIFF"),
        "la.tif": saved(rgba.convert("LA"), "TIFF"),
        "1.tif": saved(rgb.convert("1"), "TIFF"),
        "1-g4.tif": saved(rgb.convert("1"), "TIFF", compression="group4"),
        "grey16.tif": saved(Image.fromarray(grey16[..., 0]), "TIFF"),
        "p.tif": saved(palette, "TIFF"),
        "cmyk.tif": saved(rgb.convert("CMYK"), "TIFF"),
        "pages.tif": saved(rgb, "TIFF", save_all=True, append_images=[grey]),
        **{f"orientation-{o}.tif": saved(rgb, "TIFF", tiffinfo={274: o}) for o in (3, 6, 8)},
        # AVIF
        "rgb.avif": saved(rgb, "AVIF", quality=90),
        "rgba.avif": saved(rgba, "AVIF", quality=90),
        **{f"exif-{o}.avif": saved(rgb, "AVIF", exif=exif_orientation(o)) for o in range(2, 9)},
    }
    return files


def read_with_cpp(cpp, paths: list[Path], out: Path, max_pixels: int = MAX_PIXELS) -> list[dict]:
    """Each file read by the C++ reader: {"width", "height", "rgb", "alpha"} or {"error", "hint"}."""
    out.mkdir()
    done = run(cpp / "audiotoken-rt-cpp-picture-check", out, max_pixels, *paths)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(paths)
    for index, answer in enumerate(answers):
        if "error" not in answer:
            shape = (answer["height"], answer["width"])
            answer["rgb"] = np.fromfile(out / f"{index}.rgb", np.uint8).reshape(*shape, 3)
            answer["alpha"] = np.fromfile(out / f"{index}.alpha", np.uint8).reshape(shape) if answer["alpha"] else None
    return answers


def python_refusal(path: Path, **options) -> str:
    with pytest.raises(ConfigError) as refused:
        load_picture(path, **options)
    return str(refused.value)


def test_every_format_and_mode_reads_as_pillow_does(cpp, tmp_path):
    files = corpus()
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    answers = read_with_cpp(cpp, paths, tmp_path / "out")
    wrong = []
    for path, answer in zip(paths, answers, strict=True):
        want = load_picture(path)
        if "error" in answer:
            wrong.append(f"{path.name}: refused: {answer['error']}")
        elif (answer["width"], answer["height"]) != want.size:
            wrong.append(f"{path.name}: size {answer['width']}x{answer['height']}, Pillow's {want.size}")
        elif (answer["alpha"] is None) != (want.alpha is None):
            wrong.append(f"{path.name}: alpha {answer['alpha'] is not None}, Pillow's {want.alpha is not None}")
        elif not np.array_equal(answer["rgb"], want.rgb):
            diff = np.abs(answer["rgb"].astype(int) - want.rgb.astype(int))
            wrong.append(f"{path.name}: {int(np.count_nonzero(diff))} RGB values differ, by up to {int(diff.max())}")
        elif want.alpha is not None and not np.array_equal(answer["alpha"], want.alpha):
            wrong.append(f"{path.name}: alpha differs")
    assert not wrong, "\n".join(wrong)
    turned = load_picture(tmp_path / "exif-6.jpg")
    assert turned.size == (HEIGHT, WIDTH)  # the orientation was applied: the corpus checks what it claims to


def test_bad_files_are_refused_in_one_line_naming_them(cpp, tmp_path):
    paths = {
        "missing": tmp_path / "missing.png",
        "folder": tmp_path / "folder.png",
        "empty": tmp_path / "empty.png",
        "text": tmp_path / "notes.png",
        "random": tmp_path / "random.jpg",
    }
    paths["folder"].mkdir()
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("not a picture\n")
    paths["random"].write_bytes(np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    answers = read_with_cpp(cpp, list(paths.values()), tmp_path / "out")
    for (kind, path), answer in zip(paths.items(), answers, strict=True):
        assert answer["error"] == python_refusal(path), kind  # Python's words
        assert "\n" not in answer["error"] and answer["hint"]


def test_bmp_is_refused_in_one_line(cpp, tmp_path):
    """Not read yet on the C++ side (picture_file.hpp says why); Python reads it."""
    path = tmp_path / "picture.bmp"
    Image.fromarray(rgb_noise(9)).save(path)
    [answer] = read_with_cpp(cpp, [path], tmp_path / "out")
    assert answer["error"] == f"{path}: BMP pictures are not read by this program (the Python runtime reads them)"
    assert load_picture(path).size == (WIDTH, HEIGHT)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, on a cut TIFF
def test_truncated_files_fail(cpp, tmp_path):
    rgb = Image.fromarray(rgb_noise(7, 64, 48))
    files = {
        "cut.png": saved(rgb, "PNG"),
        "cut.jpg": saved(rgb, "JPEG"),
        "cut-progressive.jpg": saved(rgb, "JPEG", progressive=True),
        "cut.webp": saved(rgb, "WEBP"),
        "cut.gif": saved(rgb.convert("P"), "GIF"),
        "cut.tif": saved(rgb, "TIFF"),
        "cut-lzw.tif": saved(rgb, "TIFF", compression="tiff_lzw"),
        "cut.avif": saved(rgb, "AVIF"),
    }
    paths = []
    for name, data in files.items():
        for fraction in (0.5, 0.9):
            paths.append(tmp_path / f"{fraction}-{name}")
            paths[-1].write_bytes(data[: int(len(data) * fraction)])
    answers = read_with_cpp(cpp, paths, tmp_path / "out")
    for path, answer in zip(paths, answers, strict=True):
        python_refusal(path)  # Pillow fails on it too
        assert answer.get("error", "").startswith(f"{path}: cannot decode the picture ("), (path.name, answer)
        assert answer["error"].endswith("): the file is truncated or corrupt") and "\n" not in answer["error"]


def test_pictures_over_the_limit_are_refused_from_their_header(cpp, tmp_path):
    """Over the default 64 Mi pixels (a header that promises 9000 x 8000 (over 2**26 and under Pillow's decompression-bomb limit), whose pixels are not there: refused
    before any decoding), and over a small limit, in Python's words."""
    small = Image.fromarray(rgb_noise(8))
    huge_png = png_bytes(np.zeros((1, 1, 3), np.uint8), 8, 2).replace(
        chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)),
        chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 8000, 8, 2, 0, 0, 0)),
    )
    jpeg = saved(small, "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    huge_jpeg = jpeg[: sof + 5] + struct.pack(">HH", 9000, 8000) + jpeg[sof + 9 :]
    files = {"huge.png": huge_png, "huge.jpg": huge_jpeg}
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    answers = read_with_cpp(cpp, paths, tmp_path / "out")
    for path, answer in zip(paths, answers, strict=True):
        assert answer["error"] == python_refusal(path), path.name
        assert "9000x8000" in answer["error"] or "8000x9000" in answer["error"]  # JPEG: height first

    small_paths = []
    for format in ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "AVIF"):
        small_paths.append(tmp_path / f"small.{format.lower()}")
        small_paths[-1].write_bytes(saved(small, format))
    answers = read_with_cpp(cpp, small_paths, tmp_path / "out-small", max_pixels=WIDTH * HEIGHT - 1)
    for path, answer in zip(small_paths, answers, strict=True):
        assert answer["error"] == python_refusal(path, max_pixels=WIDTH * HEIGHT - 1), path.name
