"""What ``evaluate`` and ``compare`` show: the tables (terminal and HTML), the JSON, and ``--report DIR``: a picture
sheet (``sheet.png``: each clip's name and label over its ground-truth frame and its pictures) and a page
(``index.html``) with the tables, the protocol and every model file's sha256.

Place in the data flow: ``scoring.Scores`` (and ``compare``'s PSNRs) -> these functions -> stdout, ``--json``,
``--report``. A report made from stand-ins, or from weights not known to be the published files, says so in its
title (``report_title``). Importing this module needs no torch.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from audiotoken.evaluation.inputs import ClipSet, read_frame
from audiotoken.evaluation.scoring import PAPER, PERCENT, PROTOCOL, EvaluationOptions, intervals_note, unverified_models
from runtime.atomic import write_atomically

THUMB, GAP, TITLE_HEIGHT, CAPTION_HEIGHT, MIN_SHEET_WIDTH = 160, 8, 22, 18, 520  # picture sheet layout, pixels
SHEET_CLIPS = 48
Row = tuple[str, list[tuple[str, object]]]  # a sheet row: its title, and (caption, PIL picture or None) cells


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
        "The paper's exact protocol was not released: these are the closest public definitions "
        "(docs/method.md#evaluation-metrics).",
    ]


def clip_rows(clips: ClipSet, pictures_of: Callable[[int], list[tuple[str, object]]], count: int) -> list[Row]:
    """Sheet rows of the first ``count`` clips: name and label, their frame when given, then their pictures."""
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


def report_title(command: str, model_files: list) -> str:
    """``audiotoken-rt <command>``, and when a model's weights are not known to be the published file (stand-ins,
    other weights, or a file whose published sha256 is unknown), which ones."""
    doubtful = unverified_models(model_files)
    if not doubtful:
        return f"audiotoken-rt {command}"
    return f"audiotoken-rt {command} - NOT the published models (stand-ins or other weights: {'; '.join(doubtful)})"


def model_notes(model_files: list) -> list[str]:
    """One report line per model file read: its sha256 and whether it is the published file."""
    return [f"{r.model}: {r.file} sha256 {r.sha256} ({r.status})" for r in model_files]
