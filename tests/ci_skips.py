"""The CI rule on skips, as a pytest plugin (tests/conftest.py loads it): where AUDIOTOKEN_RT_REQUIRE_ALL is set
(``.ci/run`` sets it), a test that skips fails instead, its report naming what it skipped for.

A skip outside CI means "a prerequisite is missing here" (the shared clips, the C++ toolchain, the serving
environment .venv-serve, the evaluation libraries, a test oracle...); in CI every one of them is installed, so a
skip there would hide a broken setup behind a green run. Tests that legitimately skip in CI keep skipping:
those marked ``gpu`` (CI has no GPU), ``golden`` (the real checkpoints, opt-in) or ``optional`` (registered here:
a setup CI does not have by design, such as OpenVINO's ONNX Runtime or a machine with TensorRT). An expected
failure (xfail) stays one. A module that skips as a whole at import (a module-level ``pytest.importorskip``)
becomes a collection error, since its markers cannot be read: skip inside the test or a fixture instead.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = "AUDIOTOKEN_RT_REQUIRE_ALL"  # set to 1 by .ci/run; unset or 0: skips stay skips
MAY_SKIP = ("gpu", "golden", "optional")  # markers of tests that may skip even in CI


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"optional: covers a setup CI does not have by design (OpenVINO's ONNX Runtime, TensorRT present); "
        f"may skip where {REQUIRE_ALL} is set",
    )


def require_all() -> bool:
    """Whether this run is CI's, where a skip is a failure."""
    return os.environ.get(REQUIRE_ALL, "") not in ("", "0")


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report gives (pytest keeps it as (path, line, "Skipped: reason"))."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def as_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skipped report into a failed one whose message says why."""
    report.longrepr = (
        f"{REQUIRE_ALL} is set, so this skip is a failure (a prerequisite is missing): {skip_reason(report)}"
    )
    report.outcome = "failed"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    exempt = any(item.get_closest_marker(name) for name in MAY_SKIP)
    if report.skipped and not hasattr(report, "wasxfail") and not exempt and require_all():
        as_failure(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    if report.skipped and require_all():
        as_failure(report)
    return report
