"""What every ``audiotoken-rt`` command shares: one-line errors, and options read from the options dataclasses.

Place: each command is written beside the layer it drives (``runtime.commands.generate``, ``runtime.commands.info``,
``runtime.commands.bench``, ``export.cli``, ``audiotoken.cli``) with these helpers, and the app (``audiotoken_rt.cli``)
only assembles them.
- ``reports_errors`` turns every failure into ``error: ...`` (plus ``hint: ...``) on stderr and a non-zero exit,
  never a traceback: library errors (``AudioTokenError``) as they are, Ctrl-C as ``interrupted`` (exit 130), and
  anything unforeseen as one line that says how to see the traceback (``AUDIOTOKEN_RT_DEBUG=1``).
- ``option(Options, "field", "--flag")`` builds a typer option whose default and help are the dataclass field's,
  so the command line and the Python API never hold two copies of a default.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import typer

from runtime.errors import AudioTokenError, first_line

DEBUG_VARIABLE = "AUDIOTOKEN_RT_DEBUG"


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    """Print ``error: message`` (and ``hint: ...``) on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code)


def reports_errors(command):
    """Decorator: the command's failures become the one-line form above."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AudioTokenError as exc:
            fail(str(exc), exc.hint)
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except (typer.Exit, typer.TyperException):  # typer's own exits and usage errors: typer reports them
            raise
        except Exception as exc:  # a bug or a library's own failure: still one line, the traceback on request
            if os.environ.get(DEBUG_VARIABLE):
                raise
            fail(
                f"unexpected {type(exc).__name__}: {first_line(exc)}",
                f"run again with {DEBUG_VARIABLE}=1 for the traceback, and report it with `audiotoken-rt --version`",
            )

    return wrapper


def field_of(options: type, name: str) -> dataclasses.Field:
    for candidate in dataclasses.fields(options):
        if candidate.name == name:
            return candidate
    raise KeyError(f"{options.__name__} has no field {name!r}")


def default_of(options: type, name: str):
    """The default of an options dataclass's field (``...``, typer's "required", when it has none)."""
    spec = field_of(options, name)
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return ...


def option(options: type, name: str, *flags: str, default=dataclasses.MISSING, **settings):
    """A typer option for field ``name`` of ``options``: its default (unless ``default`` is given) and its help."""
    value = default_of(options, name) if default is dataclasses.MISSING else default
    return typer.Option(value, *flags, help=field_of(options, name).metadata["help"], **settings)


def choice(names) -> dict:
    """Option settings that accept exactly ``names`` and list them in the help: ``option(..., **choice(NAMES))``."""
    names = tuple(names)

    def check(value):
        if value is not None and value not in names:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(names)}")
        return value

    return {"metavar": f"[{'|'.join(names)}]", "callback": check}


def options_from(options: type, parameters: dict):
    """An options dataclass built from a command's parameters of the same names (``options_from(X, locals())``)."""
    return options(**{f.name: parameters[f.name] for f in dataclasses.fields(options) if f.name in parameters})
