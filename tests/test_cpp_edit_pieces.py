"""runtime/cpp's building blocks for edit, compose, mixes and --stereo against their Python twins.

Driven through ``audiotoken-rt-cpp-check`` (tests/test_cpp.py's sanitized build): its ``pieces`` subcommand answers
one JSON request per line, so each test sends its whole corpus in one run. Checked against the Python functions
themselves: runtime/regions.py (layouts of every form, bad ones with the same one-line error and hint, the weights
to the bit at odd, one-pixel and extreme sizes, with and without a background, stereo splits), mixes
(runtime/pipeline.py mix_weights, to the bit, and the weighted mean of tokens), the stereo energy (numpy's mean
square, to the bit), the Python text rules the messages rest on (repr, lower, float(), repr and :g of floats), and
the schedulers' img2img (runtime/schedulers.py at a strength: timesteps equal, add_noise at every step and whole
loops within 1e-5, and the strength refusals word for word).
"""

from __future__ import annotations

import json
import math
import os
import unicodedata

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.noise import STEP_NOISE, NoiseStream
from runtime.pipeline import mix_weights
from runtime.regions import parse_layout, region_weights, stereo_boxes
from runtime.sampling import Sampling
from tests import test_cpp
from tests.test_cpp import SD_CONFIG, run

cpp = test_cpp.cpp  # the sanitized build, a session fixture: built once for both modules' tests


def pieces(cpp, requests: list[dict]) -> list[dict]:
    """Each request answered by the C++ side, in order."""
    out = run(cpp / "audiotoken-rt-cpp-check", "pieces", input="".join(json.dumps(r) + "\n" for r in requests))
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(answers) == len(requests)
    return answers


def refusal(call) -> dict | None:
    """The Python call's ConfigError as the C++ driver writes one, or None when it succeeds."""
    try:
        call()
    except ConfigError as e:
        return {"error": str(e), "hint": e.hint or ""}
    return None


def text_request(fn: str, text: str | bytes, **more) -> dict:
    """A request carrying `text`: UTF-8 as JSON text, anything else (undecodable bytes) as hex."""
    if isinstance(text, bytes):
        return {"fn": fn, "text_hex": text.hex(), **more}
    return {"fn": fn, "text_hex": text.encode("utf-8", "surrogatepass").hex(), **more}


def as_python_text(text: str | bytes) -> str:
    """What Python holds for `text`: bytes from a command line are decoded with surrogateescape."""
    return os.fsdecode(text) if isinstance(text, bytes) else text


def f64(value: float) -> str:
    return np.float64(value).tobytes().hex()


# --- layouts -------------------------------------------------------------------------------------------------

LAYOUTS = [
    # named, any case and spacing
    "left,right", "right,left", "top,bottom", "bottom,top", " Left , RIGHT ", "TOP,Bottom",
    # grids
    "1x1", "2x2", "4x4", "1x16", "16x1", "2X3", " 3 x 3 ", "0002x0003", "4x5", "17x1", "0x3", "3x0", "00x2",
    "1x1000", "1000x1000", "99999999x99999999", "9" * 1000 + "x1", "2x", "x2", "x", "2x2x2", "２x2", "2x-1",
    "1.5x2", "2x2;", "2x2,",
    # boxes
    "0,0,1,1", "0,0,0.5,1;0.5,0,1,1", "0,0,.5,1;.5,0,1.,1", "0,0,0.3,0.3;0.7,0.7,1,1",
    "0,0,0.5,0.5;0.5,0,1,0.5;0,0.5,0.5,1;0.5,0.5,1,1", "0,0,1,0.5;0,0.5,1,1", "-0,0,1,1", "+0.0,0,1,1",
    "0,0,1e0,1", "0,0,1E-0,1", "0,0,0.1_0,1", "0,0,0.1__0,1", "0,0,_1,1", "0,0,1_,1", "0,0,0x1,1", "0,0,1,1,",
    "0,0,1", ",0,0,1,1", "", ";", ";;", "0,0,1,1;", "\t0,0,1,1", "0,0,1,1\n", "0,0,١,1", "0,0,inf,1", "0,0,nan,1",
    "0,0,infinity,1", "0,0,1e999,1", "0,1e-400,1,1", "0,1e-310,1,1", "0,0,1,1.0000000001", "0,0,0,1", "0.5,0,0.4,1",
    "0,0,0.6,1;0.5,0,1,1", "0,0,0.5,1;0.5,0,1,1;0,0,0.1,0.1", "0,0,0.5,1;0.5000000001,0,1,1",
    ";".join(f"{k / 17},0,{(k + 1) / 17},1" for k in range(17)),
    ";".join(f"{k / 16},0,{(k + 1) / 16},1" for k in range(16)),
    ";".join(["0,0,1,1"] * 100000),  # many boxes: refused by count before any is read
    # text the messages must quote as Python does
    "it's", 'say "hi"', "it's \"both\"", "back\\slash", "tab\there", "bell\x07", "del\x7f", "nbsp\u00a0",
    "soft\u00adhyphen", "zero\u200bwidth", "line\u2028sep", "émoji 🙂", "東京", "İstanbul", "ΟΔΟΣ", "ΣΑΣ x",
    "Σ", "aΣ", "aΣb", "a'Σ", "x" * 100, "é" * 90, "\U000e0001tag", "\ue000private", b"a\xed\xa0\x80b",
    b"bad\xffbyte", b"\xe2\x82x", b"\xc3", b"0,0,1,1\x80",
]  # fmt: skip


def test_layouts_parse_and_are_refused_as_in_python(cpp):
    requests = [text_request("parse_layout", text) for text in LAYOUTS]
    for text, got in zip(LAYOUTS, pieces(cpp, requests), strict=True):
        python_text = as_python_text(text)
        expected = refusal(lambda t=python_text: parse_layout(t))
        if expected is None:
            boxes = [[b.x0, b.y0, b.x1, b.y1] for b in parse_layout(python_text)]
            assert got == {"boxes": boxes}, (text[:60], got)
        else:
            assert got == expected, text[:60]


WEIGHT_CASES = [
    ("left,right", 64, 64, False, 0.125), ("left,right", 64, 64, True, 0.125), ("2x2", 7, 13, False, 0.125),
    ("4x4", 1, 1, True, 0.125), ("4x4", 1, 1, False, 0.125), ("top,bottom", 1, 64, False, 0.5),
    ("top,bottom", 64, 1, True, 1.0), ("1x16", 3, 200, False, 0.125), ("16x1", 200, 3, True, 0.01),
    ("0,0,0.3,0.3;0.7,0.7,1,1", 48, 80, True, 0.125), ("0,0,0.3,0.3;0.7,0.7,1,1", 48, 80, False, 0.125),
    ("0,0,0.5,0.5", 9, 9, False, 0.125), ("0.2,0.2,0.8,0.8", 9, 9, True, 1e-9), ("0.2,0.2,0.8,0.8", 9, 9, True, 1.0),
    ("0,0,0.51,1;0.51,0,1,1", 5, 5, False, 0.125), ("3x3", 96, 64, True, 0.25), ("1x1", 2, 3, False, 0.125),
    ("0,0,1,1", 64, 64, True, 0.125), ("0.1,0.1,0.2,0.2;0.8,0.8,0.9,0.9", 16, 16, True, 0.3),
]  # fmt: skip


def test_region_weights_are_pythons_to_the_bit(cpp):
    """Every layout form at odd, one-pixel and extreme latent sizes, blend from a hair to the whole side, with and
    without a background: the same float32 weights, or the same refusal of pixels left to no sound."""
    requests = [
        {"fn": "region_weights", "text": layout, "height": h, "width": w, "background": background, "blend": blend}
        for layout, h, w, background, blend in WEIGHT_CASES
    ]
    refused = 0
    for (layout, h, w, background, blend), got in zip(WEIGHT_CASES, pieces(cpp, requests), strict=True):
        boxes = parse_layout(layout)
        expected = refusal(lambda b=boxes, s=(h, w), g=background, e=blend: region_weights(b, s, background=g, blend=e))
        if expected is not None:
            refused += 1
            assert got == expected, layout
            continue
        want = region_weights(boxes, (h, w), background=background, blend=blend)  # [C, 1, h, w]
        weights = np.frombuffer(bytes.fromhex(got["weights"]), np.float32)
        assert weights.tobytes() == want.tobytes(), (layout, h, w, background, blend)
    assert refused >= 2  # the corners without a background, and the one box


def test_stereo_boxes_split_as_in_python(cpp):
    rng = np.random.default_rng(3)
    energies = [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.3, 0.7), (1e-30, 1.0), (5e-324, 5e-324), (1e308, 1e308)]
    energies += [tuple(rng.exponential(size=2) ** 3) for _ in range(40)]
    requests = [{"fn": "stereo_boxes", "left": f64(left), "right": f64(right)} for left, right in energies]
    for (left, right), got in zip(energies, pieces(cpp, requests), strict=True):
        want = [[b.x0, b.y0, b.x1, b.y1] for b in stereo_boxes(left, right)]
        assert got["boxes"] == want, (left, right)


# --- mixes and the stereo energy -----------------------------------------------------------------------------


def test_mix_weights_are_pythons_to_the_bit_and_refused_in_the_same_words(cpp):
    rng = np.random.default_rng(4)
    cases = [[], [1.0], [0.7, 0.3], [1.0, -0.5], [-1.0, 0.5], [0.0, 0.0], [math.nan, 1.0], [math.inf, 1.0],
             [1e308, 1e308], [3.0, 1e-300], [1e-320], [0.1] * 7, [0.1] * 8, [0.1] * 9]  # fmt: skip
    cases += [list(rng.normal(size=n) + 0.5) for n in (2, 3, 16, 17, 129, 300)]
    requests = [{"fn": "mix_weights", "weights": np.asarray(c, np.float64).tobytes().hex()} for c in cases]
    for case, got in zip(cases, pieces(cpp, requests), strict=True):
        with np.errstate(over="ignore"):  # [1e308, 1e308] sums to inf (then weighs 0 each), as in C++
            expected = refusal(lambda c=case: mix_weights(c))
        if expected is not None:
            assert got == expected, case
        else:
            with np.errstate(over="ignore"):
                assert bytes.fromhex(got["weights"]) == mix_weights(case).tobytes(), case


def test_mixed_tokens_are_the_weighted_mean_of_pythons_listen(cpp):
    """Pipeline.listen's np.tensordot of float32 weights and tokens: equal for one sound, within float32 rounding
    (BLAS's order of additions) for several."""
    rng = np.random.default_rng(5)
    cases = [[1.0], [0.7, 0.3], [2.0, -1.0], [0.25] * 4, list(rng.uniform(0.1, 1, 9))]
    requests, wants = [], []
    for weights in cases:
        tokens = rng.normal(size=(len(weights), 1, 768)).astype(np.float32)  # [K, 1, D]
        normalised = mix_weights(weights)
        wants.append(np.tensordot(normalised.astype(np.float32), tokens, axes=1)[0])  # [D]
        requests.append({"fn": "mix_tokens", "weights": normalised.tobytes().hex(), "tokens": tokens.tobytes().hex(),
                         "dim": 768})  # fmt: skip
    for weights, want, got in zip(cases, wants, pieces(cpp, requests), strict=True):
        token = np.frombuffer(bytes.fromhex(got["token"]), np.float32)
        if len(weights) == 1:
            assert token.tobytes() == want.tobytes()
        else:
            assert np.allclose(token, want, rtol=1e-5, atol=1e-6), float(np.abs(token - want).max())


def test_the_stereo_energy_is_numpys_mean_square_to_the_bit(cpp):
    """np.mean(np.square(wave, dtype=np.float64)) as Pipeline.draw_stereo takes it, numpy's pairwise sum included:
    the 10 s window and lengths around its block sizes (8, 128)."""
    rng = np.random.default_rng(6)
    waves = [rng.uniform(-1, 1, n).astype(np.float32) for n in (1, 7, 8, 9, 127, 128, 129, 257, 1000, 8193, 160000)]
    waves.append(np.full(160000, 0.999, np.float32))
    waves.append((rng.normal(size=160000) * 1e-3).astype(np.float32))
    answers = pieces(cpp, [{"fn": "mean_square", "wave": w.tobytes().hex()} for w in waves])
    for wave, got in zip(waves, answers, strict=True):
        want = float(np.mean(np.square(wave, dtype=np.float64)))
        assert bytes.fromhex(got["energy"]) == np.float64(want).tobytes(), len(wave)


# --- Python's text rules -------------------------------------------------------------------------------------


def sample_characters() -> list[str]:
    """Every 61st code point Python's Unicode database assigns (utf8proc's may be newer) but the surrogates, which no
    UTF-8 text holds, and the special ones."""
    chars = [chr(c) for c in range(0, 0x110000, 61) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]
    return chars + ["'", '"', "\\", "\t", "\n", "\r", "\x00", "\x7f", "\x85", "\xa0", "\xad", "\u0130", "\u03a3"]


def test_repr_and_lower_are_pythons(cpp):
    texts = sample_characters() + ["", "'\"", "it's", "aΣ", "aΣ.", "aΣ'b", "ΣΣ", "ΑΣ", "a\u0301Σ", "x" * 200]
    texts += [b"\xff", b"a\xc3", b"\xed\xa0\x80"]  # undecodable bytes (a UTF-8 surrogate too)
    requests = [text_request(fn, t) for t in texts for fn in ("repr", "lower")]
    answers = iter(pieces(cpp, requests))
    wrong = []
    for text in texts:
        python_text = as_python_text(text)
        for want in (repr(python_text), python_text.lower()):
            got = bytes.fromhex(next(answers)["text_hex"]).decode("utf-8", "surrogateescape")
            if got != want:
                wrong.append((python_text, got, want))
    assert not wrong, f"{len(wrong)} of {2 * len(texts)} differ, e.g. {wrong[:5]}"


FLOAT_TEXTS = ["1", " 1 ", "-1", "+1", "1_000", "1__0", "_1", "1_", "1_.5", "1._5", "1.5_0", "1e1_0", "1e_1", "1e5",
               "1E-5", "1e", "1e+", ".5", "5.", ".", "-.5e-3", "inf", "-Infinity", "INF", "nan", "+nan", "-NaN", "in_f",
               "infinit", "0x10", "1e999", "-1e999", "1e-400", "1e-310", "١٢", "\u00a01\u2003", "1 2", "", "  ", "1\n",
               "\x1c1", "1.5e+3_0", "00012", "1d5", "١.٥", "𝟙𝟚", "½", "²", "1,5", "0.1000000000000000055511151231257827"]  # fmt: skip


def test_float_parsing_is_pythons_float(cpp):
    answers = pieces(cpp, [text_request("float", t) for t in FLOAT_TEXTS])
    for text, got in zip(FLOAT_TEXTS, answers, strict=True):
        try:
            want = float(text)
        except ValueError:
            want = None
        if want is None:
            assert got["value"] is None, text
        else:
            assert got["value"] is not None, text
            value = np.frombuffer(bytes.fromhex(got["value"]), np.float64)[0]
            assert np.array_equal(value, want, equal_nan=True) and np.signbit(value) == np.signbit(want), text


def test_float_repr_and_g_are_pythons(cpp):
    rng = np.random.default_rng(7)
    values = [0.0, -0.0, 1.0, 2.0, 0.1, 1 / 3, 1e16, 1e15, 9999999999999998.0, 1e-4, 1e-5, 0.00012345, 123456.0,
              1234567.0, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan, 0.6, 25 * 0.6, 100.0]  # fmt: skip
    values += list(rng.normal(size=30) * 10.0 ** rng.integers(-30, 30, 30))
    requests = [{"fn": fn, "value": f64(v)} for v in values for fn in ("float_repr", "format_g")]
    answers = iter(pieces(cpp, requests))
    for value in values:
        assert next(answers)["text"] == repr(float(value)), value
        assert next(answers)["text"] == f"{value:g}", value


# --- the schedulers' img2img ---------------------------------------------------------------------------------


def img2img_loop(cpp, folder, name, steps, strength, eta=0.0, spacing=None, config=SD_CONFIG):
    """Scheduler ``name`` at ``strength`` in C++ and in runtime.schedulers: timesteps equal, the source noised to
    every step (add_noise: the start, and what a mask keeps after each step) and the whole loop from it within
    1e-5 (1e-6 relative for add_noise)."""
    scheduler = Sampling(name, steps, eta=eta, timestep_spacing=spacing).make_scheduler(config, strength)
    count = len(scheduler.timesteps)
    rng = np.random.default_rng(steps)
    shape = (1, 4, 8, 8)
    noise = rng.standard_normal(shape).astype(np.float32)
    source = (rng.standard_normal(shape) * 0.8).astype(np.float32)
    offsets = rng.standard_normal((count, *shape)).astype(np.float32)
    noised = np.stack([scheduler.add_noise(source, noise, i) for i in range(count)])  # [T, 1, 4, 8, 8]
    latents, history, trajectory = noised[0], None, []
    step_noise = NoiseStream(5, STEP_NOISE)
    for i in range(count):
        eps = np.float32(0.9) * scheduler.scale_model_input(latents, i) + offsets[i]
        latents, history = scheduler.step(eps, i, latents, history, rng=step_noise)
        trajectory.append(latents)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "in.bin").write_bytes(noise.tobytes() + source.tobytes() + offsets.tobytes())
    run(cpp / "audiotoken-rt-cpp-check", "schedule", name, steps, 5, folder / "config.json", folder / "in.bin",
        folder / "out.bin", repr(eta), spacing or "-", repr(strength))  # fmt: skip
    out = (folder / "out.bin").read_bytes()
    timesteps = np.frombuffer(out[: 8 * count], np.float64)
    size = count * noise.size * 4
    got_noised = np.frombuffer(out[8 * count : 8 * count + size], np.float32).reshape(noised.shape)
    got = np.frombuffer(out[8 * count + size :], np.float32).reshape(count, *shape)
    assert np.array_equal(timesteps, np.asarray(scheduler.timesteps, np.float64))
    assert np.allclose(got_noised, noised, rtol=1e-6, atol=0), float(np.abs(got_noised - noised).max())
    error = float(np.abs(got - np.stack(trajectory)).max())
    assert error <= 1e-5, f"{name} at strength {strength}: max |C++ - numpy| = {error:.3g} over {count} steps"
    return count


@pytest.mark.parametrize(
    "name, steps, strength, eta, spacing",
    [("dpm++2m", 25, 0.6, 0.0, None), ("dpm++2m", 20, 0.3, 0.0, "trailing"), ("dpm++2m", 10, 0.99, 0.0, None),
     ("pndm", 50, 0.75, 0.0, None), ("pndm", 10, 0.95, 0.0, None), ("pndm", 5, 0.4, 0.0, "linspace"),
     ("ddim", 50, 0.5, 0.0, None), ("ddim", 12, 0.8, 0.7, "trailing"), ("ddim", 4, 0.25, 1.0, None),
     ("euler", 25, 0.6, 0.0, None), ("euler", 7, 0.58, 0.0, "trailing"), ("euler-a", 20, 0.45, 0.0, "leading"),
     ("lcm", 4, 0.5, 0.0, None), ("lcm", 1, 0.02, 0.0, None), ("lcm", 8, 0.9, 0.0, None),
     ("tcd", 4, 0.5, 0.3, None), ("tcd", 2, 0.58, 1.0, None), ("tcd", 4, 1.0, 0.0, None),
     ("dpm++2m", 1, 1.0, 0.0, None), ("euler", 3, 1 / 3, 0.0, None)],
)  # fmt: skip
def test_img2img_loops_are_the_numpy_loops(cpp, tmp_path, name, steps, strength, eta, spacing):
    count = img2img_loop(cpp, tmp_path, name, steps, strength, eta, spacing)
    if name in ("lcm", "tcd"):
        assert count == steps  # they keep their steps and start lower
    else:  # PNDM's warm-up evaluates one timestep twice
        assert count == int(steps * strength) + (name == "pndm")


@pytest.mark.parametrize(
    "name, steps, strength",
    [("dpm++2m", 25, 0.01), ("ddim", 3, 0.3), ("euler", 1000, 0.0005), ("pndm", 7, 1e-300), ("dpm++2m", 25, 0.0),
     ("euler", 25, 1.5), ("ddim", 25, -0.5), ("pndm", 25, math.nan), ("lcm", 4, 0.05), ("tcd", 8, 0.1),
     ("lcm", 1, 0.01), ("euler-a", 10, 0.09999999999999999)],
)  # fmt: skip
def test_a_strength_leaving_no_step_is_refused_in_pythons_words(cpp, tmp_path, name, steps, strength):
    with pytest.raises(ConfigError) as refused:
        Sampling(name, steps).make_scheduler(SD_CONFIG, strength)
    (tmp_path / "config.json").write_text(json.dumps(SD_CONFIG))
    done = run(cpp / "audiotoken-rt-cpp-check", "schedule", name, steps, 5, tmp_path / "config.json",
               tmp_path / "in.bin", tmp_path / "out.bin", "0.0", "-", repr(strength), check=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"error: {refused.value}", f"hint: {refused.value.hint}"]


# --- the edit's pictures -------------------------------------------------------------------------------------


def picture(rng, width: int, height: int) -> np.ndarray:
    """[H, W, 3] uint8: a gradient with noise and a few saturated pixels, so that the resampler's clipping runs."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), (x + y) % 256], axis=-1)
    noisy = base + rng.integers(-40, 41, (height, width, 3))
    noisy[rng.random((height, width)) < 0.05] = 255
    return np.clip(noisy, 0, 255).astype(np.uint8)


PICTURE_SIZES = [(1, 1), (1, 7), (7, 1), (3, 5), (13, 17), (64, 64), (640, 480), (480, 640), (1000, 10), (10, 1000),
                 (1, 300), (2000, 3), (65, 63)]  # fmt: skip
ENGINE_SIZES = [(64, 64), (96, 64), (64, 96)]  # the tiny bundles' frames and oblong ones (and 512x512 once)


def test_framing_is_pythons_to_the_byte(cpp):
    """Framing.fit, to_engine (Lanczos and mirrored margins), mask_to_engine and from_engine on pictures from one
    pixel to extreme aspect ratios, in square and oblong frames."""
    from runtime.source_picture import Framing

    rng = np.random.default_rng(8)
    cases, requests = [], []
    sizes = [(size, engine) for size in PICTURE_SIZES for engine in ENGINE_SIZES] + [((333, 999), (512, 512))]
    for (width, height), engine in sizes:
        rgb = picture(rng, width, height)
        mask = (rng.random((height, width)) < 0.5).astype(np.float32)
        framing = Framing.fit((width, height), engine)
        edited = picture(rng, *engine)
        cases.append((framing, rgb, mask, edited))
        common = {"picture": [width, height], "engine": list(engine)}
        requests += [{"fn": "fit", **common}, {"fn": "to_engine", **common, "pixels": rgb.tobytes().hex()},
                     {"fn": "mask_to_engine", **common, "pixels": mask.tobytes().hex()},
                     {"fn": "from_engine", **common, "pixels": edited.tobytes().hex()}]  # fmt: skip
    answers = iter(pieces(cpp, requests))
    for framing, rgb, mask, edited in cases:
        assert next(answers) == {"content": list(framing.content_size), "offset": list(framing.offset)}, framing
        assert bytes.fromhex(next(answers)["pixels"]) == framing.to_engine(rgb).tobytes(), framing
        assert bytes.fromhex(next(answers)["pixels"]) == framing.mask_to_engine(mask).tobytes(), framing
        assert bytes.fromhex(next(answers)["pixels"]) == framing.from_engine(edited).tobytes(), framing


def test_lanczos_is_pillows_to_the_byte(cpp):
    """Pillow's resize(LANCZOS) of RGB and greyscale pictures: up, down (by up to 1000x), one axis only, the same size,
    and either order of its two passes."""
    from PIL import Image

    rng = np.random.default_rng(9)
    cases = [((1, 1), (5, 3)), ((3, 2), (1000, 7)), ((1000, 3), (1, 1)), ((999, 999), (512, 512)), ((17, 13), (17, 40)),
             ((17, 13), (40, 13)), ((20, 20), (20, 20)), ((512, 512), (640, 480)), ((7, 300), (3, 1))]  # fmt: skip
    # about the boundary of Pillow 13's pass order (vertical first where the height loses more than twice the pixels
    # the width does)
    cases += [((40, height), (out_w, out_h)) for height in (40, 20) for out_w in range(16, 46, 3)
              for out_h in range(1, height + 3, 3)]  # fmt: skip
    requests, wants = [], []
    for (width, height), out in cases:
        rgb = picture(rng, width, height)
        grey = rgb[..., 1].copy()
        for pixels, mode in ((rgb, "RGB"), (grey, "L")):
            wants.append(np.asarray(Image.fromarray(pixels, mode).resize(out, Image.Resampling.LANCZOS)).tobytes())
            requests.append({"fn": "resize_lanczos", "size": [width, height], "channels": 3 if mode == "RGB" else 1,
                             "out": list(out), "pixels": pixels.tobytes().hex()})  # fmt: skip
    for want, got, request in zip(wants, pieces(cpp, requests), requests, strict=True):
        assert bytes.fromhex(got["pixels"]) == want, (request["size"], request["out"], request["channels"])


def test_engine_tensors_are_pythons(cpp):
    """to_engine_image (diffusers' x / 255 * 2 - 1 in float32) and latent_mask (torch's nearest indices, float32
    scale) at sizes where float32 and float64 pick different rows."""
    from runtime.source_picture import latent_mask, to_engine_image

    rng = np.random.default_rng(10)
    requests, wants = [], []
    for width, height in [(64, 64), (7, 5), (1, 1)]:
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        requests.append({"fn": "to_engine_image", "size": [width, height], "pixels": rgb.tobytes().hex()})
        wants.append(("image", to_engine_image(rgb).tobytes()))
    for (width, height), latent in [((64, 64), (8, 8)), ((512, 512), (64, 64)), ((8, 8), (16, 16)), ((7, 7), (7, 7)),
                                    ((1000, 3), (77, 5)), ((96, 64), (12, 8)), ((5, 5), (3, 13)), ((3, 3), (1000, 1))]:  # fmt: skip
        mask = rng.random((height, width)).astype(np.float32)
        requests.append({"fn": "latent_mask", "size": [width, height], "latent": list(latent),
                         "pixels": mask.tobytes().hex()})  # fmt: skip
        wants.append(("mask", latent_mask(mask, latent[::-1]).tobytes()))
    for (key, want), got in zip(wants, pieces(cpp, requests), strict=True):
        assert bytes.fromhex(got[key]) == want


def test_composite_is_pythons_to_the_byte(cpp):
    """Feather 0, small, large and MAX_FEATHER, masks with islands, all white, one pixel, alpha kept or absent."""
    from runtime.pipeline import MAX_FEATHER
    from runtime.source_picture import composite, load_picture

    rng = np.random.default_rng(11)
    requests, wants = [], []
    for (width, height), kind, feather in [((32, 24), "blobs", 0), ((32, 24), "blobs", 1), ((32, 24), "blobs", 2),
                                           ((32, 24), "blobs", 5), ((40, 40), "square", 8), ((40, 40), "square", 30),
                                           ((40, 40), "white", 4), ((40, 40), "white", MAX_FEATHER), ((1, 1), "white", 3),
                                           ((1, 9), "blobs", 2), ((9, 1), "blobs", 3), ((50, 3), "square", MAX_FEATHER),
                                           ((20, 20), "none", 0), ((20, 20), "dot", 6)]:  # fmt: skip
        rgb, edited = picture(rng, width, height), picture(rng, width, height)
        alpha = rng.integers(0, 256, (height, width), dtype=np.uint8) if feather % 2 else None
        source = load_picture(rgb if alpha is None else np.dstack([rgb, alpha]))
        mask = {"blobs": rng.random((height, width)) < 0.3, "white": np.ones((height, width), bool),
                "square": np.pad(np.ones((height // 2, width // 2), bool), ((height // 4, height - height // 2 - height // 4),
                                                                            (width // 4, width - width // 2 - width // 4))),
                "dot": np.eye(height, width, dtype=bool) & (np.arange(width) == width // 2), "none": None}[kind]  # fmt: skip
        may_change = None if mask is None else mask.astype(np.float32)
        result = np.asarray(composite(edited, source, may_change, feather))
        wants.append(result[..., :3].tobytes())
        if alpha is not None:
            assert np.array_equal(result[..., 3], alpha)
        request = {"fn": "composite", "size": [width, height], "edited": edited.tobytes().hex(),
                   "rgb": rgb.tobytes().hex(), "feather": feather}  # fmt: skip
        if may_change is not None:
            request["mask"] = may_change.tobytes().hex()
        if alpha is not None:
            request["alpha"] = alpha.tobytes().hex()
        requests.append(request)
    for want, got, request in zip(wants, pieces(cpp, requests), requests, strict=True):
        assert bytes.fromhex(got["rgb"]) == want, (request["size"], request["feather"])


def test_masks_are_binarised_and_stretched_as_python_does(cpp):
    """load_mask on pixels: Pillow's grey, alpha as black, >= 50% grey, the nearest stretch and its note, and the
    refusals of an all-black mask and of white parts that vanish in the stretch, in the same words."""
    from runtime.source_picture import load_mask

    rng = np.random.default_rng(12)
    cases = []
    for (width, height), picture_size, with_alpha in [((16, 16), (16, 16), False), ((16, 16), (16, 16), True),
                                                      ((8, 4), (33, 17), False), ((33, 17), (8, 4), True),
                                                      ((1, 1), (5, 5), False), ((100, 1), (3, 3), False)]:  # fmt: skip
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        rgb[rng.random((height, width)) < 0.3] = (128, 127, 129)  # about the 50% grey threshold
        alpha = rng.integers(0, 256, (height, width), dtype=np.uint8) if with_alpha else None
        cases.append((rgb, alpha, picture_size))
    black = np.zeros((4, 4, 3), np.uint8)
    speck = black.copy()
    speck[0, 0] = 255
    cases += [
        (black, None, (4, 4)),
        (speck, None, (2, 2)),
        (np.full((4, 4, 3), 255, np.uint8), np.zeros((4, 4), np.uint8), (4, 4)),
    ]
    requests, wants = [], []
    for rgb, alpha, picture_size in cases:
        pixels = rgb if alpha is None else np.dstack([rgb, alpha])
        try:
            mask = load_mask(pixels, picture_size, name="mask.png")
            wants.append({"mask": mask.may_change.tobytes().hex(), "note": mask.note or ""})
        except ConfigError as e:
            wants.append({"error": str(e), "hint": e.hint})
        request = {"fn": "mask_from_pixels", "size": [rgb.shape[1], rgb.shape[0]], "rgb": rgb.tobytes().hex(),
                   "picture": list(picture_size), "name": "mask.png", "label": "mask.png"}  # fmt: skip
        if alpha is not None:
            request["alpha"] = alpha.tobytes().hex()
        requests.append(request)
    assert sum("error" in want for want in wants) == 3
    assert pieces(cpp, requests) == wants


def test_picture_sizes_are_refused_in_pythons_words(cpp):
    from runtime.source_picture import MAX_PIXELS, _check_size

    cases = [((0, 5), MAX_PIXELS), ((5, 0), MAX_PIXELS), ((9248, 6936), MAX_PIXELS), ((9249, 7256), MAX_PIXELS),
             ((2**31 - 1, 2**31 - 1), MAX_PIXELS), ((100, 100), 9999), ((1, 1), 1), ((65536, 1025), MAX_PIXELS)]  # fmt: skip
    requests = [{"fn": "check_picture_size", "size": list(size), "label": "photo.jpg", "max_pixels": most}
                for size, most in cases]  # fmt: skip
    for (size, most), got in zip(cases, pieces(cpp, requests), strict=True):
        assert got == (refusal(lambda s=size, m=most: _check_size(s, "photo.jpg", m)) or {}), size
