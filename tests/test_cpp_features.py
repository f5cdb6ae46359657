"""runtime/cpp: what the C++ example program draws beyond one clip's picture, against the Python runtime on the tiny
bundle with the same clips, options and seed: a mix (``generate --mix``), stereo sides (``generate --stereo``, unequal
and equal channels), several sounds in one picture (``compose``: placeholders <1>..<K>, and regions with a layout
and a background) and edits of a picture (``edit``: with and without a mask, another size and aspect than the
bundle's, an RGBA picture, strength 0). Pictures are compared by PSNR (>= 40 dB: fp32 on the CPU, the same engines,
their floating-point sums in other orders); bytes are equal where the arithmetic is exact: strength 0 gives the
picture itself, a mask's black pixels stay the picture's, equal channels draw the plain picture. Then the example's
bad options, one line each, and its --help, within 80 columns. The build is test_cpp.py's (ASan and UBSan).
(On one machine the C++ pictures of stereo, compose and edit came out byte-equal to Python's, a mix 89 dB.)
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from runtime.pipeline import ComposeOptions, EditOptions, GenerationOptions, Pipeline
from tests import test_cpp
from tests.support import psnr

cpp = test_cpp.cpp  # the sanitized build, a session fixture shared with test_cpp.py
run = test_cpp.run
COMMON = ["--seed", 7, "--steps", 4]


@pytest.fixture(scope="module")
def python(tiny_bundle) -> Pipeline:
    return Pipeline.open(tiny_bundle)


@pytest.fixture(scope="module")
def sounds(clips, tmp_path_factory) -> dict:
    """The two real clips, a stereo clip of unequal sides (the first clip left, the second at half level right), and
    one of equal sides."""
    folder = tmp_path_factory.mktemp("cpp-feature-clips")
    first, rate = sf.read(clips[0], dtype="float32")
    second, _ = sf.read(clips[1], dtype="float32")
    n = min(len(first), len(second))
    sf.write(folder / "sides.wav", np.stack([first[:n], 0.5 * second[:n]], axis=1), rate, subtype="FLOAT")
    sf.write(folder / "twins.wav", np.stack([first[:n], first[:n]], axis=1), rate, subtype="FLOAT")
    return {"a": clips[0], "b": clips[1], "sides": folder / "sides.wav", "twins": folder / "twins.wav"}


def example(cpp, *args, check: bool = True):
    return run(cpp / "audiotoken-rt-cpp", *args, check=check)


def closer(ours: Image.Image, theirs: Image.Image, other: Image.Image, what: str) -> None:
    """``ours`` nearer Python's picture than ``other`` (the picture of what ``what`` is not): the tiny bundle's random
    models move a picture only a little with the sound (a mix and its first clip are ~53 dB apart), so a 40 dB
    bound alone would not tell them apart."""
    assert psnr(ours, theirs) > psnr(ours, other), f"{what}: {psnr(ours, theirs):.1f} <= {psnr(ours, other):.1f} dB"


def close(ours: Image.Image, theirs: Image.Image, what: str) -> None:
    assert ours.size == theirs.size and ours.mode == theirs.mode, (
        f"{what}: {ours.size} {ours.mode} vs {theirs.size} {theirs.mode}"
    )
    assert psnr(ours, theirs) >= 40, f"{what}: {psnr(ours, theirs):.1f} dB"


# --- generate: a mix, stereo ---------------------------------------------------------------------------------


def test_a_mix_is_pythons_mix(cpp, tiny_bundle, python, sounds, tmp_path):
    mix = f"{sounds['a']}:0.7,{sounds['b']}:0.3"
    example(cpp, "generate", "--mix", mix, "--engines", tiny_bundle, "--out", tmp_path / "mix.png", *COMMON)
    (theirs,) = python.draw([(sounds["a"], 0.7), (sounds["b"], 0.3)], GenerationOptions(seed=7, steps=4)).pictures
    close(Image.open(tmp_path / "mix.png"), theirs, "mix")
    example(cpp, "generate", sounds["a"], "--engines", tiny_bundle, "--out", tmp_path / "a.png", *COMMON)
    closer(Image.open(tmp_path / "mix.png"), theirs, Image.open(tmp_path / "a.png"), "mix vs clip a")


def test_stereo_sides_are_pythons_and_equal_sides_the_plain_picture(cpp, tiny_bundle, python, sounds, tmp_path):
    options = GenerationOptions(seed=7, steps=4, stereo=True)
    example(
        cpp, "generate", sounds["sides"], "--stereo", "--engines", tiny_bundle, "--out", tmp_path / "s.png", *COMMON
    )
    (theirs,) = python.draw(sounds["sides"], options).pictures
    close(Image.open(tmp_path / "s.png"), theirs, "stereo")
    example(cpp, "generate", sounds["sides"], "--engines", tiny_bundle, "--out", tmp_path / "plain.png", *COMMON)
    closer(Image.open(tmp_path / "s.png"), theirs, Image.open(tmp_path / "plain.png"), "stereo vs plain")

    example(
        cpp, "generate", sounds["twins"], "--stereo", "--engines", tiny_bundle, "--out", tmp_path / "t.png", *COMMON
    )
    example(cpp, "generate", sounds["twins"], "--engines", tiny_bundle, "--out", tmp_path / "t-plain.png", *COMMON)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "t.png")), np.asarray(Image.open(tmp_path / "t-plain.png")))
    (theirs,) = python.draw(sounds["twins"], options).pictures
    close(Image.open(tmp_path / "t.png"), theirs, "stereo of equal channels")


# --- compose -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, options",
    [([], {}), (["--prompt", "a photo of <2> next to <1>"], {"prompt": "a photo of <2> next to <1>"}),
     (["--layout", "left,right"], {"layout": "left,right"}),
     (["--layout", "top,bottom", "--background", "a park at dusk", "--blend", "0.25", "--guidance", "5"],
      {"layout": "top,bottom", "background": "a park at dusk", "blend": 0.25, "guidance": 5.0})],
    ids=["placeholders", "placeholders-prompt", "layout", "layout-background"],
)  # fmt: skip
def test_compose_is_pythons(cpp, tiny_bundle, python, sounds, tmp_path, extra, options):
    clips = [sounds["a"], sounds["b"]]
    example(cpp, "compose", *clips, "--engines", tiny_bundle, "--out", tmp_path / "c.png", *COMMON, *extra)
    (theirs,) = python.draw_compose(clips, ComposeOptions(seed=7, steps=4, **options)).pictures
    close(Image.open(tmp_path / "c.png"), theirs, f"compose {extra}")


# --- edit ----------------------------------------------------------------------------------------------------


def source_picture(folder, width: int, height: int, mode: str):
    """A smooth picture of another size and aspect than the bundle's (64x64), with a varying alpha for RGBA."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 3 % 256], axis=-1)
    pixels = rgb.astype(np.uint8)
    if mode == "RGBA":
        pixels = np.dstack([pixels, (64 + x * 191 // max(width - 1, 1)).astype(np.uint8)])
    path = folder / f"source-{mode}.png"
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def mask_picture(folder, width: int, height: int):
    """White (may change) on the right half, black elsewhere."""
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2 :] = 255
    path = folder / "mask.png"
    Image.fromarray(mask, mode="L").save(path)
    return path, mask


@pytest.mark.parametrize("mode, size, masked", [("RGB", (80, 48), False), ("RGBA", (40, 72), True)])
def test_an_edit_is_pythons_at_the_pictures_size(cpp, tiny_bundle, python, sounds, tmp_path, mode, size, masked):
    picture = source_picture(tmp_path, *size, mode)
    extra, mask, kw = [], None, {}
    if masked:
        mask, black = mask_picture(tmp_path, *size)
        extra, kw = ["--mask", mask, "--feather", 4], {"mask": mask}
    example(cpp, "edit", picture, sounds["a"], "--engines", tiny_bundle, "--out", tmp_path / "e.png", "--strength",
            0.7, *COMMON, *extra)  # fmt: skip
    options = EditOptions(seed=7, steps=4, strength=0.7, feather=4 if masked else 8)
    (theirs,) = python.draw_edit(picture, sounds["a"], options, **kw).pictures
    ours = Image.open(tmp_path / "e.png")
    assert ours.size == size and ours.mode == mode  # back at the picture's own size, alpha kept
    close(ours, theirs, f"edit {mode} {size}")
    source = np.asarray(Image.open(picture))
    if mode == "RGBA":
        assert np.array_equal(np.asarray(ours)[..., 3], source[..., 3])  # the alpha put back as it was
    if masked:
        kept = black == 0
        assert np.array_equal(np.asarray(ours)[kept], source[kept])  # black: exactly the picture's
        assert not np.array_equal(np.asarray(ours)[~kept], source[~kept])  # white: edited


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_an_edit_of_strength_0_is_the_picture_itself(cpp, tiny_bundle, sounds, tmp_path, mode):
    picture = source_picture(tmp_path, 50, 30, mode)
    example(cpp, "edit", picture, sounds["a"], "--engines", tiny_bundle, "--out", tmp_path / "e.png", "--strength", 0,
            "--num-images", 2, *COMMON)  # fmt: skip
    for k in range(2):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"e-{k}.png")), np.asarray(Image.open(picture)))


# --- the example's options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [(["edit", "{picture}", "{clip}", "--strength", "2"], "strength is 2"),
     (["edit", "{picture}", "{clip}", "--feather", "300"], "--feather is 300 pixels"),
     (["edit", "{picture}", "{clip}", "--feather", "99999999999"], "--feather is 99999999999 pixels"),
     (["edit", "{picture}", "{clip}", "--strength", "x"], "--strength expects a number"),
     (["edit", "{clip}", "{clip}"], "not a picture in a format read here"),
     (["edit", "{picture}", "{clip}", "--mask", "{clip}"], "not a picture in a format read here"),
     (["compose", "{clip}", "{clip}", "--layout", "sideways"], "sideways"),
     (["compose", "{clip}", "{clip}", "--layout", "2x2"], "4 regions for 2 sounds"),
     (["compose", "{clip}", "{clip}", "--blend", "0", "--layout", "left,right"], "blend is 0"),
     (["compose", "{clip}", "--background", "a park"], "background needs layout"),
     (["generate", "{clip}", "--mix", "{clip}:0.5"], "a CLIP or a --mix"),
     (["generate", "--mix", "{clip}:x"], "is not CLIP:WEIGHT"),
     (["generate", "--mix", "{clip}:1,{clip}:-1"], "sum to a positive number"),
     (["generate", "--mix", "{clip}:1", "--stereo"], "does not take a --mix"),
     (["generate", "{clip}", "--frob", "1"], "no such option --frob"),
     (["compose", "{clip}", "--strength", "0.5"], "no such option --strength"),
     (["paint", "{clip}"], "unknown command 'paint'"),
     # refused before a path is made for each picture (2^30 of them hung the example) or the value is clamped
     (["generate", "{clip}", "--num-images", "1000000000"], "--num-images is 1000000000; it must be a whole number"),
     (["edit", "{picture}", "{clip}", "--num-images", "0"], "--num-images is 0"),
     (["generate", "{clip}", "--threads", "99999999999999"], "--threads is 99999999999999"),
     (["generate", "{clip}", "--guidance", "nan"], "guidance is NaN"),  # not "inf"
     (["compose", "{clip}", "{clip}", "--eta", "nan", "--scheduler", "ddim"], "eta nan")],
)  # fmt: skip
def test_bad_options_are_one_line(cpp, tiny_bundle, sounds, tmp_path, args, words):
    picture = source_picture(tmp_path, 20, 20, "RGB")
    filled = [str(a).format(picture=picture, clip=sounds["a"]) for a in args]
    done = example(cpp, *filled, "--engines", tiny_bundle, "--out", tmp_path / "o.png", "--steps", 2, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and words in lines[0], done.stderr
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), done.stderr
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("command", [[], ["generate"], ["edit"], ["compose"], ["bench"]])
def test_help_fits_80_columns(cpp, command):
    done = example(cpp, *command, "--help")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("usage: audiotoken-rt-cpp") and max(map(len, lines)) <= 80
    if command and command[0] in ("edit", "compose", "generate"):
        named = {"edit": "--strength", "compose": "--layout", "generate": "--mix"}[command[0]]
        assert any(line.lstrip().startswith(named) for line in lines) and "--engines" in done.stdout
    if command == ["edit"]:  # the formats it reads, not PNG alone
        assert "JPEG" in done.stdout and "TIFF" in done.stdout


def test_the_cpp_wrapper_refuses_what_the_c_api_cannot_see(cpp, tiny_bundle):
    """audiotoken_rt.hpp's vectors: a Picture's rgb not width x height x channels bytes, compose's tokens of
    different lengths (atrt_compose would read past the shorter), and no allocation sized by a num_images or a
    picture the library refuses (2^30 pictures were allocated before the library's check: a bad_alloc, not its
    message). AddressSanitizer is armed: an over-read fails the run."""
    out = run(cpp / "audiotoken-rt-cpp-check", "wrapper-bad-input", tiny_bundle).stdout.splitlines()
    cases = {name: (int(status), " ".join(rest)) for name, status, *rest in (line.split(" ", 2) for line in out)}
    statuses = {name: status for name, (status, _) in cases.items()}
    assert statuses == {
        "draw-huge-num-images": 2, "state-draw-huge-num-images": 2, "compose-uneven-tokens": 1,
        "state-compose-uneven-tokens": 1, "edit-short-rgb": 1, "edit-mask-of-another-size-than-its-rgb": 1,
        "edit-negative-width": 2, "edit-vast-picture": 1, "edit": 0,
    }  # fmt: skip
    assert "num_images is 1073741824" in cases["draw-huge-num-images"][1]
    assert "different lengths" in cases["compose-uneven-tokens"][1]
    assert "rgb holds 767 bytes" in cases["edit-short-rgb"][1]
    assert "picture is -1x1073741824 pixels" in cases["edit-negative-width"][1]
