"""The one error hierarchy of audiotoken-rt.

Every layer (runtime, audiotoken, export) raises these, so host apps and the CLI catch a single type.
A message names the input, what was expected and what was found; ``hint`` says what to do next.
The CLI prints ``error: <message>`` and ``hint: <hint>`` on one line each, without a traceback. ``shown`` quotes a
received value in such a message; ``is_whole`` and ``is_real`` are what the options' bound checks ask of a number.
"""

from __future__ import annotations

import numbers


class AudioTokenError(Exception):
    """Base of every error audiotoken-rt raises on purpose."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class AudioLoadError(AudioTokenError):
    """An audio clip is missing, unreadable, empty or holds non-finite samples."""


class CheckpointError(AudioTokenError):
    """A model file (BEATs ``.pt``, embedder ``.bin``, Stable Diffusion folder) does not have the expected layout."""


class ConfigError(AudioTokenError):
    """An option or prompt is invalid (e.g. a template without ``<*>``)."""


class BundleError(AudioTokenError):
    """An engine bundle is missing, incomplete, tampered with, or built for another device or version."""


class NumericsError(AudioTokenError):
    """A stage computed NaN or Inf (weights damaged behind an unchanged file date, or numbers that overflowed): the
    message names the stage, and nothing is drawn or written from it."""


class ExportError(AudioTokenError):
    """Exporting a network failed: the exporter refused it, or the engine disagrees with PyTorch beyond tolerance."""


def shown(value: object) -> str:
    """A received value as a one-line message quotes it: a number plainly (numpy's too: 25, not np.int64(25)),
    anything else by its repr (so that '25' shows it came as text), cut to 80 characters."""
    text = str(value) if isinstance(value, numbers.Number) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_whole(value, low: int, high: int | None) -> bool:
    """Whether ``value`` is an integer (not a bool) in low..high (``high`` None: no upper bound)."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return whole and low <= value and (high is None or value <= high)


def is_real(value, low: float, high: float) -> bool:
    """Whether ``value`` is a real number (not a bool) in [low, high]; NaN is not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and low <= value <= high


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first non-blank line, for one-line errors that quote a library's."""
    return (str(error).strip().splitlines() or [""])[0]


PYTORCH_SIDE_HINT = (
    "pip install torch==2.13.0 && pip install 'audiotoken-rt[export]' "
    "(torch first and pinned: a bare torch pulls a multi-GB CUDA build; add [train] to train)"
)


def needs_pytorch_side(what: str, missing: ImportError) -> ConfigError:
    """The error for a command or backend that needs the PyTorch side on a runtime-only install."""
    name = missing.name or str(missing)
    return ConfigError(
        f"{what} needs the PyTorch side of audiotoken-rt, and {name} is not installed", hint=PYTORCH_SIDE_HINT
    )
