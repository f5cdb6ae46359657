"""Tests of the CI rule on skips (tests/ci_skips.py), on a small test suite run by pytest's own ``pytester``: without
AUDIOTOKEN_RT_REQUIRE_ALL a skip stays a skip; with it, a skip (in the test, in a fixture, from a skipif mark or a
module-level importorskip) fails and names what is missing, while gpu, golden and optional tests, and expected
failures, keep their outcome."""

from __future__ import annotations

import pytest

from tests.ci_skips import REQUIRE_ALL

pytest_plugins = ["pytester"]

SUITE = """
import pytest

def test_passes():
    pass

def test_skips_in_the_test():
    pytest.skip("real clips not found in /nowhere/vggsound")

@pytest.fixture
def toolchain():
    pytest.skip("C++ toolchain missing: cmake")

def test_skips_in_a_fixture(toolchain):
    pass

@pytest.mark.skipif(True, reason="torchaudio's files are not in .cache/oracles")
def test_skips_by_mark():
    pass

@pytest.mark.gpu
def test_on_a_gpu():
    pytest.skip("needs CUDA")

@pytest.mark.golden
def test_on_the_real_checkpoints():
    pytest.skip("set AUDIOTOKEN_GOLDEN_DIR")

@pytest.mark.optional
def test_on_openvino():
    pytest.skip("needs the onnxruntime-openvino build of ONNX Runtime")

@pytest.mark.xfail(strict=True, reason="a known bug")
def test_known_bug():
    assert False
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    gpu: on a GPU\n    golden: on the real checkpoints\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_without_the_variable_skips_stay_skips(suite, monkeypatch):
    monkeypatch.delenv(REQUIRE_ALL, raising=False)
    result = suite.runpytest("-p", "tests.ci_skips", "-rs")
    result.assert_outcomes(passed=1, skipped=6, xfailed=1)
    result.stdout.fnmatch_lines(["*real clips not found in /nowhere/vggsound*"])


@pytest.mark.parametrize("value", ["1", "yes"])
def test_with_the_variable_a_skip_fails_naming_the_missing_prerequisite(suite, monkeypatch, value):
    monkeypatch.setenv(REQUIRE_ALL, value)
    result = suite.runpytest("-p", "tests.ci_skips", "-rs")
    # the skip in the test fails; those in a fixture and from a skipif mark fail at setup, where pytest says "error"
    result.assert_outcomes(passed=1, failed=1, errors=2, skipped=3, xfailed=1)
    result.stdout.fnmatch_lines_random(
        [
            f"*{REQUIRE_ALL} is set, so this skip is a failure (a prerequisite is missing): real clips not found in /nowhere/vggsound",
            "*: C++ toolchain missing: cmake",
            "*: torchaudio's files are not in .cache/oracles",
            "SKIPPED * needs CUDA",
            "SKIPPED * set AUDIOTOKEN_GOLDEN_DIR",
            "SKIPPED * needs the onnxruntime-openvino build of ONNX Runtime",
        ]
    )
    assert result.ret != 0


def test_the_variable_set_to_0_keeps_skips(suite, monkeypatch):
    monkeypatch.setenv(REQUIRE_ALL, "0")
    suite.runpytest("-p", "tests.ci_skips").assert_outcomes(passed=1, skipped=6, xfailed=1)


def test_a_module_that_skips_at_import_is_a_collection_error_with_the_variable(pytester, monkeypatch):
    pytester.makepyfile(test_serving="import pytest\npytest.importorskip('no_such_serving_module')\n")
    monkeypatch.delenv(REQUIRE_ALL, raising=False)
    pytester.runpytest("-p", "tests.ci_skips").assert_outcomes(skipped=1)
    monkeypatch.setenv(REQUIRE_ALL, "1")
    result = pytester.runpytest("-p", "tests.ci_skips")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{REQUIRE_ALL} is set*could not import 'no_such_serving_module'*"])
