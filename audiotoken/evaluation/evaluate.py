"""``audiotoken-rt evaluate``: the paper's metrics of pictures drawn from clips; and the options it shares with
``compare``.

Place in the data flow: pictures (``generate``'s folder) -> ``inputs.gather`` -> ``scoring.Evaluator`` -> a table on
stdout, ``--json`` and ``--report DIR`` (``report``). Importing this module needs no torch: a runtime-only install
lists the command and answers with one line naming the extra to install.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from audiotoken.evaluation.inputs import WAV2CLIP_SAMPLES, gather, read_picture
from audiotoken.evaluation.report import (
    METRIC_HEADER,
    SHEET_CLIPS,
    clip_rows,
    metric_rows,
    model_notes,
    protocol_notes,
    report_skipped,
    report_title,
    rich_table,
    stage_bars,
    write_json,
    write_report,
)
from audiotoken.evaluation.scoring import EvaluationOptions, Evaluator, parse_metrics, unverified_models
from runtime.commands.cli import choice, option, options_from, reports_errors
from runtime.errors import ConfigError, needs_pytorch_side

EVAL_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class EvaluationInputs:
    """What the metrics read besides the pictures and clips. The ``help`` of each field is the ``evaluate`` and
    ``compare`` option's help (``runtime.commands.cli.option``); ``evaluate`` requires the models and labels."""

    models: Path | None = field(
        default=None,
        metadata={
            "help": "Folder of the evaluation models, for the metrics (docs/evaluation.md lists them; make-random "
            "--eval writes stand-ins)."
        },
    )
    labels: Path | None = field(
        default=None,
        metadata={
            "help": "The training dataset's labels.csv (name,label,split): the clips' labels and the class names, "
            "for AIC."
        },
    )
    frames: Path | None = field(
        default=None,
        metadata={
            "help": "Ground-truth frames, for IIS and FID: <clip>.png/.jpg or <clip>.mp4 (also in images/ or "
            "video/: a training dataset's folder)."
        },
    )

    def check(self) -> None:
        """Labels and frames feed the metrics: refused without the models (``compare``, where all are optional)."""
        if self.models is None and (self.labels is not None or self.frames is not None):
            raise ConfigError("--labels and --frames feed the metrics", hint="pass --models DIR too, or leave them out")


def metric_option(name: str, flag: str, **settings):
    return option(EvaluationOptions, name, flag, **settings)


def evaluation_options(metrics, bootstrap, fid_bootstrap, seed, device, batch_size, wav2clip_rate) -> EvaluationOptions:
    options = options_from(EvaluationOptions, {**locals(), "metrics": parse_metrics(metrics)})
    options.check()
    return options


def wav2clip_rate_option():
    """``--wav2clip-rate``: one of the rates Wav2CLIP can be fed at (``runtime.commands.cli.choice`` lists strings)."""
    rates = sorted(WAV2CLIP_SAMPLES)

    def check(value: int) -> int:
        if value not in rates:
            raise typer.BadParameter(f"{value} is not one of {', '.join(map(str, rates))}")
        return value

    return metric_option("wav2clip_rate", "--wav2clip-rate", metavar=f"[{'|'.join(map(str, rates))}]", callback=check)


def pytorch_side(command: str) -> None:
    """Refuse in one line, before any work, a command run where the PyTorch side is not installed; where it is,
    silence the libraries' own loading bars (ours stay)."""
    try:
        import torch  # noqa: F401

        from audiotoken.stable_diffusion import quiet_libraries

        quiet_libraries()
    except ImportError as exc:
        raise needs_pytorch_side(f"audiotoken-rt {command}", exc) from exc


def warn_unpublished(console, model_files: list) -> None:
    """One stderr line when a model's weights are not known to be the published file (the report's title says it)."""
    doubtful = unverified_models(model_files)
    if doubtful:
        console.print(f"warning: NOT the published models: {'; '.join(doubtful)}")


def check_outputs_of(json_path: Path | None, report: Path | None) -> None:
    """Refuse, before any work, a --json whose folder is missing or a --report that is a file."""
    if json_path is not None and not json_path.parent.is_dir():
        raise ConfigError(f"--json {json_path}: its folder {json_path.parent} does not exist", hint="create it first")
    if report is not None and report.exists() and not report.is_dir():
        raise ConfigError(f"--report {report}: exists and is not a folder", hint="name a folder for the report")


@reports_errors
def evaluate_command(
    pictures: Path = typer.Option(
        ..., "--pictures", help="Pictures named after their clips: <clip>.png or <clip>-<k>.png.", show_default=False
    ),
    clips: Path = typer.Option(
        ..., "--clips", help="The clips (a folder, or a training dataset with audio/).", show_default=False
    ),
    labels: Path = option(EvaluationInputs, "labels", "--labels", default=..., show_default=False),
    frames: Path | None = option(EvaluationInputs, "frames", "--frames", show_default=False),
    models: Path = option(EvaluationInputs, "models", "--models", default=..., show_default=False),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the scores as JSON.", show_default=False),
    report: Path | None = typer.Option(
        None, "--report", help="Write sheet.png (the pictures) and index.html (the table) here.", show_default=False
    ),
    metrics: str | None = metric_option("metrics", "--metrics", default=None, show_default=False),
    bootstrap: int = metric_option("bootstrap", "--bootstrap"),
    fid_bootstrap: int = metric_option("fid_bootstrap", "--fid-bootstrap"),
    seed: int = metric_option("seed", "--seed"),
    device: str = metric_option("device", "--device", **choice(EVAL_DEVICES)),
    batch_size: int = metric_option("batch_size", "--batch-size"),
    wav2clip_rate: int = wav2clip_rate_option(),
    sheet_clips: int = typer.Option(
        SHEET_CLIPS, "--sheet-clips", help="Clips shown on the --report sheet (the first)."
    ),
) -> None:
    """The paper's AIS, IIS, AIC and FID of pictures drawn from clips, each with its count and a bootstrap 95% interval
    (docs/method.md#evaluation-metrics: the closest public definitions; the paper's own protocol was never released)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    options = evaluation_options(metrics, bootstrap, fid_bootstrap, seed, device, batch_size, wav2clip_rate)
    check_outputs_of(json_path, report)
    pytorch_side("evaluate")
    clip_set, found = gather(pictures, clips, labels, frames)
    with stage_bars(console) as progress:
        evaluator = Evaluator(clip_set, models, options, progress)
        scores = evaluator.score(found)
    report_skipped(console, scores.skipped)
    warn_unpublished(console, scores.model_files)
    rows = metric_rows(scores)
    title = f"{scores.pictures} pictures of {scores.clips} clips"
    Console(highlight=False).print(rich_table(title, METRIC_HEADER, rows))
    if json_path:
        write_json(json_path, scores.as_json())
        console.print(f"wrote {json_path}")
    if report:

        def pictures_of(clip: int) -> list[tuple[str, object]]:
            cells = []
            for picture in (p for p in found if p.clip == clip):
                caption = picture.name.removeprefix(clip_set.names[clip]).lstrip("-") or picture.name
                try:
                    cells.append((caption, read_picture(picture.source)))
                except Exception:  # reported as skipped above; a grey square here
                    cells.append((caption, None))
            return cells

        write_report(
            report,
            report_title("evaluate", scores.model_files),
            [(title, METRIC_HEADER, rows)],
            clip_rows(clip_set, pictures_of, sheet_clips),
            protocol_notes(options) + model_notes(scores.model_files),
        )
        console.print(f"wrote {report}/index.html and {report}/sheet.png")
