"""runtime/cpp: the C and C++ host library against the Python runtime it mirrors, and against anyone's input.

The library is built once per session with CMake into ``.cache/cpp-build/test``, with AddressSanitizer and UBSan
(the test build: any memory error, leak or undefined behaviour in a run fails it), and driven through its
binaries: ``audiotoken-rt-cpp-check`` (noise, tokenizer, schedulers, the sampling recipe, caches, bad input through
the C API) and the example program ``audiotoken-rt-cpp``. Checked: the noise bit for bit, and its Philox4x64-10
against Random123's known answers; the tokenizer's ids on a corpus of prompts; the schedulers' full loops within
1e-5, DDIM and TCD at an eta and every scheduler at a recipe's timestep spacing too; pictures of the C++ example against
the Python CLI (PSNR >= 40 dB, fp32 on the CPU, several clips, prompts and recipes, and fast on distillation
presets' bundles); the input bounds, the sampling presets and what each scheduler takes equal to the Python runtime's;
a schema 3 manifest read as before;
src/contract.hpp equal to what runtime/contract.py writes, and the engine table at a bundle's sizes equal to the
Python contract's; bad input answered by a status and a one-line message, never a crash or a read past a caller's
buffer; bundles with paths out of the bundle, a bad key, an ONNX file reading external data the manifest does not
hash, or NaN weights refused in one line, naming the field, the file or the stage; the external-data reader against
the Python one, on models and broken bytes; the unconditional cache bounded; four threads drawing at once from one
context, a state each, drawing each the pictures it draws alone (and, marked slow, the same under ThreadSanitizer in
``.cache/cpp-build/tsan``); the install tree and its CMake package.
Marked slow (CI runs them after the default tests): each libFuzzer harness of runtime/cpp/fuzz (a Clang build in
``.cache/cpp-build/fuzz``) for FUZZ_SECONDS. Skipped, with the reason, only where the toolchain is missing
(`.ci/setup` installs it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image
from typer.testing import CliRunner

from runtime.external_data import MalformedProtobuf, external_locations
from runtime.noise import INITIAL_NOISE, STEP_NOISE, NoiseStream
from runtime.picture import read_png_metadata
from runtime.sampling import Sampling
from tests.support import REPO, psnr

SOURCE = REPO / "runtime" / "cpp"
BUILD = REPO / ".cache" / "cpp-build" / "test"
HEADERS = REPO / ".cache" / "onnxruntime-dev" / "usr" / "include" / "onnxruntime"  # .ci/setup puts them there
PICTURE_CODECS = ("libjpeg", "libwebp", "libwebpdemux", "libgif", "libtiff-4", "libavif")  # tools/picture_file.cpp
PKG_CONFIG_MODULES = ("soxr", "sndfile", "libutf8proc", "libpng", *PICTURE_CODECS)
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


def cmake_steps(*commands) -> None:
    """Run CMake's steps (configure, build) in turn; each must succeed, else the test fails with its output's end."""
    for command in commands:
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
        assert done.returncode == 0, (
            f"{' '.join(map(str, command))} failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
        )


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
    cmake_steps(configure, ["cmake", "--build", BUILD, "-j2"])
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


def test_philox_is_random123s_philox4x64_10(cpp):
    """The block function under the noise against Random123's known-answer vectors (counter and key all zeros,
    all ones, and the digits of pi): each line printed back with the outputs computed in C++."""
    kat = REPO / "tests" / "data" / "philox4x64_10_kat.txt"
    expected = [line for line in kat.read_text().splitlines() if line and not line.startswith("#")]
    assert len(expected) == 3
    assert run(cpp / "audiotoken-rt-cpp-check", "philox-kat", kat).stdout.splitlines() == expected


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
     ("lcm", 4, {}), ("lcm", 1, {}), ("lcm", 8, {}), ("pndm", 50, {}), ("pndm", 3, {}),
     ("euler", 1, {}), ("ddim", 1, {"timestep_spacing": "linspace"}), ("dpm++2m", 1, {}),  # 1 step: linspace of one
     ("tcd", 4, {}), ("tcd", 1, {}), ("tcd", 8, {"prediction_type": "v_prediction"})],
)  # fmt: skip
def test_scheduler_loops_are_the_numpy_loops(cpp, tmp_path, name, steps, overrides):
    """A full loop on a stand-in model (eps = 0.9 * input + a fixed offset per step) in both languages."""
    assert_loop_is_numpys(cpp, tmp_path, name, steps, {**SD_CONFIG, **overrides})


@pytest.mark.parametrize(
    "name, steps, eta, spacing",
    [("ddim", 20, 0.5, None), ("ddim", 8, 1.0, "trailing"), ("ddim", 1, 0.3, "trailing"), ("ddim", 12, 0.8, "linspace"),
     ("dpm++2m", 6, 0.0, "trailing"), ("euler", 1, 0.0, "trailing"), ("euler-a", 5, 0.0, "leading"),
     ("pndm", 4, 0.0, "linspace"), ("ddim", 4, 0.0, "trailing"),
     ("tcd", 4, 0.3, None), ("tcd", 8, 1.0, None), ("tcd", 1, 1.0, None), ("tcd", 2, 0.6, None),
     ("tcd", 4, 5 / 11, None), ("tcd", 4, 9 / 23, None)],  # (1 - eta) * 759 floors to 414, 461 (float64: 413, 462)
)  # fmt: skip
def test_a_recipes_eta_and_spacing_loop_as_numpys(cpp, tmp_path, name, steps, eta, spacing):
    """DDIM's eta and TCD's (their fresh noise from the picture's step stream; TCD's intermediate timestep floored in
    float32) and a spacing laid over the config's ("leading" for DDIM and PNDM, "linspace" for the others: SD_CONFIG
    names none) as the recipe does it in both languages."""
    assert_loop_is_numpys(cpp, tmp_path, name, steps, SD_CONFIG, eta=eta, spacing=spacing)


def assert_loop_is_numpys(
    cpp: Path, folder: Path, name: str, steps: int, config: dict, eta: float = 0.0, spacing: str | None = None
) -> None:
    """Scheduler ``name``'s loop of ``steps`` on ``config`` (at a recipe's ``eta`` and ``spacing``) in C++ is
    runtime.schedulers' within 1e-5, timesteps equal."""
    scheduler = Sampling(name, steps, eta=eta, timestep_spacing=spacing).make_scheduler(config)
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
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "in.bin").write_bytes(noise.tobytes() + offsets.tobytes())
    run(cpp / "audiotoken-rt-cpp-check", "schedule", name, steps, seed, folder / "config.json",
        folder / "in.bin", folder / "out.bin", repr(eta), spacing or "-")  # fmt: skip
    out = (folder / "out.bin").read_bytes()
    count = len(scheduler.timesteps)
    timesteps = np.frombuffer(out[: 8 * count], np.float64)
    got = np.frombuffer(out[8 * count :], np.float32).reshape(count, *shape)
    assert np.array_equal(timesteps, np.asarray(scheduler.timesteps, np.float64))
    error = float(np.abs(got - np.stack(trajectory)).max())
    assert error <= 1e-5, f"{name}: max |C++ - numpy| = {error:.3g} over {count} steps"


@pytest.mark.parametrize("name", ["dpm++2m", "pndm", "ddim", "euler", "euler-a", "lcm", "tcd"])
def test_the_steps_bound_is_the_python_runtimes(cpp, tmp_path, name):
    """On Stable Diffusion's schedule ("leading", steps_offset 1): at the most steps the Python runtime takes, the
    C++ loop is numpy's; one more is refused as a config error, as in Python (dpm++2m at 1000 steps put every step on
    one timestep and drew NaN latents)."""
    from runtime.schedulers import max_steps

    config = {**SD_CONFIG, "timestep_spacing": "leading"}
    most = max_steps(name, config)
    assert_loop_is_numpys(cpp, tmp_path, name, most, config)
    done = run(cpp / "audiotoken-rt-cpp-check", "schedule", name, most + 1, 5, tmp_path / "config.json",
               tmp_path / "in.bin", tmp_path / "out.bin", check=False)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "step" in done.stderr, (most, done.stderr)


# --- pictures ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "clip, scheduler, steps, extra",
    [("clip0", "dpm++2m", 8, []), ("clip1", "euler-a", 6, ["--prompt", "a watercolor of <*> at dusk"]),
     ("stereo44k", "ddim", 5, ["--negative-prompt", "blurry, dark", "--guidance", "5"]),
     ("clip0", "lcm", 4, ["--guidance", "1", "--prompt", "<*>"]), ("stereo44k", "pndm", 4, ["--downmix", "mean"]),
     ("clip1", "ddim", 4, ["--eta", "0.5", "--spacing", "trailing"]), ("clip0", "tcd", 4, ["--eta", "0.3"])],
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
        ours_text = read_png_metadata(tmp_path / f"cpp-{k}.png")
        theirs_text = read_png_metadata(tmp_path / "py" / f"{path.stem}-{k}.png")
        recorded = ("seed", "steps", "scheduler", "timestep_spacing")  # what the library completed from the recipe
        assert {key: ours_text.get(key) for key in recorded} == {key: theirs_text.get(key) for key in recorded}
        assert float(ours_text["eta"]) == float(theirs_text["eta"])
        assert ours_text["seed"] == str(7 + k)
        assert psnr(ours, theirs) >= 40, f"{clip} {scheduler} picture {k}: {psnr(ours, theirs):.1f} dB"
    assert psnr(Image.open(tmp_path / "cpp-0.png"), Image.open(tmp_path / "cpp-1.png")) < 40  # seeds differ


@pytest.mark.parametrize("name", ["hyper-2step", "hyper-1step"])
def test_cpp_draws_a_distillation_presets_bundle_with_fast_as_python_does(cpp, tiny_models, clip_set, tmp_path, name):
    """fast on a bundle of a preset (schema 5's recipe.preset; the LoRA fused, TAESD, batch 1) draws the preset's
    recipe, the picture Python draws."""
    from audiotoken.random_models import LORA_STAND_INS
    from audiotoken_rt.cli import app
    from runtime.sampling import PRESETS
    from tests.support import export_tiny

    preset, path = PRESETS[name], clip_set["clip1"]
    lora, taesd = tiny_models / LORA_STAND_INS[preset.lora].folder, tiny_models / "taesd"
    bundle = export_tiny(tiny_models, tmp_path / "bundle", fast=True, preset=name, lora=str(lora), tiny_vae=str(taesd))
    common = ["--engines", bundle, "--seed", 3, "--fast"]
    run(cpp / "audiotoken-rt-cpp", "generate", path, "--out", tmp_path / "cpp.png", *common)
    result = CliRunner().invoke(app, ["generate", str(path), "--out", str(tmp_path / "py"), *map(str, common)])
    assert result.exit_code == 0, result.output
    ours, theirs = tmp_path / "cpp.png", tmp_path / "py" / f"{path.stem}.png"
    recipe = preset.sampling
    expected = {"scheduler": recipe.scheduler, "steps": str(recipe.steps), "timestep_spacing": recipe.timestep_spacing}
    for picture in (ours, theirs):
        text = read_png_metadata(picture)
        assert {key: text.get(key) for key in expected} == expected and float(text["eta"]) == recipe.eta
    assert psnr(Image.open(ours), Image.open(theirs)) >= 40


# --- bounds shared with the Python runtime and the C boundary -----------------------------------------------


def header_defines() -> dict[str, str]:
    """The public C header's #define NAME VALUE lines."""
    header = (SOURCE / "include" / "audiotoken_rt.h").read_text()
    return dict(re.findall(r"^#define (ATRT_\w+) +([^ /\n]+)", header, flags=re.M))


def test_input_bounds_are_the_python_runtimes():
    """The bounds audiotoken_rt.h publishes (and the library and the example use) are the Python runtime's numbers:
    sample rates and the audio window (runtime/audio.py), prompt bytes, guidance and pictures per call
    (runtime/pipeline.py), guidance (runtime/sampling.py) and eta (runtime/schedulers.py), an edit's picture size,
    strength and feather (runtime/source_picture.py, EditOptions), a composition's regions and blend
    (runtime/regions.py). A change on one side fails here until the other side follows."""
    from runtime import audio, contract, pipeline, regions, sampling, schedulers, source_picture

    python = {
        "ATRT_MIN_SAMPLE_RATE": audio.MIN_SAMPLE_RATE,
        "ATRT_MAX_SAMPLE_RATE": audio.MAX_SAMPLE_RATE,
        "ATRT_CLIP_SECONDS": contract.CLIP_SECONDS,
        "ATRT_RESAMPLE_MARGIN_SECONDS": audio.RESAMPLE_MARGIN_SECONDS,
        "ATRT_MAX_PROMPT_BYTES": pipeline.MAX_PROMPT_BYTES,
        "ATRT_MAX_GUIDANCE": sampling.MAX_GUIDANCE,
        "ATRT_MAX_ETA": schedulers.MAX_ETA,
        "ATRT_MAX_NUM_IMAGES": pipeline.MAX_NUM_IMAGES,
        "ATRT_MAX_PICTURE_PIXELS": source_picture.MAX_PIXELS,
        "ATRT_MAX_FEATHER": pipeline.MAX_FEATHER,
        "ATRT_DEFAULT_STRENGTH": pipeline.EditOptions().strength,
        "ATRT_DEFAULT_FEATHER": pipeline.EditOptions().feather,
        "ATRT_MAX_COMPOSE_SOUNDS": regions.MAX_REGIONS,
        "ATRT_DEFAULT_BLEND": regions.DEFAULT_BLEND,
    }
    defines = header_defines()
    assert {name: float(defines[name]) for name in python} == python


def test_bundle_bounds_are_the_python_runtimes():
    """The bounds src/manifest.hpp holds a bundle to are runtime/bundle.py's: a bundle one side opens, the other does."""
    from runtime import bundle

    source = (SOURCE / "src" / "manifest.hpp").read_text()
    constants = dict(re.findall(r"^constexpr [\w:]+ (k\w+) = (\d+);", source, flags=re.M))
    python = {"kMaxPictureSide": bundle.MAX_PICTURE_SIDE, "kMaxTokenDim": bundle.MAX_TOKEN_DIM,
              "kMaxPathBytes": bundle.MAX_PATH_BYTES, "kMaxPartBytes": bundle.MAX_PART_BYTES,
              "kSchemaVersion": bundle.SCHEMA_VERSION}  # fmt: skip
    assert {name: int(constants[name]) for name in python} == python
    assert bundle.READABLE_VERSIONS == tuple(range(1, bundle.SCHEMA_VERSION + 1))  # what C++ reads: 1..kSchemaVersion
    reader = source + (SOURCE / "src" / "manifest.cpp").read_text()
    decoders = set(re.findall(r'decoder ?(?:==|=) ?"([^"]+)"', reader))
    assert decoders and decoders <= set(bundle.DECODERS), decoders  # the decoders C++ names are the manifest's


def test_the_contract_header_is_what_runtime_contract_writes():
    """src/contract.hpp (the library's constants, engine names and engine table) is, byte for byte, what its generator
    writes from runtime/contract.py now: a contract change that leaves the C++ behind fails here, naming the command."""
    from runtime.cpp.tools import contract_header

    header = contract_header.HEADER
    assert header.read_text() == contract_header.render(), (
        f"{header.relative_to(REPO)} is not runtime/contract.py's contract: run `{contract_header.COMMAND}`"
    )


@pytest.mark.parametrize(
    "token_dim, height, width, slots, batches",
    [(768, 512, 512, 1, (2,)), (32, 64, 96, 4, (1,)), (1024, 768, 512, 4, (1, 2)), (16, 8, 16, 1, (1, 2))],
)
def test_the_engine_contracts_are_the_python_runtimes(cpp, token_dim, height, width, slots, batches):
    """Manifest::contracts (the generated engine table with a bundle's sizes put in) is runtime/contract.py's
    engine_contracts at the same dims: one token slot or four, UNet batch 2, 1 or both, several picture sizes."""
    from runtime.contract import Dims, engine_contracts

    sizes = (token_dim, height, width, slots, ",".join(map(str, batches)))
    found = json.loads(run(cpp / "audiotoken-rt-cpp-check", "contracts", *sizes).stdout)
    python = engine_contracts(Dims(token_dim, height, width, batches, slots))
    assert found == {
        name: [[[s.name, s.dtype, list(s.shape)] for s in side] for side in (c.inputs, c.outputs)]
        for name, c in python.items()
    }


def test_the_sampling_presets_and_what_each_scheduler_takes_are_the_python_runtimes(cpp):
    """src/sampling.hpp's recipe of a plain bundle and its distillation presets (in order, the default one first, with
    what a bundle needs for each and the export flags that make one), eta's bound, the spacings, which scheduler takes
    an eta or a spacing, and the recipe fields atrt_draw_options_init leaves unset, printed by the C++ side, are
    runtime/sampling.py's and runtime/schedulers.py's."""
    from runtime import sampling, schedulers

    got = json.loads(run(cpp / "audiotoken-rt-cpp-check", "sampling").stdout)
    assert got["default"] == sampling.DEFAULT.to_json()
    assert next(iter(sampling.PRESETS)) == sampling.DEFAULT_PRESET  # the C++ table's first is the default
    assert got["presets"] == [
        {
            "name": preset.name,
            "lora_name": preset.lora_name,
            "unet_batch": preset.unet_batches[0],
            "tiny_decoder": preset.tiny_vae is not None,
            "needs": preset.needs(),
            "export_flags": preset.export_flags,
            "found": True,
        }
        for preset in sampling.PRESETS.values()
    ]
    assert all(len(preset.unet_batches) == 1 for preset in sampling.PRESETS.values())  # a C++ preset holds one batch
    assert got["max_eta"] == schedulers.MAX_ETA and tuple(got["spacings"]) == schedulers.TIMESTEP_SPACINGS
    assert got["schedulers"] == {
        name: {"eta": name in schedulers.ETA_SCHEDULERS, "spacing": name in schedulers.SPACED_SCHEDULERS}
        for name in schedulers.SCHEDULER_NAMES
    }
    recipe_eta = float(header_defines()["ATRT_RECIPE_ETA"].strip("()"))  # each field left to the recipe (None)
    assert got["unset"] == {"scheduler": True, "steps": 0, "guidance": 0.0, "eta": recipe_eta, "timestep_spacing": True}


def test_a_schema_3_manifest_draws_as_its_schema_4_twin(cpp, tiny_bundle, tmp_path):
    """A bundle exported before eta and the spacing (schema 3) opens in C++ and draws the same picture."""
    old = Path(shutil.copytree(tiny_bundle, tmp_path / "schema3"))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["schema_version"] = 3
    del manifest["recipe"]["eta"], manifest["recipe"]["timestep_spacing"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    clip = REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav"
    for bundle, out in ((tiny_bundle, "new.png"), (old, "old.png")):
        run(cpp / "audiotoken-rt-cpp", "generate", clip, "--engines", bundle, "--out", tmp_path / out, "--seed", 2,
            "--steps", 3)  # fmt: skip
    assert np.array_equal(np.asarray(Image.open(tmp_path / "new.png")), np.asarray(Image.open(tmp_path / "old.png")))


def test_a_schema_4_recipes_eta_and_spacing_are_drawn_as_options_giving_them(cpp, tiny_bundle, tmp_path):
    """C++ reads a schema 4 recipe's eta and timestep spacing: a bundle whose recipe is DDIM with eta 0.5 at trailing
    spacing draws, with no options, the picture the plain bundle draws when the options give that recipe."""
    ddim = Path(shutil.copytree(tiny_bundle, tmp_path / "ddim"))
    manifest = json.loads((ddim / "manifest.json").read_text())
    manifest["recipe"].update(scheduler="ddim", steps=3, eta=0.5, timestep_spacing="trailing")
    (ddim / "manifest.json").write_text(json.dumps(manifest))
    clip = REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav"
    run(cpp / "audiotoken-rt-cpp", "generate", clip, "--engines", ddim, "--out", tmp_path / "recipe.png", "--seed", 2)
    run(cpp / "audiotoken-rt-cpp", "generate", clip, "--engines", tiny_bundle, "--out", tmp_path / "options.png",
        "--seed", 2, "--scheduler", "ddim", "--steps", 3, "--eta", 0.5, "--spacing", "trailing")  # fmt: skip
    recipe, options = (np.asarray(Image.open(tmp_path / name)) for name in ("recipe.png", "options.png"))
    assert np.array_equal(recipe, options)
    plain = tmp_path / "plain.png"  # and eta and spacing change the picture (else the test above proves nothing)
    run(cpp / "audiotoken-rt-cpp", "generate", clip, "--engines", tiny_bundle, "--out", plain, "--seed", 2,
        "--scheduler", "ddim", "--steps", 3)  # fmt: skip
    assert not np.array_equal(recipe, np.asarray(Image.open(plain)))


def test_every_c_entry_point_is_noexcept():
    """No exception crosses the C boundary: every ATRT_API function is declared ATRT_NOEXCEPT (noexcept to C++
    callers), and the compiler then holds each definition in c_api.cpp to it."""
    header = (SOURCE / "include" / "audiotoken_rt.h").read_text()
    assert "#define ATRT_NOEXCEPT noexcept" in header
    declarations = re.findall(r"^ATRT_API [^;]*;", header, flags=re.M)
    assert len(declarations) >= 17
    assert [d for d in declarations if not d.endswith("ATRT_NOEXCEPT;")] == []


def test_lru_cache_forgets_the_least_recently_used(cpp):
    out = run(cpp / "audiotoken-rt-cpp-check", "lru").stdout.splitlines()
    assert out == ["a -", "b 4", "c 3", "size 2"]  # a was refreshed, so b went first; then a, the oldest


def test_the_unconditional_cache_is_bounded(cpp, tiny_bundle):
    """Every new negative prompt used to stay in the cache for good: a client could grow it without end. Now it
    keeps as many as the Python pipeline's (UNCOND_CACHE_SIZE)."""
    from runtime.pipeline import UNCOND_CACHE_SIZE

    out = run(cpp / "audiotoken-rt-cpp-check", "uncond-cache", tiny_bundle).stdout.splitlines()
    assert out[0] == f"capacity {UNCOND_CACHE_SIZE}"
    sizes = [int(line.removeprefix("size ")) for line in out[1:]]
    assert sizes == [min(k, UNCOND_CACHE_SIZE) for k in range(1, UNCOND_CACHE_SIZE + 3)]


# --- bad input -----------------------------------------------------------------------------------------------

EXPECTED = {  # case -> atrt_status (0 ok, 1 invalid argument, 2 config, 3 audio, 4 bundle)
    "open-null-folder": 1, "open-null-context": 1, "open-missing-folder": 4, "open-unknown-device": 2,
    "open-uninitialised-options": 1, "open": 0, "info-null-context": 1, "info": 0,
    "tokenize-null-prompt": 1, "tokenize-null-ids": 1, "tokenize-no-placeholder": 2, "tokenize-two-placeholders": 2,
    "tokenize-over-77-tokens": 2, "tokenize-invalid-utf8": 2, "tokenize-over-the-byte-bound": 2, "tokenize": 0,
    "encode-null-context": 1, "encode-null-audio": 1, "encode-null-token": 1, "encode-small-token": 1,
    "encode-null-samples": 1, "encode-empty": 3, "encode-uninitialised-audio": 1, "encode-no-channels": 3,
    "encode-zero-rate": 3, "encode-1hz-rate": 3, "encode-rate-below-bound": 3, "encode-rate-above-bound": 3,
    "encode-rate-at-bound": 0, "encode-reads-only-the-window": 0, "encode-nan-rate": 3, "encode-start-past-end": 3,
    "encode-negative-start": 2, "encode-unknown-downmix": 2, "encode-nan-samples": 3, "encode-inf-samples": 3,
    "encode-stereo-44k": 0, "encode": 0,
    "draw-null-context": 1, "draw-null-token": 1, "draw-short-token": 1, "draw-long-token": 1, "draw-huge-token": 1,
    "draw-null-pixels": 1, "draw-small-pixels": 1,
    "draw-nan-token": 1, "draw-unknown-scheduler": 2, "draw-negative-steps": 2, "draw-too-many-steps": 2,
    "draw-dpm-at-1000-steps": 2,
    "draw-low-guidance": 2, "draw-guidance-over-the-bound": 2, "draw-infinite-guidance": 2, "draw-too-many-images": 2,
    "draw-negative-over-the-byte-bound": 2, "draw-nan-guidance": 2, "draw-negative-seed": 2,
    "draw-seed-past-the-last": 2,
    "draw-no-images": 2, "draw-template-without-placeholder": 2, "draw-template-over-77-tokens": 2,
    "draw-negative-over-77-tokens": 2, "draw-fast-on-plain-bundle": 2, "draw-uninitialised-options": 1,
    "info-before-eta": 0, "draw-eta-without-ddim": 2, "draw-unknown-spacing": 2, "draw-eta-over-the-bound": 2,
    "draw-nan-eta": 2, "draw-negative-eta": 2, "draw-ddim-eta-trailing": 0, "draw-spacing-for-lcm": 2,
    "draw-options-before-eta": 0, "resolve-null-resolved": 1, "resolve-fast-on-plain-bundle": 2, "resolve": 0,
    "resolve-ddim": 0,
    "draw": 0, "generate-nan-samples": 3, "generate": 0,
    "state-new-null-context": 1, "state-new-null-state": 1, "state-new": 0, "state-encode-null-state": 1,
    "state-encode-null-audio": 1, "state-encode-small-token": 1, "state-encode-uninitialised-audio": 1,
    "state-encode": 0, "state-draw-null-state": 1, "state-draw-short-token": 1, "state-draw-small-pixels": 1,
    "state-draw-uninitialised-options": 1, "state-draw-options-before-eta": 0, "state-generate-nan-guidance": 2,
    "state-generate-null-state": 1, "state-generate-null-audio": 1, "state-generate": 0,
    "state-generate-after-close": 0,
}  # fmt: skip
EXPECTED_FEATURES = {  # mix, compose, edit and stereo through the C API
    "mix-null-tokens": 1, "mix-null-weights": 1, "mix-no-tokens": 2, "mix-zero-dim": 1,
    "mix-weights-summing-to-zero": 2, "mix-nan-weight": 2, "mix-inf-token": 1, "mix": 0,
    "compose-null-tokens": 1, "compose-no-tokens": 2, "compose-too-many-tokens": 2, "compose-short-token": 1,
    "compose-small-pixels": 1, "compose-five-sounds-four-slots": 2, "compose-stray-placeholder": 2,
    "compose-missing-placeholder": 2, "compose-stereo": 2, "compose-bad-layout": 2, "compose-regions-not-sounds": 2,
    "compose-uncovered-without-background": 2, "compose-zero-blend": 2, "compose-nan-blend": 2,
    "compose-background-without-layout": 2, "compose-background-over-77-tokens": 2,
    "compose-uninitialised-options": 1, "compose": 0, "compose-null-options": 0,
    "edit-null-picture": 1, "edit-null-pixels-out": 1, "edit-small-pixels-out": 1, "edit-short-token": 1,
    "edit-two-channels": 1, "edit-no-pixels": 2, "edit-too-many-pixels": 2, "edit-null-picture-pixels": 1,
    "edit-uninitialised-picture": 1, "edit-strength-over-one": 2, "edit-nan-strength": 2,
    "edit-feather-over-the-bound": 2, "edit-negative-feather": 2, "edit-uninitialised-options": 1,
    "edit-all-black-mask": 2, "edit-two-channel-mask": 1, "edit-strength-zero": 0, "edit-stereo": 2, "edit": 0,
    "edit-null-options": 0, "draw-stereo": 2, "generate-stereo": 0, "generate-options-before-stereo": 0,
    "resolve-before-stereo": 0,
}  # fmt: skip
EXPECTED.update(EXPECTED_FEATURES)

REPORTS = ("seeds", "stage-ms-unet", "stage-ms-null", "info-before-eta-kept", "resolved", "resolved-ddim",
           "state-new-null-context-out", "state-stage-ms-unet", "state-stage-ms-null", "state-leaves-context-stage-ms",
           "state-stage-ms-reset", "state-picture-is-the-contexts", "state-picture-after-close",
           "mix-weighted-one-and-zero", "edit-strength-zero-is-the-picture", "resolve-before-stereo-kept")  # fmt: skip


def test_bad_input_through_the_c_api_is_a_status_and_a_message(cpp, tiny_bundle):
    out = run(cpp / "audiotoken-rt-cpp-check", "bad-input", tiny_bundle).stdout.splitlines()
    cases = {}
    for line in out:
        name, status, *message = line.split(" ", 2)
        if name in REPORTS:
            cases[name] = " ".join([status, *message])
            continue
        cases[name] = int(status)
        assert (int(status) == 0) == (not (message and message[0])), line  # a message exactly on failure
    assert {name: cases.get(name) for name in EXPECTED} == EXPECTED
    assert cases["seeds"] == "1 2" and cases["stage-ms-unet"] == "positive" and cases["stage-ms-null"] == "0"
    assert cases["info-before-eta-kept"] == "9"  # an older caller's struct: nothing written past its size
    # the options as the library completes them: the tiny bundle's recipe (the default) under the caller's steps
    assert cases["resolved"] == "dpm++2m 2 7.5 0 - template"
    assert cases["resolved-ddim"] == "ddim 2 7.5 0.25 trailing"
    # a state (atrt_state_*): the context's checks, its own stage times, the context's picture, the bundle kept
    # loaded by the state past atrt_close (AddressSanitizer reports a use after free or a leak)
    assert cases["state-new-null-context-out"] == "null"
    assert cases["state-stage-ms-unet"] == "positive" and cases["state-stage-ms-null"] == "0 0"
    assert cases["state-leaves-context-stage-ms"] == "zero" and cases["state-stage-ms-reset"] == "0"
    assert cases["state-picture-is-the-contexts"] == "same" and cases["state-picture-after-close"] == "same"
    # mix, edit, stereo: a mix weighted (2, 0) is its first token to the bit; strength 0 gives the RGBA picture
    # back; an older caller's atrt_draw_options is written no further than its size
    assert cases["mix-weighted-one-and-zero"] == "first"
    assert cases["edit-strength-zero-is-the-picture"] == "same" and cases["resolve-before-stereo-kept"] == "5"


def test_one_context_draws_from_several_threads_as_each_alone(cpp, tiny_bundle):
    """Four threads, each with its own atrt_state on ONE context, draw twice at once (different clips, prompts,
    negative prompts, two of them shared, schedulers, DDIM's per-step noise among them, seeds and picture counts):
    every picture is byte for byte the one the context draws alone, and the jobs' pictures all differ, so a call
    reading another's state would show (a race: a scratch buffer shared between calls, tried by hand, showed in three
    runs of five). Under AddressSanitizer and UBSan, as every run here."""
    out = run(cpp / "audiotoken-rt-cpp-check", "threads", tiny_bundle, 4).stdout.splitlines()
    assert out == [*(f"job {k} same" for k in range(4)), "distinct 4", "state-stage-ms-unet positive",
                   "context-stage-ms-unet zero"]  # fmt: skip


def tamper(bundle: Path, folder: Path, how: str) -> Path:
    """A copy of ``bundle`` in ``folder`` broken as ``how`` says. The crafted paths name real files with their true
    sha256 outside the copy, so that only the path rule can refuse them."""
    copy = folder / how
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    outside = folder / "outside.json"  # beside the copy, not in it
    shutil.copy(copy / "scheduler_config.json", outside)
    (entry,) = [f for f in manifest["files"] if f["path"] == "scheduler_config.json"]
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
        manifest["engines"]["unet"]["inputs"][0]["shape"][0] = 3
    elif how == "path-dotdot":
        entry["path"] = "../outside.json"
    elif how == "path-absolute":
        entry["path"] = str(outside)
    elif how == "symlink-out":
        (copy / "linked.json").symlink_to(outside)
        entry["path"] = "linked.json"
    elif how == "tokenizer-symlink-out":
        shutil.move(copy / "tokenizer", folder / "tokenizer-outside")
        (copy / "tokenizer").symlink_to(folder / "tokenizer-outside")
    elif how == "key-not-hex":
        manifest["key"] = "../../../" + manifest["key"]  # it names the per-user hash cache file
    elif how in ("external-outside", "external-variant", "external-malformed"):
        shutil.copy(copy / "unet.onnx.data", folder / "secret")  # beside the copy: enough bytes for any offset
        graph = copy / ("unet.variant.onnx" if how == "external-variant" else "unet.onnx")
        if how == "external-malformed":
            graph.write_bytes(b"\x0f")  # a key of wire type 7: not protobuf
        else:
            model = onnx.load(str(copy / "unet.onnx"), load_external_data=False)
            tensor = next(t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL)
            next(e for e in tensor.external_data if e.key == "location").value = "../secret"
            onnx.save_model(model, str(graph))
        entry = {"path": graph.name, "sha256": hashlib.sha256(graph.read_bytes()).hexdigest(),
                 "size": graph.stat().st_size}  # fmt: skip
        if how == "external-variant":  # the engine's own graph is sound, its variant for cuda is not
            manifest["engines"]["unet"]["variants"] = [{"file": entry, "devices": ["cuda"]}]
        else:
            manifest["engines"]["unet"]["file"] = entry  # a crafted bundle hashes what it crafted
    elif how == "recipe-eta-without-ddim":
        manifest["recipe"]["eta"] = 0.5  # the recipe's scheduler, dpm++2m, has none
    elif how == "unet-batch-zero":
        manifest["recipe"]["unet_batches"] = [0]  # batch 0 would loop forever in the UNet's batching
        manifest["engines"]["unet"]["inputs"][0]["shape"][0] = 0
    if how != "bad-json":
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    "how, words",
    [("tampered", "unet.onnx.data has sha256"), ("missing-file", "vae_decoder.onnx is missing"),
     ("bad-json", "not valid JSON"), ("off-contract", "unet inputs are sample float32 [3, 4, 8, 8]"),
     ("path-dotdot", "files[0].path \"../outside.json\" climbs out with '..'"),
     ("path-absolute", "files[0].path \"/"), ("symlink-out", "files[0].path \"linked.json\" resolves outside the bundle"),
     ("tokenizer-symlink-out", "tokenizer \"tokenizer/tokenizer.json\" resolves outside the bundle"),
     ("key-not-hex", "key \"../../../"), ("unet-batch-zero", "recipe.unet_batches [0] is not [1], [2] or [1, 2]"),
     ("recipe-eta-without-ddim", "recipe: eta 0.5: dpm++2m has no eta; only ddim and tcd take one"),
     ("external-outside",
      "unet.onnx reads external data from \"../secret\"; an engine's ONNX files may read its data file unet.onnx.data"),
     ("external-variant", "unet.variant.onnx reads external data from \"../secret\""),
     ("external-malformed", "unet.onnx is not an ONNX file (wire type 7 at byte 1)")],
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


def external_tensor(name: str, location: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    tensor.external_data.add(key="offset", value="0")
    tensor.external_data.add(key="location", value=location)
    return tensor


def model_with_external_data_everywhere(nesting: int = 1) -> bytes:
    """An ONNX model with an external tensor wherever ONNX may put one (initializer, sparse initializer, Constant
    attribute, If subgraph ``nesting`` deep, function), serialized."""
    branch = helper.make_graph([helper.make_node("Constant", [], ["b"], value=external_tensor("c", "in-subgraph"))],
                               "branch", [], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])  # fmt: skip
    for _ in range(nesting - 1):
        branch = helper.make_graph([helper.make_node("If", ["cond"], ["b"], then_branch=branch)],
                                   "branch", [], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])  # fmt: skip
    sparse = helper.make_sparse_tensor(external_tensor("sv", "sparse-values"), external_tensor("si", "sparse-idx"), [4])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=external_tensor("k", "in-attribute")),
         helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
        "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [external_tensor("w", "../initializer"), helper.make_tensor("inline", TensorProto.FLOAT, [1], [1.0])],
        sparse_initializer=[sparse],
    )  # fmt: skip
    function = helper.make_function(
        "local", "f", [], ["z"], [helper.make_node("Constant", [], ["z"], value=external_tensor("f", "in-function"))],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def test_external_locations_are_the_python_readers_on_models_and_broken_bytes(cpp, tmp_path):
    """The C++ reader of external-data locations against runtime/external_data.py: the same locations in the same
    order, or the same one-line malformed message, for a model with external tensors everywhere, one nested past
    the depth bound, every truncation of the model and random byte changes to it."""
    model = model_with_external_data_everywhere()
    rng = np.random.default_rng(21)
    samples = [model, model_with_external_data_everywhere(nesting=30), b"", b"\x0f", b"\x3a\xff"]
    samples += [model[:size] for size in range(1, len(model))]
    for _ in range(300):
        changed = bytearray(model)
        for at in rng.integers(0, len(model), size=int(rng.integers(1, 4))):
            changed[at] = int(rng.integers(0, 256))
        samples.append(bytes(changed))
    paths = []
    for i, data in enumerate(samples):
        paths.append(tmp_path / f"{i}.onnx")
        paths[-1].write_bytes(data)
    lines = run(cpp / "audiotoken-rt-cpp-check", "external-locations", *paths).stdout.splitlines()
    assert len(lines) == len(paths)

    def one_replacement(text: str) -> str:  # invalid UTF-8 as U+FFFD, in runs of either's length (check.cpp prints
        # the raw bytes with JSON's replacement; Python keeps them distinct as surrogate escapes)
        raw = text.encode("utf-8", "surrogateescape")
        return re.sub("\ufffd+", "\ufffd", raw.decode("utf-8", "replace"))

    outcomes = set()
    for path, line in zip(paths, lines, strict=True):
        try:
            expected = [one_replacement(location) for location in external_locations(path)]
        except MalformedProtobuf as exc:
            expected = {"malformed": str(exc)}
        got = json.loads(line)
        got = [one_replacement(location) for location in got] if isinstance(got, list) else got
        assert got == expected, (path, path.read_bytes())
        outcomes.add("malformed" if isinstance(got, dict) else len(got))
    assert json.loads(lines[0]) == external_locations(paths[0]) and "../initializer" in json.loads(lines[0])
    assert len(json.loads(lines[0])) == 7  # initializer, 2 sparse, attribute, 2 branches, function
    assert json.loads(lines[1]) == {"malformed": "messages nested more than 64 deep"}
    assert "malformed" in outcomes and len(outcomes) > 2  # the samples reach both answers, and several counts


def poison(bundle: Path, folder: Path, engine: str) -> Path:
    """A copy of ``bundle`` whose ``engine`` has every float weight NaN, its manifest's sha256 and size updated to
    match: weights gone bad behind a manifest that vouches for them."""
    import hashlib

    import onnx
    from onnx.external_data_helper import uses_external_data

    copy = folder / f"nan-{engine}"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = manifest["engines"][engine]["data"]
    data = bytearray((copy / entry["path"]).read_bytes())
    graph = onnx.load(copy / manifest["engines"][engine]["file"]["path"], load_external_data=False).graph
    for tensor in graph.initializer:
        if uses_external_data(tensor) and tensor.data_type == onnx.TensorProto.FLOAT:
            where = {item.key: item.value for item in tensor.external_data}
            offset, length = int(where.get("offset", 0)), int(where["length"])
            data[offset : offset + length] = np.full(length // 4, np.nan, np.float32).tobytes()
    (copy / entry["path"]).write_bytes(bytes(data))
    entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    "engine, stage",
    [("audio_encoder", "encode_audio"), ("text_encoder", "encode_prompt"), ("unet", "denoise"),
     ("vae_decoder", "decode_latents")],
)  # fmt: skip
def test_nan_weights_are_an_error_naming_the_stage_and_no_picture(cpp, tiny_bundle, tmp_path, engine, stage):
    copy = poison(tiny_bundle, tmp_path, engine)
    done = run(cpp / "audiotoken-rt-cpp", "generate", REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav",
               "--engines", copy, "--out", tmp_path / "p.png", "--steps", 2, "--seed", 0, check=False)  # fmt: skip
    first = done.stderr.splitlines()[0]
    assert done.returncode == 1 and first.startswith(f"error: {stage}: ") and "NaN or Inf" in first, done.stderr
    assert f"audiotoken-rt info {copy} --verify full" in first  # the way to check every file in full
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.partial"))


def test_the_example_refuses_a_missing_clip_an_existing_picture_and_a_folder(cpp, tiny_bundle, tmp_path):
    done = run(cpp / "audiotoken-rt-cpp", "generate", tmp_path / "none.wav", "--engines", tiny_bundle,
               "--out", tmp_path / "p.png", check=False)  # fmt: skip
    assert done.returncode == 1 and "none.wav: no such file" in done.stderr
    (tmp_path / "p.png").write_bytes(b"")
    done = run(cpp / "audiotoken-rt-cpp", "generate", REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav",
               "--engines", tiny_bundle, "--out", tmp_path / "p.png", check=False)  # fmt: skip
    assert done.returncode == 1 and "already exists" in done.stderr
    (tmp_path / "folder").mkdir()
    done = run(cpp / "audiotoken-rt-cpp", "generate", REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav",
               "--engines", tiny_bundle, "--out", tmp_path / "folder", "--overwrite", check=False)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith(f"error: --out {tmp_path / 'folder'}: is a folder")
    assert list((tmp_path / "folder").iterdir()) == []


def test_bench_reports_time_per_picture(cpp, tiny_bundle, tmp_path):
    run(cpp / "audiotoken-rt-cpp", "bench", REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav", "--engines", tiny_bundle,
        "--steps", 2, "--rounds", 1, "--json", tmp_path / "bench.json")  # fmt: skip
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["total_ms"] > 0 and figures["stages"]["unet"] > 0 and figures["steps"] == 2


@pytest.mark.parametrize("contexts", ["shared", "own"])
def test_bench_reports_pictures_per_minute_of_threads_at_once(cpp, tiny_bundle, tmp_path, contexts):
    run(cpp / "audiotoken-rt-cpp", "bench", REPO / "tests/data/3YOH4c9HXpo_290000_300000.wav", "--engines", tiny_bundle,
        "--steps", 2, "--callers", 2, "--contexts", contexts, "--pictures", 1, "--threads", 1,
        "--json", tmp_path / "bench.json")  # fmt: skip
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["callers"] == 2 and figures["contexts"] == contexts and figures["pictures"] == 1
    assert figures["pictures_per_minute"] > 0 and figures["peak_rss_mb"] > 0 and figures["steps"] == 2
    done = run(cpp / "audiotoken-rt-cpp", "bench", "x.wav", "--engines", tiny_bundle, "--callers", 2,
               "--contexts", "some", check=False)  # fmt: skip
    assert done.returncode == 1 and "--contexts expects shared or own, got 'some'" in done.stderr


# --- fuzzing -------------------------------------------------------------------------------------------------

FUZZ_BUILD = REPO / ".cache" / "cpp-build" / "fuzz"
FUZZ_TARGETS = (
    "manifest",
    "tokenizer_json",
    "prompt",
    "waveform",
    "clip",
    "layout",
    "picture",
)  # runtime/cpp/fuzz/fuzz_<target>.cpp
# per target, in every test run: the seed corpus replayed, then new inputs (`just fuzz SECONDS` sets it for longer runs)
FUZZ_SECONDS = int(os.environ.get("AUDIOTOKEN_RT_FUZZ_SECONDS", "20"))
FINDINGS = REPO / ".cache" / "fuzz"  # where a finding's input is kept, to minimise it and add it to the corpus


@pytest.fixture(scope="session")
def fuzzers(cpp) -> Path:
    """The libFuzzer build (Clang, ASan, UBSan) in ``.cache/cpp-build/fuzz``, configured and built once per session."""
    clang = shutil.which("clang++")
    runtime_dir = (
        subprocess.run([clang, "-print-resource-dir"], capture_output=True, text=True).stdout.strip() if clang else ""
    )
    if not clang or not list(Path(runtime_dir).glob("lib/*/libclang_rt.fuzzer*.a")):
        pytest.skip("Clang with libFuzzer missing (Debian: clang libclang-rt-14-dev; bash .ci/setup installs them)")
    headers = Path(os.environ.get("ONNXRUNTIME_INCLUDE_DIR", HEADERS))
    configure = ["cmake", "-S", SOURCE, "-B", FUZZ_BUILD, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                 "-DCMAKE_C_COMPILER=clang", f"-DCMAKE_CXX_COMPILER={clang}", "-DAUDIOTOKEN_RT_FUZZ=ON",
                 "-DAUDIOTOKEN_RT_EXAMPLE=OFF", f"-DONNXRUNTIME_LIBRARY={onnxruntime_library()}",
                 f"-DONNXRUNTIME_INCLUDE_DIR={headers}"]  # fmt: skip
    cmake_steps(configure, ["cmake", "--build", FUZZ_BUILD, "-j2", "--target", "fuzzers"])
    return FUZZ_BUILD


@pytest.mark.slow  # 20 s per harness, 2.5 minutes in all: CI's slow run fuzzes, the default run does not
@pytest.mark.parametrize("target", FUZZ_TARGETS)
def test_fuzzing_finds_no_crash_leak_hang_or_undefined_behaviour(fuzzers, tmp_path, target):
    """libFuzzer on one of the library's parsers for FUZZ_SECONDS, from the seed corpus in runtime/cpp/fuzz/corpus
    (regression inputs of every bug found included): bad bytes must end in the library's one-line error. New
    inputs go to tmp_path, never into the repository; a finding's input is copied to .cache/fuzz/."""
    corpus = SOURCE / "fuzz" / "corpus" / target
    found, scratch = tmp_path / "found", tmp_path / "scratch"  # new inputs; the harness's files ($TMPDIR)
    found.mkdir()
    scratch.mkdir()
    done = subprocess.run(
        [str(fuzzers / f"fuzz_{target}"), str(found), str(corpus), f"-max_total_time={FUZZ_SECONDS}",
         "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True,
        env={**os.environ, **SANITIZERS, "ASAN_OPTIONS": "detect_leaks=1", "TMPDIR": str(scratch)},
    )  # fmt: skip
    findings = [p for p in tmp_path.iterdir() if p.is_file()]  # crash-*, leak-*, timeout-*, oom-*
    for finding in findings:
        FINDINGS.mkdir(parents=True, exist_ok=True)
        shutil.copy(finding, FINDINGS / f"{target}-{finding.name}")
    kept = [f"{FINDINGS}/{target}-{p.name}" for p in findings]
    assert done.returncode == 0 and not findings, f"{done.stderr[-6000:]}\nfindings kept: {kept}"
    assert "Done" in done.stderr and "stat::number_of_executed_units" in done.stderr, done.stderr[-2000:]


# --- ThreadSanitizer ------------------------------------------------------------------------------------------

TSAN_BUILD = REPO / ".cache" / "cpp-build" / "tsan"


@pytest.fixture(scope="session")
def tsan_check(cpp) -> Path:
    """The test driver built with ThreadSanitizer in ``.cache/cpp-build/tsan`` (once per session)."""
    headers = Path(os.environ.get("ONNXRUNTIME_INCLUDE_DIR", HEADERS))
    configure = ["cmake", "-S", SOURCE, "-B", TSAN_BUILD, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                 "-DAUDIOTOKEN_RT_TSAN=ON", "-DAUDIOTOKEN_RT_EXAMPLE=OFF",
                 f"-DONNXRUNTIME_LIBRARY={onnxruntime_library()}", f"-DONNXRUNTIME_INCLUDE_DIR={headers}"]  # fmt: skip
    cmake_steps(configure, ["cmake", "--build", TSAN_BUILD, "-j2", "--target", "audiotoken-rt-cpp-check"])
    return TSAN_BUILD / "audiotoken-rt-cpp-check"


@pytest.mark.slow
def test_threads_on_one_context_race_on_nothing_under_threadsanitizer(tsan_check, tiny_bundle):
    """The four threads of the test above under ThreadSanitizer: no data race in the library's code (a scratch
    buffer shared between calls, tried by hand, was reported in every run; ONNX Runtime is not instrumented)."""
    done = subprocess.run([str(tsan_check), "threads", str(tiny_bundle), "4"], capture_output=True, text=True,
                          env={**os.environ, "TSAN_OPTIONS": "halt_on_error=1"})  # fmt: skip
    assert "ThreadSanitizer" not in done.stderr and done.returncode == 0, done.stderr[-6000:]
    assert done.stdout.splitlines()[:5] == [*(f"job {k} same" for k in range(4)), "distinct 4"]


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
  audiotoken_rt::State state(context);
  auto ids = context.tokenize("a photo of <*>");
  try {
    context.tokenize("no placeholder");
  } catch (const audiotoken_rt::Error& e) {
    std::printf("abi %u ids %lld %lld status %d", atrt_abi_version(), (long long)ids[0], (long long)ids[4], e.status());
  }
  std::printf(" state %g\\n", state.stage_ms("unet"));
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
    cmake_steps(
        ["cmake", "-S", source, "-B", tmp_path / "build", "-G", "Ninja", f"-DCMAKE_PREFIX_PATH={prefix}",
         f"-DCMAKE_CXX_FLAGS={flags}", f"-DCMAKE_EXE_LINKER_FLAGS={flags}"],
        ["cmake", "--build", tmp_path / "build"],
    )  # fmt: skip
    out = run(tmp_path / "build" / "consumer", tiny_bundle).stdout
    assert out.strip() == "abi 1 ids 49406 49408 status 2 state 0"
