"""runtime/cpp/tools/picture_file.cpp, the C++ example's picture reader, against runtime/source_picture.py.

Pictures are written with Pillow (and, for what Pillow does not write, PNG chunks and BMP files put together here)
in every format and mode the Python side reads, then read by ``audiotoken-rt-cpp-picture-check`` (tests/test_cpp.py's
sanitized build, one run for the whole corpus) and by ``load_picture``: the RGB bytes, the alpha (or its absence)
and the size must be equal, pixel for pixel, lossy formats included: Debian's libjpeg-turbo 2.1, libwebp 1.2 and
libavif 0.11 give the same bytes as the newer copies in Pillow's wheel (no tolerance is needed). BMP is read by hand
on the C++ side, so it is held to Pillow further: the layouts Pillow refuses, in its words, and headers changed at
random, read alike or refused alike. Refusals: a missing file, a folder, an empty file, a non-picture and a picture
over the pixel limit (from its header, before its pixels are decoded) in Python's words; truncated files in one line
naming the file.
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


# --- BMP put together by hand: what Pillow does not write (RLE, 16 bits, bit fields, top-down, OS/2 headers) ----


def bmp_bytes(
    pixels: bytes,
    width: int,
    height: int,
    bits: int,
    *,
    header: int = 40,
    compression: int = 0,
    masks: tuple[int, ...] = (),
    palette: bytes = b"",
    colours: int = 0,
) -> bytes:
    """A BMP file: `pixels` as stored (rows, or RLE data) after the file header, an info header of `header` bytes
    (12: the OS/2 core header; a negative `height`: top-down), the bit-field `masks` (inside the info header from 52
    bytes on, after a 40-byte one) and the `palette` (B, G, R entries, and a 0 unless the header is 12 bytes)."""
    if header == 12:
        info = struct.pack("<IHHHH", 12, width, height, 1, bits)
    else:
        fields = (header, width, height, 1, bits, compression, len(pixels), 2835, 2835, colours, 0)
        info = struct.pack("<IiiHHIIiiII", *fields) + struct.pack(f"<{len(masks)}I", *masks)
        info += bytes(max(0, header - len(info)))
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def bmp_rows(samples: np.ndarray, bits: int = 8, *, top_down: bool = False) -> bytes:
    """samples [H, W] (values of `bits` bits, 1, 4 or 8) or [H, W, B] (B bytes a pixel) as BMP rows, each padded
    to 4 bytes, the bottom row first unless `top_down`."""
    rows = []
    for row in samples if top_down else samples[::-1]:
        if bits < 8:
            row_bits = np.unpackbits(row.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - bits :]  # [W, bits]
            packed = np.packbits(row_bits.reshape(-1)).tobytes()
        else:
            packed = row.astype(np.uint8).tobytes()
        rows.append(packed + bytes(-len(packed) % 4))
    return b"".join(rows)


def rle_bytes(indices: np.ndarray, rle4: bool) -> bytes:
    """indices [H, W] (< 16 for RLE4) as RLE8 or RLE4 data, bottom row first: runs of a value (RLE4: of two
    alternating values) as encoded runs, the rest as absolute runs (padded to 16 bits) or runs of one; each row
    ends with an end of line, the bitmap with an end of bitmap."""
    out = bytearray()
    for row in indices[::-1].tolist():
        x = 0
        while x < len(row):
            pair = (row[x], row[x + 1] if x + 1 < len(row) else row[x])
            run = 1
            while x + run < len(row) and run < 255 and row[x + run] == pair[run % 2]:
                run += 1
            if run >= 3 or x + run == len(row):
                out += bytes([run, pair[0] << 4 | pair[1] if rle4 else pair[0]])
                x += run
                continue
            literal = row[x : x + min(255, len(row) - x)]
            count = len(literal)
            if rle4:
                stored = bytes(a << 4 | b for a, b in zip(literal[0::2], [*literal[1::2], 0], strict=False))
            else:
                stored = bytes(literal)
            out += bytes([0, count]) + stored + bytes(len(stored) % 2)
            x += count
        out += b"\0\0"
    return bytes(out + b"\0\1")


def bmp_corpus() -> dict[str, bytes]:
    """BMPs of what Pillow does not write, each read by Pillow as a reader of BMP from Windows or OS/2 would."""
    rng = np.random.default_rng(10)
    bgr = rgb_noise(11)[..., ::-1]  # [H, W, 3] B, G, R
    indices = rng.integers(0, 16, (HEIGHT, WIDTH))  # [H, W]
    runs = np.repeat(rng.integers(0, 16, (HEIGHT, WIDTH // 4 + 1)), 4, axis=1)[:, :WIDTH]  # [H, W]: runs of 4
    runs[::3] = indices[::3]  # some rows without runs: absolute runs
    colours = rng.integers(0, 256, (256, 3), dtype=np.uint8)  # [256, 3] B, G, R
    quad = np.concatenate([colours, np.zeros((256, 1), np.uint8)], axis=1).tobytes()  # B, G, R, 0 entries
    grey_ramp = bytes(np.repeat(np.arange(256, dtype=np.uint8), 4).reshape(256, 4) * [1, 1, 1, 0])
    words = rng.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)  # [H, W] 16-bit pixels
    word_bytes = words.astype("<u2").view(np.uint8).reshape(HEIGHT, WIDTH, 2)  # [H, W, 2]
    quads = rng.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)  # [H, W, 4] 32-bit pixels
    rgb565, rgb555 = (0xF800, 0x7E0, 0x1F), (0x7C00, 0x3E0, 0x1F)
    files = {
        "p4.bmp": bmp_bytes(bmp_rows(indices, 4), WIDTH, HEIGHT, 4, palette=quad[: 16 * 4], colours=16),
        "p1-colours.bmp": bmp_bytes(bmp_rows(indices % 2, 1), WIDTH, HEIGHT, 1, palette=quad[:8], colours=2),
        "p8-past-palette.bmp": bmp_bytes(
            bmp_rows(rng.integers(0, 256, (HEIGHT, WIDTH))), WIDTH, HEIGHT, 8, palette=quad[: 20 * 4], colours=20
        ),
        "grey-ramp-4bit.bmp": bmp_bytes(bmp_rows(indices[:, :3], 4), 3, HEIGHT, 4, palette=grey_ramp[:64]),
        "rle8.bmp": bmp_bytes(rle_bytes(runs * 9, False), WIDTH, HEIGHT, 8, compression=1, palette=quad),
        "rle8-l.bmp": bmp_bytes(rle_bytes(runs * 9, False), WIDTH, HEIGHT, 8, compression=1, palette=grey_ramp),
        "rle8-topdown.bmp": bmp_bytes(rle_bytes(runs[::-1], False), WIDTH, -HEIGHT, 8, compression=1, palette=quad),
        "rle4.bmp": bmp_bytes(rle_bytes(runs, True), WIDTH, HEIGHT, 4, compression=2, palette=quad[:64]),
        # a delta (2 right, 1 up) in a 4 x 3 RLE8: the skipped pixels are index 0
        "rle8-delta.bmp": bmp_bytes(
            bytes([2, 5, 0, 2, 2, 1, 0, 3, 6, 7, 8, 0, 0, 0, 4, 9, 0, 1]), 4, 3, 8, compression=1, palette=quad
        ),
        "rgb555.bmp": bmp_bytes(bmp_rows(word_bytes), WIDTH, HEIGHT, 16),
        "rgb555-bitfields.bmp": bmp_bytes(bmp_rows(word_bytes), WIDTH, HEIGHT, 16, compression=3, masks=rgb555),
        "rgb565-bitfields.bmp": bmp_bytes(bmp_rows(word_bytes), WIDTH, HEIGHT, 16, compression=3, masks=rgb565),
        "rgb565-v4.bmp": bmp_bytes(bmp_rows(word_bytes), WIDTH, HEIGHT, 16, header=108, compression=3, masks=rgb565),
        "bgr-bitfields.bmp": bmp_bytes(bmp_rows(bgr), WIDTH, HEIGHT, 24, compression=3, masks=(0xFF0000, 0xFF00, 0xFF)),
        "bgrx-v5.bmp": bmp_bytes(bmp_rows(quads), WIDTH, HEIGHT, 32, header=124),  # the 4th byte is not alpha
        "xbgr-v2.bmp": bmp_bytes(
            bmp_rows(quads), WIDTH, HEIGHT, 32, header=52, compression=3, masks=(0xFF000000, 0xFF0000, 0xFF00)
        ),
        "bgra-v5.bmp": bmp_bytes(
            bmp_rows(quads), WIDTH, HEIGHT, 32, header=124, compression=3, masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000)
        ),
        "rgba-v3.bmp": bmp_bytes(
            bmp_rows(quads), WIDTH, HEIGHT, 32, header=56, compression=3, masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000)
        ),
        "abgr-v4.bmp": bmp_bytes(
            bmp_rows(quads), WIDTH, HEIGHT, 32, header=108, compression=3, masks=(0xFF000000, 0xFF0000, 0xFF00, 0xFF)
        ),
        "topdown.bmp": bmp_bytes(bmp_rows(bgr, top_down=True), WIDTH, -HEIGHT, 24),
        "topdown-p4.bmp": bmp_bytes(bmp_rows(indices, 4, top_down=True), WIDTH, -HEIGHT, 4, palette=quad[:64]),
        "os2.bmp": bmp_bytes(bmp_rows(bgr), WIDTH, HEIGHT, 24, header=12),
        "os2-p8.bmp": bmp_bytes(bmp_rows(indices * 16), WIDTH, HEIGHT, 8, header=12, palette=colours.tobytes()),
        "os2v2.bmp": bmp_bytes(bmp_rows(bgr), WIDTH, HEIGHT, 24, header=64),
    }
    return files


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
        # BMP: what Pillow writes (RGBA as 32-bit BI_RGB, which it reads back as RGB), and the rest by hand
        "rgb.bmp": saved(rgb, "BMP"),
        "rgba.bmp": saved(rgba, "BMP"),
        "l.bmp": saved(grey, "BMP"),
        "1.bmp": saved(rgb.convert("1"), "BMP"),
        "p.bmp": saved(palette, "BMP"),
        **bmp_corpus(),
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


def test_bmp_layouts_pillow_refuses_are_refused_in_its_words(cpp, tmp_path):
    """What Pillow's BmpImagePlugin does not read, refused with Python's line word for word."""
    pixels = bmp_rows(np.zeros((2, 3, 3), np.uint8))
    palette = bytes(range(64))
    files = {
        "2-bit.bmp": bmp_bytes(bytes(8), 3, 2, 2, palette=palette[:16]),
        "jpeg.bmp": bmp_bytes(pixels, 3, 2, 24, compression=4),
        "header-20.bmp": bmp_bytes(pixels, 3, 2, 24)[:14] + struct.pack("<I", 20) + bytes(60),
        "bitfields-444.bmp": bmp_bytes(bytes(16), 3, 2, 16, compression=3, masks=(0xF00, 0xF0, 0xF)),
        "bitfields-8-bit.bmp": bmp_bytes(bytes(8), 3, 2, 8, compression=3, masks=(0xE0, 0x1C, 0x3)),
        "palette-70000.bmp": bmp_bytes(bytes(8), 3, 2, 8, palette=palette, colours=70000),
        "palette-300.bmp": bmp_bytes(bytes(8), 3, 2, 8, palette=bytes(range(256)) * 5, colours=300),
        "rle8-24-bit.bmp": bmp_bytes(bytes([3, 1, 0, 0, 3, 1, 0, 1]), 3, 2, 24, compression=1),
        "rle8-early-end.bmp": bmp_bytes(bytes([3, 1, 0, 0, 0, 1]), 3, 2, 8, compression=1, palette=palette),
        "width-0.bmp": bmp_bytes(pixels, 0, 2, 24),
        "header-cut.bmp": bmp_bytes(pixels, 3, 2, 24)[:40],
        "masks-cut.bmp": bmp_bytes(b"", 3, 2, 24, compression=3, masks=(0xFF0000,)),
        "file-header-only.bmp": b"BM" + bytes(14),
    }
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    answers = read_with_cpp(cpp, paths, tmp_path / "out")
    for path, answer in zip(paths, answers, strict=True):
        assert answer.get("error") == python_refusal(path), path.name
        assert "\n" not in answer["error"] and answer["hint"]


def test_bmp_headers_changed_at_random_read_or_fail_as_with_pillow(cpp, tmp_path):
    """Bytes of the file and info headers (and the bit-field masks) of each BMP of the corpus changed at random
    (seeded): each file is read as load_picture reads it, or refused where Python refuses it."""
    rng = np.random.default_rng(12)
    paths = []
    for name, data in {**bmp_corpus(), "rgb.bmp": saved(Image.fromarray(rgb_noise(13)), "BMP")}.items():
        for trial in range(40):
            changed = bytearray(data)
            for at in rng.integers(10, 66, rng.integers(1, 4)):
                changed[at] = rng.choice([0, 1, 2, 3, 4, 8, 12, 16, 24, 32, 40, 0x7F, 0xFF, int(rng.integers(256))])
            paths.append(tmp_path / f"{trial}-{name}")
            paths[-1].write_bytes(bytes(changed))
    answers = read_with_cpp(cpp, paths, tmp_path / "out", max_pixels=1 << 20)

    def kind(refusal: str) -> str:  # over a size limit (the C++ reader has no decompression-bomb limit), or the line
        too_big = "over the limit of" in refusal or "decompression-bomb limit" in refusal
        return "too big" if too_big else refusal.split(" (")[0]

    wrong, read = [], 0
    for path, answer in zip(paths, answers, strict=True):
        try:
            want = load_picture(path, max_pixels=1 << 20)
        except ConfigError as refused:
            if "error" not in answer:
                wrong.append(f"{path.name}: read, where Python refuses it: {refused}")
            elif kind(answer["error"]) != kind(str(refused)):
                wrong.append(f"{path.name}: {answer['error']!r}, Python's {str(refused)!r}")
            continue
        read += 1
        if "error" in answer:
            wrong.append(f"{path.name}: refused: {answer['error']}")
        elif (answer["width"], answer["height"]) != want.size or not np.array_equal(answer["rgb"], want.rgb):
            wrong.append(f"{path.name}: pixels differ")
        elif (answer["alpha"] is None) != (want.alpha is None) or (
            want.alpha is not None and not np.array_equal(answer["alpha"], want.alpha)
        ):
            wrong.append(f"{path.name}: alpha differs")
    assert not wrong, "\n".join(wrong)
    assert read > len(paths) // 4  # the changes leave many files readable: the pixels are compared, not only refusals


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
        "cut.bmp": saved(rgb, "BMP"),
        "cut-p.bmp": saved(rgb.convert("P"), "BMP"),
        "cut-rle8.bmp": bmp_bytes(rle_bytes(np.asarray(rgb.convert("L")) // 64, False), 64, 48, 8, compression=1),
        "cut-rle4.bmp": bmp_bytes(rle_bytes(np.asarray(rgb.convert("L")) // 16, True), 64, 48, 4, compression=2),
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
    """Over the default 64 Mi pixels (a header that promises 9000 x 8000, over 2**26 and under Pillow's
    decompression-bomb limit, whose pixels are not there: refused before any decoding), and over a small limit, in
    Python's words."""
    small = Image.fromarray(rgb_noise(8))
    huge_png = png_bytes(np.zeros((1, 1, 3), np.uint8), 8, 2).replace(
        chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)),
        chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 8000, 8, 2, 0, 0, 0)),
    )
    jpeg = saved(small, "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    huge_jpeg = jpeg[: sof + 5] + struct.pack(">HH", 9000, 8000) + jpeg[sof + 9 :]
    huge_bmp = bmp_bytes(b"", 9000, 8000, 24)
    huge_topdown_bmp = bmp_bytes(b"", 9000, -8000, 8, compression=1, palette=bytes(1024))
    files = {"huge.png": huge_png, "huge.jpg": huge_jpeg, "huge.bmp": huge_bmp, "huge-topdown.bmp": huge_topdown_bmp}
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    answers = read_with_cpp(cpp, paths, tmp_path / "out")
    for path, answer in zip(paths, answers, strict=True):
        assert answer["error"] == python_refusal(path), path.name
        assert "9000x8000" in answer["error"] or "8000x9000" in answer["error"]  # JPEG: height first

    small_paths = []
    for format in ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "AVIF", "BMP"):
        small_paths.append(tmp_path / f"small.{format.lower()}")
        small_paths[-1].write_bytes(saved(small, format))
    answers = read_with_cpp(cpp, small_paths, tmp_path / "out-small", max_pixels=WIDTH * HEIGHT - 1)
    for path, answer in zip(small_paths, answers, strict=True):
        assert answer["error"] == python_refusal(path, max_pixels=WIDTH * HEIGHT - 1), path.name
