"""runtime/cpp: the C and C++ host library against the Python runtime it mirrors.

The library is built once per session with CMake into ``.cache/cpp-build/test``, with AddressSanitizer and UBSan
(the test build: any memory error, leak or undefined behaviour in a run fails it), and driven through its
binaries: ``audiotoken-rt-cpp-check`` (noise, tokenizer, schedulers, bad input through the C API) and the example
program ``audiotoken-rt-cpp``. Checked: the noise bit for bit; the tokenizer's ids on a corpus of prompts; the
schedulers' full loops within 1e-5; pictures of the C++ example against the Python CLI (PSNR >= 40 dB, fp32 on the
CPU, several clips, prompts and schedulers); bad input answered by a status and a message, never a crash; the
install tree and its CMake package. Skipped, with the reason, only where the toolchain is missing (`.ci/setup`
installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from runtime.noise import INITIAL_NOISE, STEP_NOISE, NoiseStream
from runtime.picture import read_png_metadata
from runtime.schedulers import make_scheduler
from tests.support import REPO, psnr

SOURCE = REPO / "runtime" / "cpp"
BUILD = REPO / ".cache" / "cpp-build" / "test"
HEADERS = REPO / ".cache" / "onnxruntime-dev" / "usr" / "include" / "onnxruntime"  # .ci/setup puts them there
PKG_CONFIG_MODULES = ("soxr", "sndfile", "libutf8proc", "libpng")
SANITIZERS = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1"}


def onnxruntime_library() -> Path | None:
    """The wheel's ONNX Runtime shared library (libonnxruntime.so.1.x.y), which the build links against."""
    import onnxruntime

    found = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    return found[0] if found else None


def missing_toolchain() -> list[str]:
    """What the C++ build needs and this machine lacks."""
    missing = [tool for tool in ("cmake", "ninja", "c++", "cc", "pkg-config") if shutil.which(tool) is None]
    if shutil.which("pkg-config"):
        missing += [m for m in PKG_CONFIG_MODULES if subprocess.run(["pkg-config", "--exists", m]).returncode != 0]
    if not Path("/usr/include/nlohmann/json.hpp").is_file():
        missing.append("nlohmann-json3-dev")
    headers = Path(os.environ.get("ONNXRUNTIME_INCLUDE_DIR", HEADERS))
    if not (headers / "onnxruntime_c_api.h").is_file():
        missing.append(f"ONNX Runtime headers in {headers}")
    if onnxruntime_library() is None:
        missing.append("the onnxruntime wheel's libonnxruntime.so")
    return missing


@pytest.fixture(scope="session")
def cpp() -> Path:
    """The test build's folder (configured and built once per session; incremental when up to date)."""
    missing = missing_toolchain()
    if missing:
        pytest.skip(f"C++ toolchain missing: {', '.join(missing)} (bash .ci/setup installs it)")
    headers = Path(os.environ.get("ONNXRUNTIME_INCLUDE_DIR", HEADERS))
    configure = ["cmake", "-S", SOURCE, "-B", BUILD, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Debug",
                 "-DAUDIOTOKEN_RT_SANITIZE=ON", f"-DONNXRUNTIME_LIBRARY={onnxruntime_library()}",
                 f"-DONNXRUNTIME_INCLUDE_DIR={headers}"]  # fmt: skip
    for command in (configure, ["cmake", "--build", BUILD, "-j2"]):
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
        assert done.returncode == 0, (
            f"{' '.join(map(str, command))} failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
        )
    return BUILD


def run(binary: Path, *args, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """A test-build binary, sanitizers armed; a sanitizer report fails the test."""
    done = subprocess.run(
        [str(binary), *map(str, args)], input=input, capture_output=True, text=True, env={**os.environ, **SANITIZERS}
    )
    assert "Sanitizer" not in done.stderr and "runtime error:" not in done.stderr, done.stderr[-4000:]
    if check:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


# --- noise ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed, use, count",
    [(0, INITIAL_NOISE, 7), (123456789, STEP_NOISE, 10), (2**63 - 1, INITIAL_NOISE, 3), (42, STEP_NOISE, 100_001)],
)
def test_noise_is_the_python_noise_bit_for_bit(cpp, seed, use, count):
    out = run(cpp / "audiotoken-rt-cpp-check", "noise", seed, use, count).stdout.split()
    got = np.array([int(word, 16) for word in out], dtype=np.uint32)
    want = NoiseStream(seed, use).standard_normal((count,)).view(np.uint32)
    assert np.array_equal(got, want), f"{int(np.sum(got != want))} of {count} values differ"


# --- tokenizer -----------------------------------------------------------------------------------------------


def prompt_corpus() -> list[str]:
    """At least 500 prompts: templates, accents, CJK, emoji, punctuation, whitespace, contractions, numbers, the
    special and placeholder tokens, long prompts; then every 97th assigned code point in a word."""
    rng = np.random.default_rng(0)
    subjects = ["a dog barking", "rain on a tin roof", "Église de Saint-Étienne", "Ünïcödé façade", "Straße in Köln",
                "東京の夜景", "北京烤鸭", "서울의 거리", "Москва зимой", "Αθήνα τη νύχτα ΣΊΣΥΦΟΣ", "القاهرة ليلا",
                "नई दिल्ली", "🐶🎸🔥", "👨‍👩‍👧‍👦 family", "🇯🇵 flag", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "İstanbul ıı",
                "naïve café crème brûlée", "e\u0301 combining", "Ω ohm ℃ Å", "ﬁne ligature", "x² ½ ⅷ",
                "it's I'm we'll they're you've he'd don't", "IT'S LOUD", "'''quoted'''", "a\u00a0non-breaking space",
                "tab\tand\nnewline\r\n", "zero\u200bwidth", "   leading and trailing   ", "UPPER lower MiXeD",
                "3.14159 and 42 and 1,000,000", "#hashtag @mention $100 50% a&b", "...!!!???", "(brackets) [and] {braces}",
                "<|startoftext|> inside", "<|endoftext|> inside", "<|ENDOFTEXT|> upper", "<2> and <3>", "<1> numbered",
                "a <*>< *> <**>", "emoji🙂glued", "mañana", "ǅemal", "ß ẞ", "ﬀ", "Ⅻ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]  # fmt: skip
    templates = ["a photo of <*>", "a photo of <*>, 4k, high resolution", "<*>", "{s} <*>", "<*> {s}",
                 "a painting of {s} with <*>", "{s}", "  {s}  ", "{s}, {s}"]  # fmt: skip
    prompts = [template.replace("{s}", subject) for template in templates for subject in subjects]
    words = [w for s in subjects for w in s.split()] + ["<*>", ",", ".", "!", "4k"]
    for n in (60, 75, 76, 80, 200):  # around CLIP's 77 and far past it
        prompts.append(" ".join(rng.choice(words, n)))
    prompts += ["", " ", "a", "<*>" * 3, "x" * 300, "supercalifragilisticexpialidocious" * 4, "🙂" * 40]
    for c in range(0x20, 0x110000, 97):
        if unicodedata.category(chr(c)) not in ("Cn", "Cs"):  # assigned in every Unicode version involved
            prompts.append(f"a{chr(c)}b {chr(c)} 1{chr(c)}")
    return prompts


def test_tokenizer_ids_are_the_python_ids(cpp, tiny_bundle):
    from tokenizers import Tokenizer

    folder = tiny_bundle / "tokenizer"
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    prompts = prompt_corpus()
    out = run(cpp / "audiotoken-rt-cpp-check", "tokenize", folder, input="".join(json.dumps(p) + "\n" for p in prompts))
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(got) == len(prompts)
    expected = [reference.encode(p).ids for p in prompts]
    wrong = [(p, g, e) for p, g, e in zip(prompts, got, expected, strict=True) if g != e]
    assert not wrong, f"{len(wrong)} of {len(prompts)} prompts differ, e.g. {wrong[:3]}"
    assert len(prompts) >= 500
    assert any(len(g) > 77 for g in got)  # long prompts were in the corpus


# --- schedulers ----------------------------------------------------------------------------------------------

SD_CONFIG = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
             "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}  # fmt: skip


@pytest.mark.parametrize(
    "name, steps, overrides",
    [("dpm++2m", 25, {}), ("dpm++2m", 10, {"prediction_type": "v_prediction"}), ("dpm++2m", 20, {"timestep_spacing": "leading"}),
     ("euler", 25, {}), ("euler", 7, {"timestep_spacing": "trailing"}), ("euler-a", 20, {}),
     ("ddim", 50, {}), ("ddim", 12, {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}),
     ("lcm", 4, {}), ("lcm", 1, {}), ("lcm", 8, {}), ("pndm", 50, {}), ("pndm", 3, {})],
)  # fmt: skip
def test_scheduler_loops_are_the_numpy_loops(cpp, tmp_path, name, steps, overrides):
    """A full loop on a stand-in model (eps = 0.9 * input + a fixed offset per step) in both languages."""
    config = {**SD_CONFIG, **overrides}
    scheduler = make_scheduler(name, config, steps)
    rng = np.random.default_rng(steps)
    shape = (1, 4, 8, 8)
    noise = rng.standard_normal(shape).astype(np.float32)
    offsets = rng.standard_normal((len(scheduler.timesteps), *shape)).astype(np.float32)
    seed, latents, history, trajectory = 5, noise * np.float32(scheduler.init_noise_sigma), None, []
    step_noise = NoiseStream(seed, STEP_NOISE)
    for i in range(len(scheduler.timesteps)):
        eps = np.float32(0.9) * scheduler.scale_model_input(latents, i) + offsets[i]
        latents, history = scheduler.step(eps, i, latents, history, rng=step_noise)
        trajectory.append(latents)
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "in.bin").write_bytes(noise.tobytes() + offsets.tobytes())
    run(cpp / "audiotoken-rt-cpp-check", "schedule", name, steps, seed, tmp_path / "config.json",
        tmp_path / "in.bin", tmp_path / "out.bin")  # fmt: skip
    out = (tmp_path / "out.bin").read_bytes()
    count = len(scheduler.timesteps)
    timesteps = np.frombuffer(out[: 8 * count], np.float64)
    got = np.frombuffer(out[8 * count :], np.float32).reshape(count, *shape)
    assert np.array_equal(timesteps, np.asarray(scheduler.timesteps, np.float64))
    error = float(np.abs(got - np.stack(trajectory)).max())
    assert error <= 1e-5, f"{name}: max |C++ - numpy| = {error:.3g} over {count} steps"


# --- pictures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_set(clips, tmp_path_factory) -> dict[str, Path]:
    """The real 16 kHz mono clips, and one of them as 44.1 kHz stereo float (resampling and downmix in play)."""
    folder = tmp_path_factory.mktemp("cpp-clips")
    samples, rate = sf.read(clips[1], dtype="float32")
    import soxr

    wide = soxr.resample(samples, rate, 44_100)
    stereo = np.stack([wide, 0.5 * wide[::-1]], axis=1)[: 44_100 * 7]  # 7 s: loop-tiled to 10
    sf.write(folder / "stereo44k.wav", stereo, 44_100, subtype="FLOAT")
    return {"clip0": clips[0], "clip1": clips[1], "stereo44k": folder / "stereo44k.wav"}


@pytest.mark.parametrize(
    "clip, scheduler, steps, extra",
    [("clip0", "dpm++2m", 8, []), ("clip1", "euler-a", 6, ["--prompt", "a watercolor of <*> at dusk"]),
     ("stereo44k", "ddim", 5, ["--negative-prompt", "blurry, dark", "--guidance", "5"]),
     ("clip0", "lcm", 4, ["--guidance", "1", "--prompt", "<*>"]), ("stereo44k", "pndm", 4, ["--downmix", "mean"])],
)  # fmt: skip
def test_cpp_pictures_are_the_python_cli_pictures(cpp, tiny_bundle, clip_set, tmp_path, clip, scheduler, steps, extra):
    from audiotoken_rt.cli import app

    path = clip_set[clip]
    common = ["--engines", tiny_bundle, "--seed", 7, "--steps", steps, "--scheduler", scheduler, "--num-images", 2,
              *extra]  # fmt: skip
    run(cpp / "audiotoken-rt-cpp", "generate", path, "--out", tmp_path / "cpp.png", *common)
    result = CliRunner().invoke(app, ["generate", str(path), "--out", str(tmp_path / "py"), *map(str, common)])
    assert result.exit_code == 0, result.output
    for k in range(2):
        ours = Image.open(tmp_path / f"cpp-{k}.png")
        theirs = Image.open(tmp_path / "py" / f"{path.stem}-{k}.png")
        assert read_png_metadata(tmp_path / f"cpp-{k}.png")["seed"] == str(7 + k)
        assert psnr(ours, theirs) >= 40, f"{clip} {scheduler} picture {k}: {psnr(ours, theirs):.1f} dB"
    assert psnr(Image.open(tmp_path / "cpp-0.png"), Image.open(tmp_path / "cpp-1.png")) < 40  # seeds differ


# --- bad input -----------------------------------------------------------------------------------------------

EXPECTED = {  # case -> atrt_status (0 ok, 1 invalid argument, 2 config, 3 audio, 4 bundle)
    "open-null-folder": 1, "open-null-context": 1, "open-missing-folder": 4, "open-unknown-device": 2,
    "open-uninitialised-options": 1, "open": 0, "info-null-context": 1, "info": 0,
    "tokenize-null-prompt": 1, "tokenize-null-ids": 1, "tokenize-no-placeholder": 2, "tokenize-two-placeholders": 2,
    "tokenize-over-77-tokens": 2, "tokenize-invalid-utf8": 2, "tokenize": 0,
    "encode-null-context": 1, "encode-null-audio": 1, "encode-null-token": 1, "encode-small-token": 1,
    "encode-null-samples": 1, "encode-empty": 3, "encode-uninitialised-audio": 1, "encode-no-channels": 3,
    "encode-zero-rate": 3, "encode-nan-rate": 3, "encode-start-past-end": 3, "encode-negative-start": 2,
    "encode-unknown-downmix": 2, "encode-nan-samples": 3, "encode-inf-samples": 3, "encode-stereo-44k": 0, "encode": 0,
    "draw-null-context": 1, "draw-null-token": 1, "draw-short-token": 1, "draw-null-pixels": 1, "draw-small-pixels": 1,
    "draw-nan-token": 1, "draw-unknown-scheduler": 2, "draw-negative-steps": 2, "draw-too-many-steps": 2,
    "draw-low-guidance": 2, "draw-nan-guidance": 2, "draw-negative-seed": 2, "draw-seed-past-the-last": 2,
    "draw-no-images": 2, "draw-template-without-placeholder": 2, "draw-template-over-77-tokens": 2,
    "draw-negative-over-77-tokens": 2, "draw-fast-on-plain-bundle": 2, "draw-uninitialised-options": 1,
    "draw": 0, "generate-nan-samples": 3, "generate": 0,
}  # fmt: skip


def test_bad_input_through_the_c_api_is_a_status_and_a_message(cpp, tiny_bundle):
    out = run(cpp / "audiotoken-rt-cpp-check", "bad-input", tiny_bundle).stdout.splitlines()
    cases = {}
    for line in out:
        name, status, *message = line.split(" ", 2)
        if name in ("seeds", "stage-ms-unet", "stage-ms-null"):
            cases[name] = status
            continue
        cases[name] = int(status)
        assert (int(status) == 0) == (not (message and message[0])), line  # a message exactly on failure
    assert {name: cases.get(name) for name in EXPECTED} == EXPECTED
    assert cases["seeds"] == "1" and cases["stage-ms-unet"] == "positive" and cases["stage-ms-null"] == "0"


def tamper(bundle: Path, folder: Path, how: str) -> Path:
    copy = folder / how
    shutil.copytree(bundle, copy)
    if how == "tampered":
        data = copy / "unet.onnx.data"
        raw = bytearray(data.read_bytes())
        raw[100] ^= 1
        data.write_bytes(bytes(raw))
    elif how == "missing-file":
        (copy / "vae_decoder.onnx").unlink()
    elif how == "bad-json":
        (copy / "manifest.json").write_text("{ not json")
    elif how == "off-contract":
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["engines"]["unet"]["inputs"][0]["shape"][0] = 3
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    "how, words",
    [("tampered", "unet.onnx.data has sha256"), ("missing-file", "vae_decoder.onnx is missing"),
     ("bad-json", "not valid JSON"), ("off-contract", "unet inputs are sample float32 [3, 4, 8, 8]")],
)  # fmt: skip
def test_a_bad_bundle_is_refused_at_open_with_one_message(cpp, tiny_bundle, tmp_path, how, words):
    copy = tamper(tiny_bundle, tmp_path, how)
    out = run(cpp / "audiotoken-rt-cpp-check", "bad-input", copy).stdout.splitlines()
    (line,) = [line for line in out if line.startswith("open ")]
    assert line.startswith("open 4 ") and words in line, line
    if how != "bad-json":
        assert "rebuild" not in line  # the hint is apart from the message
    # the example program says it in one line, and exits 1
    done = run(cpp / "audiotoken-rt-cpp", "generate", REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav",
               "--engines", copy, "--out", tmp_path / "x.png", check=False)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("error: ") and words in done.stderr


def test_the_example_refuses_a_missing_clip_and_an_existing_picture(cpp, tiny_bundle, tmp_path):
    done = run(cpp / "audiotoken-rt-cpp", "generate", tmp_path / "none.wav", "--engines", tiny_bundle,
               "--out", tmp_path / "p.png", check=False)  # fmt: skip
    assert done.returncode == 1 and "none.wav: no such file" in done.stderr
    (tmp_path / "p.png").write_bytes(b"")
    done = run(cpp / "audiotoken-rt-cpp", "generate", REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav",
               "--engines", tiny_bundle, "--out", tmp_path / "p.png", check=False)  # fmt: skip
    assert done.returncode == 1 and "already exists" in done.stderr


def test_bench_reports_time_per_picture(cpp, tiny_bundle, tmp_path):
    run(cpp / "audiotoken-rt-cpp", "bench", REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav", "--engines", tiny_bundle,
        "--steps", 2, "--rounds", 1, "--json", tmp_path / "bench.json")  # fmt: skip
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["total_ms"] > 0 and figures["stages"]["unet"] > 0 and figures["steps"] == 2


# --- install tree and CMake package --------------------------------------------------------------------------

CONSUMER = """
cmake_minimum_required(VERSION 3.18)
project(consumer LANGUAGES CXX)
find_package(audiotoken_rt 0.1 REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE audiotoken_rt::audiotoken_rt)
set_target_properties(consumer PROPERTIES CXX_STANDARD 17)
"""
CONSUMER_MAIN = """
#include <audiotoken_rt.hpp>
#include <cstdio>
int main(int argc, char** argv) {
  audiotoken_rt::Context context(argv[1]);
  auto ids = context.tokenize("a photo of <*>");
  try {
    context.tokenize("no placeholder");
  } catch (const audiotoken_rt::Error& e) {
    std::printf("abi %u ids %lld %lld status %d\\n", atrt_abi_version(), (long long)ids[0], (long long)ids[4], e.status());
  }
  return argc == 2 ? 0 : 1;
}
"""


def test_install_gives_a_cmake_package(cpp, tiny_bundle, tmp_path):
    prefix = tmp_path / "prefix"
    done = subprocess.run(["cmake", "--install", str(cpp), "--prefix", str(prefix)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (prefix / "include" / "audiotoken_rt.h").is_file() and (prefix / "bin" / "audiotoken-rt-cpp").is_file()
    source = tmp_path / "consumer"
    source.mkdir()
    (source / "CMakeLists.txt").write_text(CONSUMER)
    (source / "main.cpp").write_text(CONSUMER_MAIN)
    flags = "-fsanitize=address,undefined"  # the installed library is the test build's
    for command in (
        ["cmake", "-S", source, "-B", tmp_path / "build", "-G", "Ninja", f"-DCMAKE_PREFIX_PATH={prefix}",
         f"-DCMAKE_CXX_FLAGS={flags}", f"-DCMAKE_EXE_LINKER_FLAGS={flags}"],
        ["cmake", "--build", tmp_path / "build"],
    ):  # fmt: skip
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = run(tmp_path / "build" / "consumer", tiny_bundle).stdout
    assert out.strip() == "abi 1 ids 49406 49408 status 2"
