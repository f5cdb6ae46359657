"""Tests of runtime/source_picture.py: the user's picture and mask for `edit`, in (reading, fitting to the engine
frame, engine tensors) and out (back to the picture's size, compositing with the mask, alpha restored).

Pictures are written with Pillow into tmp_path in every mode and format the module reads, and checked against known
pixel values or against Pillow's own decoding. torch and diffusers are the oracles for the engine tensors (the
tests that need them skip without them); the module itself never imports them.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from runtime.errors import ConfigError
from runtime.source_picture import (
    MAX_PIXELS,
    Framing,
    SourcePicture,
    composite,
    latent_mask,
    load_mask,
    load_picture,
    to_engine_image,
)
from tests.support import psnr

ORIENTATION = 0x0112  # the EXIF tag


def save(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)  # [H, W, C] or [H, W] uint8


def smooth(height: int, width: int) -> np.ndarray:
    """A smooth test picture: slow sinusoids in each channel, [H, W, 3] uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [np.sin(x / 37.0 + c) * np.cos(y / 29.0 - c) for c in range(3)]  # 3 x [H, W] in [-1, 1]
    return np.round(127.5 + 100 * np.stack(channels, axis=2)).astype(np.uint8)  # [H, W, 3]


def png_bytes(image: Image.Image) -> bytes:
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    return encoded.getvalue()


def with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` x `height` (with a valid CRC), its image data left as it was."""
    assert png[12:16] == b"IHDR"
    chunk = b"IHDR" + struct.pack(">II", width, height) + png[24:29]  # then bit depth, colour type, ... as they were
    return png[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


def picture_error(source, problem: str, label: str | None = None, **options) -> ConfigError:
    """The ConfigError `load_picture(source)` raises: one line that begins with the file's name and says `problem`."""
    with pytest.raises(ConfigError) as info:
        load_picture(source, **options)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{label if label is not None else source}: "), message
    assert problem in message, message
    assert info.value.hint, "every error says what to do next"
    return info.value


# --- reading pictures: every mode and format ------------------------------------------------------------------


def test_rgb_png_is_read_exactly_with_its_file_digest(tmp_path):
    pixels = noise(30, 50)
    path = save(tmp_path / "photo.png", Image.fromarray(pixels))
    picture = load_picture(path)
    assert isinstance(picture, SourcePicture)
    np.testing.assert_array_equal(picture.rgb, pixels)
    assert picture.alpha is None
    assert picture.size == (50, 30)
    assert picture.name == "photo.png"
    assert picture.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_picture(str(path)).sha256 == picture.sha256
    assert not picture.rgb.flags.writeable


def lossless_cases():
    """(name, PIL image, save options, expected rgb [H, W, 3], expected alpha [H, W] or None): known pixel values."""
    rgb, grey, alpha = noise(12, 20), noise(12, 20, 0, seed=1), noise(12, 20, 0, seed=2)
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    palette = Image.fromarray(noise(12, 20, 0, seed=3) % 4, mode="L").convert("P")  # indices 0..3
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
    palette_rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)[np.asarray(palette)]
    bits = noise(12, 20, 0, seed=4) > 127
    return [
        ("rgb.png", Image.fromarray(rgb), {}, rgb, None),
        ("rgba.png", Image.fromarray(np.dstack([rgb, alpha])), {}, rgb, alpha),
        ("la.png", Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)]), {}, grey_rgb, alpha),
        ("l.png", Image.fromarray(grey), {}, grey_rgb, None),
        ("one-bit.png", Image.fromarray(bits), {}, np.repeat(bits[..., None] * np.uint8(255), 3, axis=2), None),
        ("palette.png", palette, {}, palette_rgb, None),
        ("palette.gif", palette, {}, palette_rgb, None),
        ("transparent.png", palette, {"transparency": 2}, palette_rgb, np.where(np.asarray(palette) == 2, 0, 255)),
        ("rgb.bmp", Image.fromarray(rgb), {}, rgb, None),
        ("rgb.tiff", Image.fromarray(rgb), {}, rgb, None),
        ("rgba.webp", Image.fromarray(np.dstack([rgb, alpha])), {"lossless": True, "exact": True}, rgb, alpha),
    ]


@pytest.mark.parametrize("case", lossless_cases(), ids=lambda case: case[0])
def test_lossless_modes_and_formats_give_their_exact_pixels(tmp_path, case):
    name, image, options, rgb, alpha = case
    picture = load_picture(save(tmp_path / name, image, **options))
    np.testing.assert_array_equal(picture.rgb, rgb)
    if alpha is None:
        assert picture.alpha is None
    else:
        np.testing.assert_array_equal(picture.alpha, alpha)


def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 32896, 65535]], np.uint16)  # Pillow's own convert("L") clips these to 255
    path = save(tmp_path / "deep.png", Image.fromarray(values))
    with Image.open(path) as written:
        assert written.mode == "I;16"
    picture = load_picture(path)
    np.testing.assert_array_equal(picture.rgb[..., 0], [[0, 1, 4, 128, 255]])  # round(v * 255 / 65535)
    np.testing.assert_array_equal(picture.rgb[..., 0], picture.rgb[..., 2])


def test_32_bit_integer_greyscale_is_read_as_16_bit_and_out_of_range_values_refused(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.int32)
    path = save(tmp_path / "int.tiff", Image.fromarray(values, mode="I"))
    with Image.open(path) as written:
        assert written.mode == "I"
    np.testing.assert_array_equal(load_picture(path).rgb[..., 1], [[0, 1, 128, 255]])
    bad = save(tmp_path / "wide.tiff", Image.fromarray(np.array([[0, 70000]], np.int32), mode="I"))
    picture_error(bad, "0..70000")


def test_float_greyscale_is_read_in_0_to_1_and_out_of_range_values_refused(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, 0.25]], np.float32)
    path = save(tmp_path / "float.tiff", Image.fromarray(values, mode="F"))
    with Image.open(path) as written:
        assert written.mode == "F"
    np.testing.assert_array_equal(load_picture(path).rgb[..., 0], [[0, 128, 255, 64]])
    bad = save(tmp_path / "bright.tiff", Image.fromarray(np.array([[0.0, 255.0]], np.float32), mode="F"))
    picture_error(bad, "float pixels must lie in [0, 1]")


def test_cmyk_gives_rgb(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 255]]], np.uint8)  # white, C, M, K
    path = save(tmp_path / "print.tiff", Image.fromarray(cmyk, mode="CMYK"))
    expected = [[[255, 255, 255], [0, 255, 255], [255, 0, 255], [0, 0, 0]]]
    np.testing.assert_array_equal(load_picture(path).rgb, expected)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_in_any_mode_matches_pillows_own_decoding(tmp_path, mode):
    pixels = smooth(40, 56)
    path = save(tmp_path / f"{mode}.jpg", Image.fromarray(pixels).convert(mode), quality=95)
    with Image.open(path) as reference:
        np.testing.assert_array_equal(load_picture(path).rgb, np.asarray(reference.convert("RGB")))
    if mode == "RGB":
        assert psnr(load_picture(path).rgb, pixels) > 35


@pytest.mark.parametrize("extension", ["webp", "avif"])
def test_lossy_webp_and_avif_match_pillows_own_decoding(tmp_path, extension):
    if not features.check(extension):
        pytest.skip(f"this Pillow has no {extension} support")
    pixels = smooth(48, 64)
    path = save(tmp_path / f"photo.{extension}", Image.fromarray(pixels), quality=90)
    with Image.open(path) as reference:
        np.testing.assert_array_equal(load_picture(path).rgb, np.asarray(reference.convert("RGB")))
    assert psnr(load_picture(path).rgb, pixels) > 30


def test_exif_orientation_6_turns_the_picture_clockwise(tmp_path):
    pixels = noise(10, 16)  # stored 16 wide, 10 tall
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    picture = load_picture(save(tmp_path / "phone.png", Image.fromarray(pixels), exif=exif))
    np.testing.assert_array_equal(picture.rgb, np.rot90(pixels, k=-1))  # displayed 10 wide, 16 tall
    assert picture.size == (10, 16)


def test_exif_orientation_6_in_a_phone_jpeg(tmp_path):
    stored = np.zeros((30, 60, 3), np.uint8)  # 60 wide, 30 tall: the left third red, the rest blue
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    picture = load_picture(save(tmp_path / "phone.jpg", Image.fromarray(stored), exif=exif, quality=95))
    assert picture.rgb.shape == (60, 30, 3)  # upright: 30 wide, 60 tall
    top, bottom = picture.rgb[:15].mean(axis=(0, 1)), picture.rgb[25:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 50, top  # the stored left (red) is now at the top
    assert bottom[2] > 200 and bottom[0] < 50, bottom


def test_pil_image_input_is_oriented_and_named_after_its_file(tmp_path):
    pixels = noise(8, 12)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path = save(tmp_path / "held.png", Image.fromarray(pixels), exif=exif)
    with Image.open(path) as image:
        picture = load_picture(image)
    np.testing.assert_array_equal(picture.rgb, np.rot90(pixels, k=-1))
    assert picture.name == "held.png"
    assert load_picture(Image.fromarray(pixels)).name == "picture"
    assert load_picture(Image.fromarray(pixels), name="mine").name == "mine"


def test_arrays_of_every_accepted_shape_and_dtype():
    rgb, grey, alpha = noise(6, 9), noise(6, 9, 0, seed=1), noise(6, 9, 0, seed=2)
    np.testing.assert_array_equal(load_picture(rgb).rgb, rgb)
    np.testing.assert_array_equal(load_picture(grey).rgb, np.repeat(grey[..., None], 3, axis=2))
    picture = load_picture(np.dstack([rgb, alpha]))
    np.testing.assert_array_equal(picture.rgb, rgb)
    np.testing.assert_array_equal(picture.alpha, alpha)
    np.testing.assert_array_equal(load_picture(rgb / np.float32(255)).rgb, rgb)  # float32 in [0, 1]
    np.testing.assert_array_equal(load_picture(rgb.astype(np.float64) / 255).rgb, rgb)
    np.testing.assert_array_equal(load_picture(rgb.astype(np.uint16) * 257).rgb, rgb)
    np.testing.assert_array_equal(load_picture(grey > 127).rgb[..., 0], np.where(grey > 127, 255, 0))
    assert load_picture(rgb).name == "picture"


def test_array_digest_is_of_the_size_and_pixels():
    rgb = noise(4, 6)
    assert load_picture(rgb).sha256 == load_picture(rgb.copy()).sha256
    assert load_picture(rgb).sha256 != load_picture(rgb.reshape(6, 4, 3)).sha256  # same bytes, another size
    changed = rgb.copy()
    changed[0, 0, 0] ^= 1
    assert load_picture(rgb).sha256 != load_picture(changed).sha256
    assert load_picture(rgb).sha256 == load_picture(Image.fromarray(rgb)).sha256


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((4, 5, 2), np.uint8), "shaped [H, W], [H, W, 3] or [H, W, 4], got shape (4, 5, 2)"),
        (np.zeros(7, np.uint8), "got shape (7,)"),
        (np.zeros((4, 5, 3), np.int32), "pixel dtype int32 is not supported"),
        (np.full((4, 5, 3), 1.5, np.float32), "float pixels must lie in [0, 1], found 1.5..1.5"),
        (np.full((4, 5), np.nan, np.float32), "found non-finite values"),
        (np.zeros((0, 5, 3), np.uint8), "5x0 pixels: it is empty"),
    ],
)
def test_bad_arrays_are_one_line_errors(array, problem):
    picture_error(array, problem, label="photo", name="photo")


# --- reading pictures: bad files ------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    picture_error(tmp_path / "nowhere.png", "no such file")


def test_directory(tmp_path):
    picture_error(tmp_path, "is a directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    picture_error(path, "file is empty (0 bytes)")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n" * 20)
    picture_error(path, "not a picture in a format read here")


@pytest.mark.parametrize("extension", ["png", "jpg", "webp", "gif", "tiff"])
@pytest.mark.parametrize("kept", [0.3, 0.7, 0.95])
def test_truncated_files_fail_instead_of_loading_grey(tmp_path, extension, kept):
    whole = save(tmp_path / f"whole.{extension}", Image.fromarray(noise(64, 80)))
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{extension}"
    cut.write_bytes(data[: int(len(data) * kept)])
    picture_error(cut, "")  # one line naming the file; the wording depends on where the cut fell
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("format", ["PNG", "JPEG"])
def test_truncated_png_and_jpeg_say_so(tmp_path, format):
    encoded = io.BytesIO()
    Image.fromarray(noise(64, 80)).save(encoded, format=format)
    cut = tmp_path / f"cut.{format.lower()}"
    cut.write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 2])
    picture_error(cut, "the file is truncated or corrupt")


def test_a_damaged_avif_is_one_line_not_pillows_runtime_error(tmp_path):
    """Pillow's AVIF decoder raises RuntimeError on a damaged file (the property tests found this one: its "iloc" box,
    which says where the image data lies, renamed), where the other decoders raise OSError or SyntaxError."""
    if not features.check("avif"):
        pytest.skip("this Pillow has no avif support")
    whole = save(tmp_path / "whole.avif", Image.fromarray(noise(10, 12)), quality=80).read_bytes()
    damaged = tmp_path / "damaged.avif"
    damaged.write_bytes(whole.replace(b"iloc", b"\0loc", 1))
    picture_error(damaged, "cannot decode the picture (Failed to decode image: Missing or empty image item)")


def test_a_picture_too_large_for_the_memory_left_is_one_line(tmp_path, monkeypatch):
    path = save(tmp_path / "photo.png", Image.fromarray(noise(8, 8)))

    def out_of_memory(image):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", out_of_memory)
    picture_error(path, "not enough memory to decode the picture")


def test_huge_header_is_refused_by_pillows_bomb_check_as_one_line(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(with_ihdr_size(png_bytes(Image.fromarray(noise(8, 8))), 100_000, 100_000))
    limit = Image.MAX_IMAGE_PIXELS
    picture_error(path, "decompression-bomb limit")
    picture_error(path, "decompression-bomb limit", max_pixels=10**12)  # Pillow's error, over twice its limit
    assert Image.MAX_IMAGE_PIXELS == limit, "Pillow's process-wide limit is left as it was"


def test_pillows_bomb_warning_becomes_the_error_too(tmp_path):
    assert Image.MAX_IMAGE_PIXELS is not None
    side = int((1.5 * Image.MAX_IMAGE_PIXELS) ** 0.5)  # between Pillow's warning and its error
    path = tmp_path / "big.png"
    path.write_bytes(with_ihdr_size(png_bytes(Image.fromarray(noise(8, 8))), side, side))
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        picture_error(path, "decompression-bomb limit", max_pixels=10**12)
    assert not escaped, "Pillow's DecompressionBombWarning becomes the error rather than a printed warning"


def test_picture_over_max_pixels_is_refused_from_its_header_before_decoding(tmp_path):
    path = tmp_path / "large.png"
    path.write_bytes(with_ihdr_size(png_bytes(Image.fromarray(noise(8, 8))), 9000, 9000))  # 81 MP, no pixel data
    assert 9000 * 9000 > MAX_PIXELS and 9000 * 9000 < (Image.MAX_IMAGE_PIXELS or 0)
    picture_error(path, "9000x9000 (81 megapixels), over the limit of 67.1 megapixels")  # not "truncated"
    small = save(tmp_path / "small.png", Image.fromarray(noise(100, 100)))
    picture_error(small, "over the limit of 0.005 megapixels", max_pixels=5000)
    assert load_picture(small, max_pixels=10_000).size == (100, 100)


def test_zero_size_pil_image():
    picture_error(Image.new("RGB", (0, 5)), "0x5 pixels: it is empty", label="picture")


def test_unsupported_source_type():
    picture_error(42, "expected a file path, a file's bytes, a PIL image or a numpy array, got int", label="picture")


def test_a_files_bytes_read_as_the_file_with_the_same_checks(tmp_path):
    """What a server receives: the bytes of a PNG are the picture, digested as the file; cut bytes and empty bytes
    are one-line errors naming the input."""
    path = save(tmp_path / "p.png", Image.fromarray(noise(40, 60)))
    data = path.read_bytes()
    from_bytes, from_file = load_picture(data, name="PICTURE"), load_picture(path)
    assert np.array_equal(from_bytes.rgb, from_file.rgb) and from_bytes.sha256 == from_file.sha256
    assert from_bytes.name == "PICTURE"
    picture_error(data[: len(data) // 2], "the file is truncated or corrupt", label="PICTURE", name="PICTURE")
    picture_error(b"", "empty (0 bytes)", label="PICTURE", name="PICTURE")


# --- masks ----------------------------------------------------------------------------------------------------


def test_mask_threshold_is_half_grey(tmp_path):
    grey = np.array([[0, 127, 128, 255]], np.uint8)
    mask = load_mask(save(tmp_path / "mask.png", Image.fromarray(grey)), (4, 1))
    np.testing.assert_array_equal(mask.may_change, [[0, 0, 1, 1]])
    assert mask.may_change.dtype == np.float32
    assert mask.note is None
    assert mask.name == "mask.png"


def test_mask_matches_diffusers_mask_processor(tmp_path):
    pytest.importorskip("torch")
    image_processor = pytest.importorskip("diffusers.image_processor")
    processor = image_processor.VaeImageProcessor(
        vae_scale_factor=8, do_normalize=False, do_binarize=True, do_convert_grayscale=True
    )
    for seed, mode in enumerate(["RGB", "L", "P"]):
        image = Image.fromarray(noise(48, 64, seed=seed)).convert(mode)
        reference = processor.preprocess(image, height=48, width=64).numpy()[0, 0]  # [48, 64] in {0, 1}
        np.testing.assert_array_equal(load_mask(image, (64, 48)).may_change, reference)


def test_transparent_mask_pixels_are_kept(tmp_path):
    rgba = np.full((4, 6, 4), 255, np.uint8)  # white everywhere; the left half fully transparent
    rgba[:, :3, 3] = 0
    mask = load_mask(save(tmp_path / "layer.png", Image.fromarray(rgba)), (6, 4))
    np.testing.assert_array_equal(mask.may_change, np.tile([0, 0, 0, 1, 1, 1], (4, 1)))


def test_mask_of_another_size_is_resized_nearest_with_a_note(tmp_path):
    grey = np.zeros((256, 256), np.uint8)
    grey[:, :128] = 255  # the left half may change
    mask = load_mask(save(tmp_path / "mask.png", Image.fromarray(grey)), (640, 480))
    assert mask.note == "mask.png is 256x256, the picture 640x480: resized to 640x480"
    assert mask.may_change.shape == (480, 640)
    np.testing.assert_array_equal(mask.may_change[:, :320], 1)
    np.testing.assert_array_equal(mask.may_change[:, 320:], 0)


def test_mask_resize_takes_the_pixel_under_each_centre():
    narrowed = load_mask(np.array([[255, 0, 255]], np.uint8), (2, 1))  # centres at 0.75 and 2.25 of 3
    np.testing.assert_array_equal(narrowed.may_change, [[1, 1]])
    widened = load_mask(np.array([[255], [0]], np.uint8), (1, 3))  # centres at 1/3, 1 and 5/3 of 2
    np.testing.assert_array_equal(widened.may_change, [[1], [0], [0]])
    assert widened.note == "mask is 1x2, the picture 1x3: resized to 1x3"


def test_all_black_mask_is_an_error(tmp_path):
    path = save(tmp_path / "black.png", Image.new("L", (8, 8), 0))
    with pytest.raises(ConfigError) as info:
        load_mask(path, (8, 8))
    assert str(info.value).startswith(f"{path}: the mask is all black")
    assert info.value.hint


def test_mask_whose_white_vanishes_in_the_resize_is_an_error(tmp_path):
    grey = np.zeros((100, 100), np.uint8)
    grey[1, 1] = 255  # one white pixel, not under any sample of a 10x10 resize
    path = save(tmp_path / "speck.png", Image.fromarray(grey))
    with pytest.raises(ConfigError) as info:
        load_mask(path, (10, 10))
    assert str(info.value).startswith(f"{path}: its white parts vanish")


def test_mask_file_errors_name_the_file(tmp_path):
    path = tmp_path / "mask.png"
    path.write_text("not a mask")
    with pytest.raises(ConfigError) as info:
        load_mask(path, (8, 8))
    assert str(info.value).startswith(f"{path}: not a picture")


def test_mask_arrays():
    may_change = np.zeros((4, 5), np.float32)
    may_change[1:3, 1:4] = 1
    mask = load_mask(may_change, (5, 4))
    np.testing.assert_array_equal(mask.may_change, may_change)
    assert mask.name == "mask"
    np.testing.assert_array_equal(load_mask(may_change > 0, (5, 4)).may_change, may_change)


# --- framing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("picture", "engine", "content", "offset"),
    [
        ((640, 480), (512, 512), (512, 384), (0, 64)),
        ((480, 640), (512, 512), (384, 512), (64, 0)),
        ((512, 512), (512, 512), (512, 512), (0, 0)),
        ((1024, 1024), (512, 512), (512, 512), (0, 0)),
        ((100, 50), (512, 512), (512, 256), (0, 128)),  # small pictures are scaled up
        ((1000, 1), (512, 512), (512, 1), (0, 255)),
        ((768, 512), (768, 512), (768, 512), (0, 0)),
        ((1000, 1000), (768, 512), (512, 512), (128, 0)),
        ((333, 100), (512, 256), (512, 154), (0, 51)),  # round(100 * 512 / 333) = 154
    ],
)
def test_fit_scales_the_long_side_to_the_frame_and_centres(picture, engine, content, offset):
    framing = Framing.fit(picture, engine)
    assert (framing.content_size, framing.offset) == (content, offset)
    assert framing.to_engine(noise(picture[1], picture[0])).shape == (engine[1], engine[0], 3)


def test_same_size_round_trip_is_the_identity():
    pixels = noise(512, 512)
    framing = Framing.fit((512, 512), (512, 512))
    engine = framing.to_engine(pixels)
    np.testing.assert_array_equal(engine, pixels)
    np.testing.assert_array_equal(framing.from_engine(engine), pixels)
    mask = (noise(512, 512, 0) > 127).astype(np.float32)
    np.testing.assert_array_equal(framing.mask_to_engine(mask), mask)


def test_margins_mirror_the_content():
    framing = Framing.fit((640, 480), (512, 512))
    engine = framing.to_engine(smooth(480, 640))  # content rows 64..447
    content = engine[64:448]
    np.testing.assert_array_equal(engine[:64], content[1:65][::-1])  # top margin: rows 1..64 mirrored
    np.testing.assert_array_equal(engine[448:], content[-65:-1][::-1])


def test_margins_wider_than_the_content_mirror_then_repeat_the_edge():
    framing = Framing.fit((512, 20), (512, 512))  # content 512x20: margins of 246 rows above and below
    pixels = noise(20, 512)
    engine = framing.to_engine(pixels)
    top = framing.offset[1]
    np.testing.assert_array_equal(engine[top : top + 20], pixels)
    np.testing.assert_array_equal(engine[top - 19 : top], pixels[1:20][::-1])  # one mirror image
    np.testing.assert_array_equal(engine[: top - 19], np.broadcast_to(pixels[19], (top - 19, 512, 3)))  # then edge
    bottom = top + 20
    np.testing.assert_array_equal(engine[bottom : bottom + 19], pixels[:19][::-1])
    np.testing.assert_array_equal(engine[bottom + 19 :], np.broadcast_to(pixels[0], (512 - bottom - 19, 512, 3)))


def test_one_pixel_content_repeats_the_edge():
    framing = Framing.fit((1000, 1), (64, 64))
    pixels = noise(1, 1000)
    engine = framing.to_engine(pixels)
    np.testing.assert_array_equal(engine, np.broadcast_to(engine[framing.offset[1]], (64, 64, 3)))


def centroid(rgb: np.ndarray) -> np.ndarray:
    """(x, y) centre of the pure-red marker pixels (red high, green and blue low)."""
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 25) & (rgb[..., 2] < 25)  # [H, W] bool; smooth() stays >= 27
    ys, xs = np.nonzero(red)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize(("width", "height"), [(640, 480), (480, 640), (300, 700)])
def test_round_trip_of_a_non_square_picture_keeps_its_quality_and_framing(width, height):
    pixels = smooth(height, width)
    pixels[: height // 4, : width // 5] = (255, 0, 0)  # a marker block in the top-left, away from the centre
    pixels[-height // 5 :, -width // 6 :] = (0, 255, 0)  # and another colour bottom-right
    framing = Framing.fit((width, height), (512, 512))
    engine = framing.to_engine(pixels)
    scale = framing.content_size[0] / width
    expected = np.array(framing.offset) + centroid(pixels) * scale + (scale - 1) / 2  # pixel centres scale
    (left, top), (content_w, content_h) = framing.offset, framing.content_size
    content = engine[top : top + content_h, left : left + content_w]  # [ch, cw, 3]: the margins mirror the marker
    np.testing.assert_allclose(centroid(content) + framing.offset, expected, atol=1.0)
    back = framing.from_engine(engine)
    assert back.shape == pixels.shape
    np.testing.assert_allclose(centroid(back), centroid(pixels), atol=1.0)
    assert psnr(back, pixels) > 30


def test_mask_to_engine_keeps_the_margins():
    framing = Framing.fit((640, 480), (512, 512))
    may_change = np.ones((480, 640), np.float32)
    engine = framing.mask_to_engine(may_change)
    assert engine.shape == (512, 512) and engine.dtype == np.float32
    np.testing.assert_array_equal(engine[64:448], 1)
    np.testing.assert_array_equal(engine[:64], 0)
    np.testing.assert_array_equal(engine[448:], 0)


def test_mask_to_engine_is_nearest():
    may_change = np.zeros((480, 640), np.float32)
    may_change[:, :320] = 1  # the left half
    engine = Framing.fit((640, 480), (512, 512)).mask_to_engine(may_change)
    np.testing.assert_array_equal(engine[64:448, :256], 1)
    np.testing.assert_array_equal(engine[64:448, 256:], 0)
    assert set(np.unique(engine)) <= {0.0, 1.0}


def test_framing_refuses_arrays_of_the_wrong_shape():
    framing = Framing.fit((640, 480), (512, 512))
    with pytest.raises(ValueError, match=r"expected \[480, 640, 3\] uint8"):
        framing.to_engine(noise(640, 480))
    with pytest.raises(ValueError, match=r"expected \[512, 512, 3\] uint8"):
        framing.from_engine(noise(480, 640))


# --- engine tensors -------------------------------------------------------------------------------------------


def test_to_engine_image_scales_to_minus_one_one():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 255)
    image = to_engine_image(rgb)
    assert image.shape == (1, 3, 2, 3) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0, :, 0, 0], [1, -1, 1])
    np.testing.assert_array_equal(image[0, :, 1, 2], [-1, -1, -1])


def test_to_engine_image_equals_diffusers_preprocess():
    pytest.importorskip("torch")
    image_processor = pytest.importorskip("diffusers.image_processor")
    rgb = noise(64, 48)
    reference = image_processor.VaeImageProcessor(vae_scale_factor=8).preprocess(Image.fromarray(rgb)).numpy()
    np.testing.assert_array_equal(to_engine_image(rgb), reference)  # bit for bit


@pytest.mark.parametrize(
    ("size", "latent"),
    [
        ((512, 512), (64, 64)),
        ((480, 640), (60, 80)),
        ((37, 53), (11, 7)),
        ((10, 6), (3, 5)),
        ((30, 21), (7, 3)),
        ((5, 7), (10, 14)),
        ((7, 9), (20, 31)),
        ((64, 64), (64, 64)),
        ((96, 100), (12, 13)),
        ((1, 9), (4, 2)),
        ((26, 39), (22, 33)),  # sizes where torch's float32 floor(i * in / out) differs from the exact integer one
        ((62, 70), (14, 30)),
        ((2, 3), (82, 123)),
    ],
)
def test_latent_mask_equals_torch_nearest_interpolate(size, latent):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(sum(size) + sum(latent))
    for _ in range(5):
        may_change = rng.random(size).astype(np.float32)  # [h, w]: binarised by both at 0.5
        binary = torch.from_numpy((may_change >= 0.5).astype(np.float32))[None, None]  # [1, 1, h, w]
        reference = torch.nn.functional.interpolate(binary, size=latent).numpy()  # [1, 1, lh, lw]
        np.testing.assert_array_equal(latent_mask(may_change, latent), reference)


def test_latent_mask_of_the_real_engine_size_picks_every_eighth_pixel():
    may_change = (noise(512, 512, 0) > 127).astype(np.float32)
    np.testing.assert_array_equal(latent_mask(may_change, (64, 64))[0, 0], may_change[::8, ::8])


# --- compositing ----------------------------------------------------------------------------------------------


def rectangle_mask(height: int, width: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    may_change = np.zeros((height, width), np.float32)
    may_change[top:bottom, left:right] = 1
    return may_change


@pytest.mark.parametrize("feather", [0, 1, 6])
def test_composite_keeps_every_black_pixel_and_changes_every_white_one(feather):
    source = load_picture(noise(40, 50) // 4)  # dark: 0..63
    edited = np.full((40, 50, 3), 250, np.uint8) - noise(40, 50, seed=5) // 8  # bright: 219..250
    may_change = rectangle_mask(40, 50, 10, 30, 12, 40)
    result = np.asarray(composite(edited, source, may_change, feather))
    black, white = may_change == 0, may_change == 1
    np.testing.assert_array_equal(result[black], source.rgb[black])
    assert np.all(result[white] > source.rgb[white])  # every white pixel moved towards the edit
    inner = rectangle_mask(40, 50, 10 + feather, 30 - feather, 12 + feather, 40 - feather) == 1
    np.testing.assert_array_equal(result[inner], edited[inner])  # full weight `feather` pixels inside


def test_composite_feather_ramps_inside_the_white_region_from_every_side():
    source = load_picture(np.zeros((30, 40, 3), np.uint8))
    edited = np.full((30, 40, 3), 240, np.uint8)
    result = np.asarray(composite(edited, source, rectangle_mask(30, 40, 5, 25, 10, 30), 4))[..., 0]  # [30, 40]
    ramp = [0, 0, 60, 120, 180, 240, 240]  # d / 4 of the way, d the distance to the nearest black pixel
    np.testing.assert_array_equal(result[15, 8:15], ramp)  # from the left
    np.testing.assert_array_equal(result[15, 25:32][::-1], ramp)  # from the right
    np.testing.assert_array_equal(result[3:10, 20], ramp)  # from the top
    np.testing.assert_array_equal(result[20:27, 20][::-1], ramp)  # from the bottom
    np.testing.assert_array_equal(result[5:9, 10:14].diagonal(), [60, 120, 180, 240])  # chessboard distance


def test_composite_treats_the_pictures_own_edges_as_no_border():
    source = load_picture(noise(16, 16))
    edited = noise(16, 16, seed=9)
    np.testing.assert_array_equal(np.asarray(composite(edited, source, np.ones((16, 16), np.float32), 8)), edited)


def test_composite_without_a_mask_is_the_edit_and_restores_alpha():
    rgb, alpha = noise(10, 12), noise(10, 12, 0, seed=1)
    edited = noise(10, 12, seed=2)
    plain = composite(edited, load_picture(rgb), None, 0)
    assert plain.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(plain), edited)
    transparent = composite(edited, load_picture(np.dstack([rgb, alpha])), None, 0)
    assert transparent.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(transparent), np.dstack([edited, alpha]))


def test_composite_with_a_mask_restores_alpha():
    rgb, alpha = noise(10, 12), noise(10, 12, 0, seed=1)
    source = load_picture(np.dstack([rgb, alpha]))
    result = np.asarray(composite(noise(10, 12, seed=2), source, rectangle_mask(10, 12, 2, 8, 2, 8), 2))
    np.testing.assert_array_equal(result[..., 3], alpha)


def test_composite_refuses_a_negative_feather_and_wrong_shapes():
    source = load_picture(noise(10, 12))
    with pytest.raises(ConfigError, match="feather must be a whole number of pixels >= 0, got -1"):
        composite(noise(10, 12), source, None, -1)
    with pytest.raises(ValueError, match="the edited picture"):
        composite(noise(12, 10), source, None, 0)
    with pytest.raises(ValueError, match="the mask"):
        composite(noise(10, 12), source, np.ones((12, 10), np.float32), 0)


def test_the_whole_edit_path_keeps_black_pixels_of_a_non_square_picture(tmp_path):
    picture = load_picture(save(tmp_path / "photo.png", Image.fromarray(smooth(300, 500))))
    grey = np.zeros((300, 500), np.uint8)
    grey[50:200, 100:300] = 255
    mask = load_mask(save(tmp_path / "mask.png", Image.fromarray(grey)), picture.size)
    framing = Framing.fit(picture.size, (512, 512))
    engine = framing.to_engine(picture.rgb)
    assert to_engine_image(engine).shape == (1, 3, 512, 512)
    assert latent_mask(framing.mask_to_engine(mask.may_change), (64, 64)).shape == (1, 1, 64, 64)
    edited = framing.from_engine(255 - engine)  # a stand-in for the diffusion
    result = np.asarray(composite(edited, picture, mask.may_change, 8))
    keep = mask.may_change == 0
    np.testing.assert_array_equal(result[keep], picture.rgb[keep])
    assert np.abs(result[100:150, 150:250].astype(int) - picture.rgb[100:150, 150:250]).mean() > 50
