"""``audiotoken-rt evaluate`` and ``audiotoken-rt compare``: the paper's metrics of pictures drawn from clips, and
two bundles (or recipes) drawn side by side with the same seeds.

Place in the data flow: pictures (``generate``'s folder, or ``compare``'s draws through ``runtime.pipeline``) ->
``audiotoken.evaluation`` (pairing, embeddings, metrics) -> a table on stdout, ``--json``, and ``--report DIR``: a
picture sheet (``sheet.png``: each clip's name and label over its ground-truth frame and its pictures) and an HTML
page (``index.html``) with the table. Importing this module needs no torch: a runtime-only install lists both
commands and answers with one line naming the extra to install.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from audiotoken.evaluation import (
    PAPER,
    PERCENT,
    PROTOCOL,
    WAV2CLIP_SAMPLES,
    ClipSet,
    EvaluationOptions,
    intervals_note,
    parse_metrics,
    shown,
)
from runtime.atomic import write_atomically
from runtime.backends import DEVICES, backend_names
from runtime.command import choice, default_of, option, options_from, reports_errors
from runtime.errors import AudioTokenError, ConfigError, needs_pytorch_side
from runtime.schedulers import SCHEDULER_NAMES

EVAL_DEVICES = ("cpu", "cuda")
PRESETS = ("bundle", "fast", "official")  # the bundle's own recipe; LCM 4 steps guidance 1; PNDM 50 steps 7.5
THUMB, GAP, TITLE_HEIGHT, CAPTION_HEIGHT, MIN_SHEET_WIDTH = 160, 8, 22, 18, 520  # picture sheet layout, pixels
SHEET_CLIPS = 48
Row = tuple[str, list[tuple[str, object]]]  # a sheet row: its title, and (caption, PIL picture or None) cells


def metric_option(name: str, flag: str, **settings):
    return option(EvaluationOptions, name, flag, **settings)


def evaluation_options(metrics, bootstrap, fid_bootstrap, seed, device, batch_size, wav2clip_rate) -> EvaluationOptions:
    options = options_from(EvaluationOptions, {**locals(), "metrics": parse_metrics(metrics)})
    options.check()
    return options


def wav2clip_rate_option():
    """``--wav2clip-rate``: one of the rates Wav2CLIP can be fed at (``runtime.command.choice`` lists strings)."""
    rates = sorted(WAV2CLIP_SAMPLES)

    def check(value: int) -> int:
        if value not in rates:
            raise typer.BadParameter(f"{value} is not one of {', '.join(map(str, rates))}")
        return value

    return metric_option("wav2clip_rate", "--wav2clip-rate", metavar=f"[{'|'.join(map(str, rates))}]", callback=check)


def pytorch_side(command: str) -> None:
    """Refuse in one line, before any work, a command run where the PyTorch side is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise needs_pytorch_side(f"audiotoken-rt {command}", exc) from exc


def check_outputs_of(json_path: Path | None, report: Path | None) -> None:
    """Refuse, before any work, a --json whose folder is missing or a --report that is a file."""
    if json_path is not None and not json_path.parent.is_dir():
        raise ConfigError(f"--json {json_path}: its folder {json_path.parent} does not exist", hint="create it first")
    if report is not None and report.exists() and not report.is_dir():
        raise ConfigError(f"--report {report}: exists and is not a folder", hint="name a folder for the report")


@contextmanager
def stage_bars(console) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback (stage, done, total) that shows one rich bar per stage name."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield report


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def metric_rows(scores) -> list[list[str]]:
    """[metric, value, 95% interval, n, the paper's AudioToken] per computed metric."""
    return [
        [
            name + (" %" if name in PERCENT else ""),
            number(result.value),
            f"{result.ci95[0]:.2f} - {result.ci95[1]:.2f}" if result.ci95 else "-",
            str(result.n) + (f" ({result.note})" if result.note else ""),
            number(PAPER[name]),
        ]
        for name, result in scores.metrics.items()
    ]


METRIC_HEADER = ["metric", "value", "95% interval", "n", "AudioToken (paper)"]


def rich_table(title: str, header: list[str], rows: list[list[str]]):
    from rich.table import Table

    table = Table(title=title, show_edge=False)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def report_skipped(console, skipped: list[tuple[str, str]]) -> None:
    for file, reason in skipped:
        console.print(f"skipped {file}: {reason}")


def write_json(path: Path, content: dict) -> None:
    write_atomically(path, (json.dumps(content, indent=2, allow_nan=False) + "\n").encode())


# ---- the report: a picture sheet and a page -------------------------------------------------------------------------


def sheet_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def picture_sheet(rows: list[Row]):
    """One PNG-ready grid: per row its title, then each cell's picture (fitted in THUMB x THUMB) over its caption;
    a None picture (unreadable) is a grey square."""
    from PIL import Image, ImageDraw

    columns = max((len(cells) for _, cells in rows), default=1)
    width = max(MIN_SHEET_WIDTH, GAP + columns * (THUMB + GAP))
    row_height = TITLE_HEIGHT + THUMB + CAPTION_HEIGHT + GAP
    sheet = Image.new("RGB", (width, GAP + len(rows) * row_height), "white")
    draw = ImageDraw.Draw(sheet)
    title_font, caption_font = sheet_font(15), sheet_font(12)
    for r, (title, cells) in enumerate(rows):
        top = GAP + r * row_height
        draw.text((GAP, top), title, fill="black", font=title_font)
        for c, (caption, picture) in enumerate(cells):
            left, y = GAP + c * (THUMB + GAP), top + TITLE_HEIGHT
            if picture is None:
                draw.rectangle((left, y, left + THUMB - 1, y + THUMB - 1), fill="lightgray")
                caption += " (unreadable)"
            else:
                scale = min(THUMB / picture.width, THUMB / picture.height)  # small pictures are enlarged too
                size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
                thumb = picture.convert("RGB").resize(size, Image.Resampling.BICUBIC)
                sheet.paste(thumb, (left + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
            while len(caption) > 1 and draw.textlength(caption, font=caption_font) > THUMB:
                caption = caption[:-2] + "~"
            draw.text((left, y + THUMB + 2), caption, fill="dimgray", font=caption_font)
    return sheet


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    folder: Path, title: str, tables: list[tuple[str, list[str], list[list[str]]]], rows: list[Row], notes: list[str]
) -> Path:
    """``folder/sheet.png`` (the picture sheet) and ``folder/index.html`` (the tables, notes and the sheet)."""
    folder.mkdir(parents=True, exist_ok=True)
    encoded = io.BytesIO()
    picture_sheet(rows).save(encoded, format="PNG")
    write_atomically(folder / "sheet.png", encoded.getvalue())
    sections = "".join(f"<h2>{html.escape(name)}</h2>{html_table(header, body)}" for name, header, body in tables)
    listed = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    page = (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child,th:first-child"
        "{text-align:left}img{max-width:100%}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>{sections}<ul>{listed}</ul>"
        f'<img src="sheet.png" alt="each clip\'s name and label over its frame and pictures"></body></html>\n'
    )
    write_atomically(folder / "index.html", page.encode())
    return folder


def protocol_notes(options: EvaluationOptions) -> list[str]:
    return [f"{name}: {text}" for name, text in PROTOCOL.items()] + [
        f"this run: Wav2CLIP heard the clips at {options.wav2clip_rate} Hz",
        f"intervals: {intervals_note(options)}",
        "The paper's exact protocol was not released: these are the closest public definitions (SPEC section 7).",
    ]


def clip_rows(clips: ClipSet, pictures_of: Callable[[int], list[tuple[str, object]]], count: int) -> list[Row]:
    """Sheet rows of the first ``count`` clips: name and label, their frame when given, then their pictures."""
    from audiotoken.evaluation import read_frame

    rows = []
    for i in range(min(count, len(clips.names))):
        cells: list[tuple[str, object]] = []
        if clips.frames is not None:
            try:
                cells.append(("frame", read_frame(clips.frames[i], clips.names[i])))
            except Exception:  # an unreadable frame was reported by the evaluation; here it is a grey square
                cells.append(("frame", None))
        label = clips.label(i)
        rows.append((clips.names[i] + (f"  ({label})" if label else ""), cells + pictures_of(i)))
    return rows


# ---- evaluate -------------------------------------------------------------------------------------------------------


@reports_errors
def evaluate_command(
    pictures: Path = typer.Option(
        ..., "--pictures", help="Pictures named after their clips: <clip>.png or <clip>-<k>.png.", show_default=False
    ),
    clips: Path = typer.Option(
        ..., "--clips", help="The clips (a folder, or a training dataset with audio/).", show_default=False
    ),
    labels: Path = typer.Option(
        ...,
        "--labels",
        help="The training dataset's labels.csv (name,label,split): labels and the class names.",
        show_default=False,
    ),
    frames: Path | None = typer.Option(
        None,
        "--frames",
        help="Ground-truth frames for IIS and FID: <clip>.png/.jpg or <clip>.mp4 (also in images/ "
        "or video/: a training dataset's folder).",
        show_default=False,
    ),
    models: Path = typer.Option(
        ...,
        "--models",
        help="Folder of the evaluation models (README: Evaluate; make-random --eval writes stand-ins).",
        show_default=False,
    ),
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
    """The paper's AIS, IIS, AIC and FID of pictures drawn from clips, each with its count and a bootstrap 95%
    interval (SPEC 7: the closest public definitions; the paper's own protocol was never released)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    options = evaluation_options(metrics, bootstrap, fid_bootstrap, seed, device, batch_size, wav2clip_rate)
    check_outputs_of(json_path, report)
    pytorch_side("evaluate")
    from audiotoken.evaluation import Evaluator, gather, read_picture

    clip_set, found = gather(pictures, clips, labels, frames)
    with stage_bars(console) as progress:
        evaluator = Evaluator(clip_set, models, options, progress)
        scores = evaluator.score(found)
    report_skipped(console, scores.skipped)
    rows = metric_rows(scores)
    Console(highlight=False).print(
        rich_table(f"{scores.pictures} pictures of {scores.clips} clips", METRIC_HEADER, rows)
    )
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

        tables = [(f"{scores.pictures} pictures of {scores.clips} clips", METRIC_HEADER, rows)]
        write_report(
            report,
            "audiotoken-rt evaluate",
            tables,
            clip_rows(clip_set, pictures_of, sheet_clips),
            protocol_notes(options),
        )
        console.print(f"wrote {report}/index.html and {report}/sheet.png")


# ---- compare --------------------------------------------------------------------------------------------------------


def preset_options(preset: str, overrides: dict):
    """GenerationOptions of a preset (the bundle's recipe, the fast one, the official inference), the options the
    user set applied over it."""
    from runtime.pipeline import GenerationOptions

    given = {name: value for name, value in overrides.items() if value is not None}
    if preset == "official":
        return GenerationOptions.official(**given)
    return GenerationOptions(fast=preset == "fast", **given)


def picture_size(pipeline) -> tuple[int, int]:
    return tuple(pipeline.contracts["vae_decoder"].outputs[0].shape[2:])


def psnr_summary(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    return {
        "pictures": len(values),
        "identical": len(values) - len(finite),
        "mean_db": sum(finite) / len(finite) if finite else None,
        "min_db": min(finite) if finite else None,
    }


def draw_pairs(
    pipelines: dict, sides: dict, clips: list[Path], clip_set: ClipSet, targets: dict, overwrite: bool, console
):
    """Draw every clip on both sides; PSNR of each picture pair; pictures saved where ``targets`` says (in the order
    of ``clips``). -> the pictures per side as (the clip's index in ``clip_set``, found by name: the set may be
    sorted, ``clips`` in any order; k; picture), the pairs as dicts, and the clips that failed."""
    from audiotoken.evaluation import psnr
    from runtime.picture import save_png

    index = {name: c for c, name in enumerate(clip_set.names)}
    drawn: dict[str, list] = {name: [] for name in sides}
    pairs, failed = [], []
    with stage_bars(console) as progress:
        for i, clip in enumerate(clips):
            generations = {}
            try:
                for name in sides:
                    stage = f"{clip.stem} {name.upper()}"
                    generations[name] = pipelines[name].draw(
                        clip, sides[name], progress=lambda s, d, t, stage=stage: progress(f"{stage}: {s}", d, t)
                    )
            except AudioTokenError as exc:
                failed.append(clip.name)
                console.print(f"error: {clip.name}: {exc}")
                continue
            pictures = zip(generations["a"].pictures, generations["b"].pictures, strict=True)
            for k, (a, b) in enumerate(pictures):
                pairs.append({"clip": clip.name, "index": k, "seed": generations["a"].seeds[k], "psnr_db": psnr(a, b)})
                for name, picture in (("a", a), ("b", b)):
                    drawn[name].append((index[clip.stem], k, picture))
                    if targets:
                        path = targets[name][i][k]
                        save_png(picture, path, generations[name].metadata(k), overwrite=overwrite)
            progress("clips", i + 1, len(clips))
    return drawn, pairs, failed


def psnr_text(value: float, unit: str = "") -> str:
    return "identical" if math.isinf(value) else f"{value:.2f}{unit}"


def metric_deltas(clip_set: ClipSet, models: Path, options: EvaluationOptions, drawn: dict, console):
    """Both sides' scores with one evaluator (the clip side embedded once) -> (rows of A, B, B - A, n; the JSON part)."""
    from audiotoken.evaluation import Evaluator, Picture

    with stage_bars(console) as progress:
        evaluator = Evaluator(clip_set, models, options, progress)
        scores = {
            name: evaluator.score(
                [Picture(f"{name.upper()} {clip_set.names[c]}-{k}", c, picture) for c, k, picture in drawn[name]],
                f"pictures {name.upper()}",
            )
            for name in drawn
        }
    report_skipped(console, list(dict.fromkeys(scores["a"].skipped + scores["b"].skipped)))
    rows, deltas = [], {}
    for metric, result in scores["a"].metrics.items():
        a, b = result.value, scores["b"].metrics[metric].value
        deltas[metric] = None if a is None or b is None else b - a
        delta = "-" if deltas[metric] is None else f"{deltas[metric]:+.2f}"
        rows.append([metric + (" %" if metric in PERCENT else ""), number(a), number(b), delta, str(result.n)])
    return rows, {"delta": deltas, "metrics": {name: score.as_json() for name, score in scores.items()}}


PSNR_HEADER = ["clip", "picture", "seed", "PSNR"]
DELTA_HEADER = ["metric", "A", "B", "delta", "n"]


@reports_errors
def compare_command(
    bundle_a: Path = typer.Argument(..., help="Engine bundle A (the reference, e.g. fp32).", show_default=False),
    bundle_b: Path = typer.Argument(
        ..., help="Engine bundle B (e.g. int8, or fast; may be A again with another preset).", show_default=False
    ),
    clips: list[Path] = typer.Argument(
        ..., help="Clips drawn by both, with the same seeds.", show_default=False, metavar="CLIP..."
    ),
    preset_a: str = typer.Option(
        "bundle",
        "--preset-a",
        **choice(PRESETS),
        help="A's recipe: the bundle's own, fast (LCM), or official (PNDM 50).",
    ),
    preset_b: str = typer.Option("bundle", "--preset-b", **choice(PRESETS), help="B's recipe."),
    seed: int = typer.Option(0, "--seed", help="Seed of each clip's first picture (picture k: SEED+k), both sides."),
    num_images: int = typer.Option(1, "--num-images", help="Pictures per clip and side."),
    steps: int | None = typer.Option(
        None, "--steps", help="Steps on both sides (default: each preset's).", show_default=False
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        **choice(SCHEDULER_NAMES),
        help="Scheduler on both sides (default: each preset's).",
        show_default=False,
    ),
    guidance: float | None = typer.Option(
        None, "--guidance", help="Guidance on both sides (default: each preset's).", show_default=False
    ),
    prompt: str | None = typer.Option(
        None, "--prompt", help="Prompt template holding <*> (default: each bundle's).", show_default=False
    ),
    backend: str = typer.Option("onnxruntime", "--backend", help=f"{', '.join(backend_names())}."),
    device: str = typer.Option("cpu", "--device", **choice(DEVICES), help="Where the engines run."),
    out: Path | None = typer.Option(
        None, "--out", help="Keep the pictures: OUT/a/ and OUT/b/ (<clip>.png, -<k> for several).", show_default=False
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace pictures that exist in OUT."),
    models: Path | None = typer.Option(
        None, "--models", help="Evaluation models: also compare AIS, IIS, AIC and FID.", show_default=False
    ),
    labels: Path | None = typer.Option(None, "--labels", help="labels.csv, for AIC.", show_default=False),
    frames: Path | None = typer.Option(
        None, "--frames", help="Ground-truth frames, for IIS and FID.", show_default=False
    ),
    metrics: str | None = metric_option("metrics", "--metrics", default=None, show_default=False),
    bootstrap: int = metric_option("bootstrap", "--bootstrap"),
    fid_bootstrap: int = metric_option("fid_bootstrap", "--fid-bootstrap"),
    wav2clip_rate: int = wav2clip_rate_option(),
    eval_device: str = typer.Option(
        default_of(EvaluationOptions, "device"),
        "--eval-device",
        **choice(EVAL_DEVICES),
        help="Where the evaluation models run.",
    ),
    json_path: Path | None = typer.Option(
        None, "--json", help="Also write PSNRs and metrics as JSON.", show_default=False
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write sheet.png (A beside B) and index.html here.", show_default=False
    ),
    sheet_clips: int = typer.Option(
        SHEET_CLIPS, "--sheet-clips", help="Clips shown on the --report sheet (the first)."
    ),
) -> None:
    """Draw the same clips with the same seeds from two bundles or recipes (fp32 vs int8, default vs fast): the PSNR
    of every picture pair, and with --models the metric deltas (B - A). A bad clip is reported and skipped."""
    from rich.console import Console

    from runtime.generate import check_outputs, jobs_for, picture_paths
    from runtime.pipeline import Pipeline

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    missing = [str(clip) for clip in clips if not clip.is_file()]
    if missing:
        raise ConfigError(f"no such clip: {shown(missing)}", hint="name existing sound files")
    if models is None and (labels is not None or frames is not None):
        raise ConfigError("--labels and --frames feed the metrics", hint="pass --models DIR too, or leave them out")
    stems = [clip.stem for clip in clips]
    if len(set(stems)) != len(stems):
        raise ConfigError("two clips share a name, and pictures are named after their clips", hint="rename one")
    given = {"seed": seed, "num_images": num_images, "steps": steps, "scheduler": scheduler, "guidance": guidance}
    sides = {
        "a": preset_options(preset_a, {**given, "prompt": prompt}),
        "b": preset_options(preset_b, {**given, "prompt": prompt}),
    }
    for side in sides.values():
        side.check()
    options = evaluation_options(  # the intervals' seed is the evaluation's default, not the pictures' --seed
        metrics,
        bootstrap,
        fid_bootstrap,
        default_of(EvaluationOptions, "seed"),
        eval_device,
        default_of(EvaluationOptions, "batch_size"),
        wav2clip_rate,
    )
    check_outputs_of(json_path, report)
    targets = {}
    if out is not None:
        jobs = jobs_for(list(clips), None)
        for name in sides:
            paths = picture_paths(jobs, out / name, num_images)
            check_outputs(paths, out / name, overwrite)
            targets[name] = [paths[job] for job in jobs]
    clip_set = ClipSet(tuple(stems), tuple(clips))
    if models is not None:
        pytorch_side("compare")
        from audiotoken import eval_models
        from audiotoken.evaluation import clip_set as labelled_clip_set
        from audiotoken.evaluation import metrics_to_compute

        eval_models.import_torchvision()  # before --backend torch's diffusers, which imports any torchvision it finds

        clip_set = labelled_clip_set(stems, dict(zip(stems, clips, strict=True)), labels, frames)
        for key in eval_models.models_for(metrics_to_compute(options, clip_set)):  # all checked before any drawing
            eval_models.model_path(models, key)
    with console.status(f"opening {bundle_a} and {bundle_b} ({backend}, {device})"):
        pipelines = {
            "a": Pipeline.open(bundle_a, backend=backend, device=device),
            "b": Pipeline.open(bundle_b, backend=backend, device=device),
        }
    for name, pipeline in pipelines.items():
        pipeline.prepare(sides[name])  # a recipe the bundle lacks is refused here, not once per clip
    sizes = {name: picture_size(pipeline) for name, pipeline in pipelines.items()}
    if sizes["a"] != sizes["b"]:
        raise ConfigError(
            f"the bundles draw pictures of different sizes ({sizes['a']} and {sizes['b']})",
            hint="compare bundles exported at one size",
        )

    drawn, pairs, failed = draw_pairs(pipelines, sides, list(clips), clip_set, targets, overwrite, console)
    stdout = Console(highlight=False)
    psnr_rows = [[p["clip"], str(p["index"]), str(p["seed"]), psnr_text(p["psnr_db"])] for p in pairs]
    stdout.print(rich_table("PSNR of B against A, dB", PSNR_HEADER, psnr_rows))
    summary = psnr_summary([p["psnr_db"] for p in pairs])
    result: dict = {
        "a": {"bundle": str(bundle_a), "preset": preset_a},
        "b": {"bundle": str(bundle_b), "preset": preset_b},
        "pictures": [{**p, "psnr_db": None if math.isinf(p["psnr_db"]) else p["psnr_db"]} for p in pairs],
        "psnr": summary,
        "failed": failed,
    }
    tables = [("PSNR of B against A, dB", PSNR_HEADER, psnr_rows)]
    if models is not None and pairs:
        delta_rows, scored = metric_deltas(clip_set, models, options, drawn, console)
        stdout.print(rich_table("metrics (delta = B - A)", DELTA_HEADER, delta_rows))
        result.update(scored)
        tables.append(("metrics (delta = B - A)", DELTA_HEADER, delta_rows))
    console.print(
        f"{summary['pictures']} picture pairs: mean PSNR {number(summary['mean_db'])} dB, "
        f"min {number(summary['min_db'])} dB, {summary['identical']} identical"
    )
    if json_path:
        write_json(json_path, result)
        console.print(f"wrote {json_path}")
    if report:
        psnr_of = {(p["clip"], p["index"]): p["psnr_db"] for p in pairs}

        def pictures_of(clip: int) -> list[tuple[str, object]]:
            cells = [(f"A {k}", picture) for i, k, picture in drawn["a"] if i == clip]
            cells += [
                (f"B {k}: {psnr_text(psnr_of[(clip_set.audio[clip].name, k)], ' dB')}", picture)
                for i, k, picture in drawn["b"]
                if i == clip
            ]
            return cells

        notes = [f"A: {bundle_a} ({preset_a}); B: {bundle_b} ({preset_b}); seeds from {seed}; PSNR in dB"]
        write_report(report, "audiotoken-rt compare", tables, clip_rows(clip_set, pictures_of, sheet_clips), notes)
        console.print(f"wrote {report}/index.html and {report}/sheet.png")
    if failed:
        raise typer.Exit(1)
