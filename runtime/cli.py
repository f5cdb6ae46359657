"""The ``audiotoken-rt`` command line (typer).

The CLI lives in the torch-free runtime; commands that need the PyTorch side (``make-random``, ``export``,
``train``, ``--backend torch``) import it lazily, inside the command, so a runtime-only install still starts.
Every ``AudioTokenError`` becomes one ``error: ...`` line (plus ``hint: ...``) and a non-zero exit, no traceback.
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from runtime.errors import AudioTokenError

app = typer.Typer(
    name="audiotoken-rt",
    help="Turn a sound into a picture: AudioToken on Stable Diffusion, with ONNX Runtime and TensorRT engines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Turn a sound into a picture: AudioToken on Stable Diffusion, with ONNX Runtime and TensorRT engines."""


def fail(exc: AudioTokenError, code: int = 1) -> None:
    """Print an error (and its hint) on one line each, on stderr, and exit non-zero."""
    typer.echo(f"error: {exc}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    raise typer.Exit(code)


def reports_errors(command):
    """Decorator: turn library errors into the CLI's one-line form."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AudioTokenError as exc:
            fail(exc)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


def quiet_heavy_libraries() -> None:
    """Silence transformers' and diffusers' info chatter and their weight-loading bars; our own bars stay."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


class Arch(str, Enum):
    tiny = "tiny"
    sd15 = "sd15"


@app.command("make-random")
@reports_errors
def make_random_command(
    out: Annotated[Path, typer.Argument(help="Folder to write sd/, beats.pt and embedder.bin into.")],
    arch: Annotated[Arch, typer.Option(help="tiny: seconds, a few MB; sd15: the real SD 1.5 + BEATs iter3 sizes (~4.5 GB).")] = Arch.tiny,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write random-weight models in the official file formats (for tests and benchmarks; nothing is downloaded)."""
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"building random {arch.value} models"):
        quiet_heavy_libraries()
        from audiotoken.random_models import make_random

        folder = make_random(out, arch=arch.value, seed=seed, force=force)
    console.print(f"wrote {folder}/sd (diffusers Stable Diffusion), {folder}/beats.pt, {folder}/embedder.bin")


def main() -> None:
    """Entry point for ``python -m runtime.cli``."""
    sys.exit(app())


if __name__ == "__main__":
    main()
