"""runtime/cpp cross-built for aarch64 and run under qemu-user on this x86-64 machine: what an Arm board (a Jetson,
a Raspberry Pi) draws, against the x86-64 Python runtime.

The build is `just cpp-arm64`'s (Release, in ``.cache/cpp-build/arm64``): Debian's cross compiler with
runtime/cpp/cmake/aarch64-linux-gnu.cmake, the arm64 (multiarch) packages of the libraries, ONNX Runtime's library
from the aarch64 onnxruntime wheel of the version Python runs. Its programs run under trixie's qemu-aarch64
(``.cache/qemu``), with the arm64 C library of multiarch. Checked: the binaries are aarch64 ELF; the noise bit for bit
(aarch64's libm and compiler, where GCC would fuse multiply-adds unless told not to); pictures of the aarch64 example
equal to the Python CLI's (PSNR >= 40 dB, fp32 on the CPU, a clip at 44.1 kHz stereo among them: soxr and libsndfile
of arm64 in play); an edit of a JPEG under a mask, regions, a mix and stereo sides against the Python runtime (PSNR
>= 40 dB). The test build of tests/test_cpp.py checks everything else on x86-64; this file checks what the
architecture could change. Skipped, with the reason, only where the cross toolchain is missing (`bash .ci/setup arm64`
installs it); slow: the cross build takes 30 s to 1.5 minutes on two cores, each picture test about 30 s under qemu.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image
from typer.testing import CliRunner

from runtime.noise import INITIAL_NOISE, STEP_NOISE, NoiseStream
from runtime.picture import read_png_metadata
from tests.support import REPO, psnr
from tests.test_cpp import HEADERS, PKG_CONFIG_MODULES, SOURCE, cmake_steps

pytestmark = pytest.mark.slow

BUILD = REPO / ".cache" / "cpp-build" / "arm64"  # `just cpp-arm64`'s folder: either builds on the other's
TOOLCHAIN = SOURCE / "cmake" / "aarch64-linux-gnu.cmake"
ONNXRUNTIME = REPO / ".cache" / "onnxruntime-aarch64" / f"libonnxruntime.so.{onnxruntime.__version__}"
QEMU = REPO / ".cache" / "qemu" / "usr" / "bin" / "qemu-aarch64"
ARM64_PKG_CONFIG = Path("/usr/lib/aarch64-linux-gnu/pkgconfig")
EM_AARCH64 = 183  # e_machine of an aarch64 ELF file


def missing_cross_toolchain() -> list[str]:
    """What the aarch64 build and its run need and this machine lacks."""
    missing = [tool for tool in ("cmake", "ninja", "aarch64-linux-gnu-g++") if shutil.which(tool) is None]
    missing += [f"{m}.pc for arm64" for m in PKG_CONFIG_MODULES if not (ARM64_PKG_CONFIG / f"{m}.pc").is_file()]
    if not Path("/usr/include/nlohmann/json.hpp").is_file():
        missing.append("nlohmann-json3-dev")
    missing += [str(path) for path in (HEADERS / "onnxruntime_c_api.h", ONNXRUNTIME, QEMU) if not path.is_file()]
    return missing


@pytest.fixture(scope="session")
def cpp_arm64() -> Path:
    """The aarch64 build's folder (the library, the example and the check driver; incremental when up to date)."""
    missing = missing_cross_toolchain()
    if missing:
        pytest.skip(f"aarch64 cross toolchain missing: {', '.join(missing)} (bash .ci/setup arm64 installs it)")
    configure = ["cmake", "-S", SOURCE, "-B", BUILD, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}", f"-DONNXRUNTIME_LIBRARY={ONNXRUNTIME}",
                 f"-DONNXRUNTIME_INCLUDE_DIR={HEADERS}"]  # fmt: skip
    build = ["cmake", "--build", BUILD, "-j2", "--target", "audiotoken-rt-cpp", "audiotoken-rt-cpp-check"]
    cmake_steps(configure, build)
    return BUILD


def run_arm64(binary: Path, *args) -> subprocess.CompletedProcess:
    """An aarch64 binary under qemu-user; it must succeed."""
    done = subprocess.run([str(QEMU), str(binary), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_the_build_is_aarch64(cpp_arm64):
    for name in ("audiotoken-rt-cpp", "audiotoken-rt-cpp-check", "libaudiotoken_rt.so.1"):
        header = (cpp_arm64 / name).read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_AARCH64, name


@pytest.mark.parametrize("seed, use, count", [(0, INITIAL_NOISE, 7), (42, STEP_NOISE, 100_001)])
def test_noise_on_aarch64_is_the_python_noise_bit_for_bit(cpp_arm64, seed, use, count):
    out = run_arm64(cpp_arm64 / "audiotoken-rt-cpp-check", "noise", seed, use, count).stdout.split()
    got = np.array([int(word, 16) for word in out], dtype=np.uint32)
    want = NoiseStream(seed, use).standard_normal((count,)).view(np.uint32)
    assert np.array_equal(got, want), f"{int(np.sum(got != want))} of {count} values differ"


@pytest.mark.parametrize(
    "clip, scheduler, steps, extra",
    [("clip0", "dpm++2m", 6, []), ("stereo44k", "euler-a", 4, ["--prompt", "a watercolor of <*> at dusk"])],
)
def test_aarch64_pictures_are_the_python_cli_pictures(cpp_arm64, tiny_bundle, clip_set, tmp_path, clip, scheduler,
                                                      steps, extra):  # fmt: skip
    from audiotoken_rt.cli import app

    path = clip_set[clip]
    common = ["--engines", tiny_bundle, "--seed", 11, "--steps", steps, "--scheduler", scheduler, "--num-images", 2,
              *extra]  # fmt: skip
    run_arm64(cpp_arm64 / "audiotoken-rt-cpp", "generate", path, "--out", tmp_path / "arm64.png", *common)
    result = CliRunner().invoke(app, ["generate", str(path), "--out", str(tmp_path / "py"), *map(str, common)])
    assert result.exit_code == 0, result.output
    for k in range(2):
        ours, theirs = tmp_path / f"arm64-{k}.png", tmp_path / "py" / f"{path.stem}-{k}.png"
        recorded = ("seed", "steps", "scheduler")
        ours_text, theirs_text = read_png_metadata(ours), read_png_metadata(theirs)
        assert {key: ours_text.get(key) for key in recorded} == {key: theirs_text.get(key) for key in recorded}
        decibels = psnr(Image.open(ours), Image.open(theirs))
        assert decibels >= 40, f"{clip} {scheduler} picture {k}: {decibels:.1f} dB"
    assert psnr(Image.open(tmp_path / "arm64-0.png"), Image.open(tmp_path / "arm64-1.png")) < 40  # seeds differ


def test_aarch64_edits_composes_mixes_and_stereo_are_pythons(cpp_arm64, tiny_bundle, clip_set, tmp_path):
    """The features beyond one clip's picture (tests/test_cpp_features.py on x86-64) drawn on aarch64: an edit of a
    JPEG picture under a mask (libjpeg-turbo of arm64, the picture's own size back), two sounds in regions with a
    background, a mix and stereo sides, each against the Python runtime (PSNR >= 40 dB)."""
    from runtime.pipeline import ComposeOptions, EditOptions, GenerationOptions, Pipeline

    python = Pipeline.open(tiny_bundle)
    clip, other = clip_set["clip0"], clip_set["stereo44k"]
    y, x = np.mgrid[0:48, 0:80]
    Image.fromarray(np.stack([x * 3, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)).save(tmp_path / "p.jpg")
    mask = np.zeros((48, 80), np.uint8)
    mask[:, 40:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ["--engines", tiny_bundle, "--seed", 5, "--steps", 3]
    drawn = {
        "edit": (["edit", tmp_path / "p.jpg", clip, "--mask", tmp_path / "mask.png", "--strength", 0.6],
                 python.draw_edit(tmp_path / "p.jpg", clip, EditOptions(seed=5, steps=3, strength=0.6),
                                  mask=tmp_path / "mask.png")),
        "compose": (["compose", clip, other, "--layout", "left,right", "--background", "a beach"],
                    python.draw_compose([clip, other], ComposeOptions(seed=5, steps=3, layout="left,right",
                                                                      background="a beach"))),
        "mix": (["generate", "--mix", f"{clip}:0.7,{other}:0.3"],
                python.draw([(clip, 0.7), (other, 0.3)], GenerationOptions(seed=5, steps=3))),
        "stereo": (["generate", other, "--stereo"], python.draw(other, GenerationOptions(seed=5, steps=3, stereo=True))),
    }  # fmt: skip
    for name, (args, theirs) in drawn.items():
        run_arm64(cpp_arm64 / "audiotoken-rt-cpp", *args, "--out", tmp_path / f"{name}.png", *common)
        ours = Image.open(tmp_path / f"{name}.png")
        assert ours.size == theirs.pictures[0].size, name
        decibels = psnr(ours, theirs.pictures[0])
        assert decibels >= 40, f"{name}: {decibels:.1f} dB"
    kept = np.asarray(Image.open(tmp_path / "edit.png"))[:, :40]
    assert np.array_equal(kept, np.asarray(Image.open(tmp_path / "p.jpg").convert("RGB"))[:, :40])  # black: kept
