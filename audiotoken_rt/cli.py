"""The ``audiotoken-rt`` app: it assembles the commands, each written beside the layer it drives.

| command     | code                                          | needs                                               |
|-------------|-----------------------------------------------|-----------------------------------------------------|
| generate    | runtime/commands/generate.py                  | the runtime (numpy, ONNX Runtime)                   |
| edit        | runtime/commands/edit.py                      | the runtime                                         |
| compose     | runtime/commands/compose.py                   | the runtime                                         |
| live        | runtime/commands/live.py                      | the runtime (+ the ``live`` extra: mic, --video)    |
| triton-repo | runtime/serving/triton_repo.py                | the runtime                                         |
| serve       | runtime/serving/serve.py                      | the ``serve`` extra (PyTriton, numpy < 2: own venv) |
| info        | runtime/commands/info.py                      | the runtime                                         |
| bench       | runtime/commands/bench.py                     | the runtime (+ torch for its torch)                 |
| export      | export/cli.py                                 | the ``export`` extra (torch)                        |
| doctor      | export/doctor.py (runtime/commands/doctor.py) | the runtime (+ torch for its bundle)                |
| train       | audiotoken/cli.py                             | the ``train`` extra (torch)                         |
| evaluate    | audiotoken/evaluation/evaluate.py             | the ``eval`` extra (torch, transformers, librosa)   |
| compare     | audiotoken/evaluation/compare.py              | the runtime (+ ``eval`` for --models)               |
| make-random | audiotoken/cli.py                             | the ``export`` extra (torch)                        |

Importing any of these modules needs no torch: a runtime-only install lists every command, runs the runtime
ones, and answers the others with one line naming the extra to install.
"""

from __future__ import annotations

import sys
from importlib import metadata

import typer
from typer.core import TyperGroup

from audiotoken.cli import make_random_command, train_command
from audiotoken.evaluation.compare import compare_command
from audiotoken.evaluation.evaluate import evaluate_command
from export.cli import export_command
from export.doctor import doctor_command
from runtime.commands.bench import bench_command
from runtime.commands.compose import compose_command
from runtime.commands.edit import edit_command
from runtime.commands.generate import generate_command
from runtime.commands.info import info_command
from runtime.commands.live import live_command
from runtime.serving.serve import serve_command
from runtime.serving.triton_repo import triton_repo_command


class OneLineErrors(TyperGroup):
    """The app's click group: a mistyped command line is one ``error:`` line and one ``hint:`` line, like every
    other failure (``runtime.commands.cli.reports_errors``), instead of click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:  # Ctrl-C while parsing or prompting
            typer.echo("error: interrupted", err=True)
            sys.exit(130)
        except typer.TyperException as exc:  # click's usage and parameter errors, as typer vendors them
            if (
                type(exc).__name__ == "NoArgsIsHelpError"
            ):  # a bare `audiotoken-rt` or `audiotoken-rt CMD`: the help is the answer
                exc.show()
                sys.exit(exc.exit_code)
            typer.echo(f"error: {exc.format_message()}", err=True)
            context = getattr(exc, "ctx", None)
            if context is not None:
                typer.echo(f"hint: `{context.command_path} --help` lists the arguments and options", err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="audiotoken-rt",
    cls=OneLineErrors,
    help="Turn a sound into a picture: AudioToken on Stable Diffusion, with ONNX Runtime and TensorRT engines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: it wraps whole words at any terminal width
    context_settings={"max_content_width": 100},
)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"audiotoken-rt {metadata.version('audiotoken-rt')}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Turn a sound into a picture: AudioToken on Stable Diffusion, with ONNX Runtime and TensorRT engines."""


app.command("generate")(generate_command)
app.command("edit")(edit_command)
app.command("compose")(compose_command)
app.command("live")(live_command)
app.command("serve")(serve_command)
app.command("triton-repo")(triton_repo_command)
app.command("info")(info_command)
app.command("bench")(bench_command)
app.command("export")(export_command)
app.command("train")(train_command)
app.command("make-random")(make_random_command)
app.command("doctor")(doctor_command)
app.command("evaluate")(evaluate_command)
app.command("compare")(compare_command)


def main() -> None:
    """The console script ``audiotoken-rt``."""
    sys.exit(app(prog_name="audiotoken-rt"))
