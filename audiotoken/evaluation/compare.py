"""``audiotoken-rt compare``: two bundles (or recipes) drawn side by side with the same seeds, the PSNR of every
picture pair and, with ``--models``, both sides' metrics and their differences.

Each side draws with a preset's recipe (``runtime.sampling``: the bundle's own, its distillation preset's, the
official inference), ``--steps``/``--scheduler``/``--guidance``/``--eta``/``--spacing`` laid over both; the JSON
records the recipe each side drew with (``Sampling.to_json``).

Place in the data flow: clips -> ``runtime.pipeline`` (bundle A, bundle B) -> pictures -> PSNR, and
``scoring.Evaluator`` (one for both sides: the clip side embedded once) -> tables on stdout, ``--json`` and
``--report DIR`` (``report``). Importing this module needs no torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from audiotoken.evaluation.evaluate import (
    EVAL_DEVICES,
    EvaluationInputs,
    check_outputs_of,
    evaluation_options,
    metric_option,
    pytorch_side,
    warn_unpublished,
    wav2clip_rate_option,
)
from audiotoken.evaluation.inputs import ClipSet, Picture, shown
from audiotoken.evaluation.inputs import clip_set as labelled_clip_set
from audiotoken.evaluation.metrics import psnr
from audiotoken.evaluation.report import (
    SHEET_CLIPS,
    clip_rows,
    model_notes,
    number,
    report_skipped,
    report_title,
    rich_table,
    stage_bars,
    write_json,
    write_report,
)
from audiotoken.evaluation.scoring import PERCENT, EvaluationOptions, Evaluator, metrics_to_compute
from runtime.backends import DEVICES, backend_names
from runtime.commands.cli import choice, default_of, option, options_from, reports_errors
from runtime.contract import VAE_DECODER
from runtime.errors import AudioTokenError, ConfigError
from runtime.schedulers import SCHEDULER_NAMES, TIMESTEP_SPACINGS

PRESETS = ("bundle", "fast", "official")  # the bundle's own recipe; its distillation preset's; PNDM 50 steps 7.5


def preset_options(preset: str, overrides: dict):
    """GenerationOptions of a preset (the bundle's recipe, its distillation preset's, the official inference), the
    options the user set applied over it."""
    from runtime.pipeline import GenerationOptions

    given = {name: value for name, value in overrides.items() if value is not None}
    if preset == "official":
        return GenerationOptions.official(**given)
    return GenerationOptions(fast=preset == "fast", **given)


def picture_size(pipeline) -> tuple[int, int]:
    return tuple(pipeline.contracts[VAE_DECODER].outputs[0].shape[2:])


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
    from runtime.picture import save_png
    from runtime.pipeline import Stopwatch

    index = {name: c for c, name in enumerate(clip_set.names)}
    drawn: dict[str, list] = {name: [] for name in sides}
    pairs, failed = [], []
    with stage_bars(console) as progress:
        for i, clip in enumerate(clips):
            generations = {}
            try:
                for name in sides:
                    side = f"{clip.stem} {name.upper()}"
                    watch = Stopwatch(lambda stage, done, total, side=side: progress(f"{side}: {stage}", done, total))
                    generations[name] = pipelines[name].draw(clip, sides[name], watch=watch)
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
    """Both sides' scores with one evaluator (the clip side embedded once) -> (rows of A, B, B - A, n; the JSON part;
    the model files read)."""
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
    scored = {"delta": deltas, "metrics": {name: score.as_json() for name, score in scores.items()}}
    return rows, scored, evaluator.model_files


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
        help="A's recipe: the bundle's own, fast (its distillation preset's: LCM, Hyper-SD...), or official (PNDM 50).",
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
    eta: float | None = typer.Option(
        None, "--eta", help="DDIM's eta on both sides (default: each preset's).", show_default=False
    ),
    spacing: str | None = typer.Option(
        None,
        "--spacing",
        **choice(TIMESTEP_SPACINGS),
        help="Timestep spacing on both sides (default: each preset's).",
        show_default=False,
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
    models: Path | None = option(EvaluationInputs, "models", "--models", show_default=False),
    labels: Path | None = option(EvaluationInputs, "labels", "--labels", show_default=False),
    frames: Path | None = option(EvaluationInputs, "frames", "--frames", show_default=False),
    metrics: str | None = metric_option("metrics", "--metrics", default=None, show_default=False),
    bootstrap: int = metric_option("bootstrap", "--bootstrap"),
    fid_bootstrap: int = metric_option("fid_bootstrap", "--fid-bootstrap"),
    wav2clip_rate: int = wav2clip_rate_option(),
    eval_device: str = metric_option("device", "--eval-device", **choice(EVAL_DEVICES)),
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

    from runtime.commands.jobs import check_outputs, jobs_for, picture_paths
    from runtime.pipeline import Pipeline

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    missing = [str(clip) for clip in clips if not clip.is_file()]
    if missing:
        raise ConfigError(f"no such clip: {shown(missing)}", hint="name existing sound files")
    options_from(EvaluationInputs, locals()).check()
    stems = [clip.stem for clip in clips]
    if len(set(stems)) != len(stems):
        raise ConfigError("two clips share a name, and pictures are named after their clips", hint="rename one")
    given = {"seed": seed, "num_images": num_images, "steps": steps, "scheduler": scheduler, "guidance": guidance}
    given |= {"eta": eta, "timestep_spacing": spacing}
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
        from audiotoken.evaluation import models as eval_models

        clip_set = labelled_clip_set(stems, dict(zip(stems, clips, strict=True)), labels, frames)
        for key in eval_models.models_for(metrics_to_compute(options, clip_set)):  # all checked before any drawing
            eval_models.model_files(models, key)
    with console.status(f"opening {bundle_a} and {bundle_b} ({backend}, {device})"):
        pipelines = {
            "a": Pipeline.open(bundle_a, backend=backend, device=device),
            "b": Pipeline.open(bundle_b, backend=backend, device=device),
        }
    recipes = {}  # a recipe the bundle lacks is refused here, not once per clip
    for name, pipeline in pipelines.items():
        recipes[name] = pipeline.prepare(sides[name])[0].sampling(pipeline.bundle.manifest.recipe)
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
        "a": {"bundle": str(bundle_a), "preset": preset_a, "recipe": recipes["a"].to_json()},
        "b": {"bundle": str(bundle_b), "preset": preset_b, "recipe": recipes["b"].to_json()},
        "pictures": [{**p, "psnr_db": None if math.isinf(p["psnr_db"]) else p["psnr_db"]} for p in pairs],
        "psnr": summary,
        "failed": failed,
    }
    tables = [("PSNR of B against A, dB", PSNR_HEADER, psnr_rows)]
    model_files = []  # models.FileRecord of every evaluation model read
    if models is not None and pairs:
        delta_rows, scored, model_files = metric_deltas(clip_set, models, options, drawn, console)
        warn_unpublished(console, model_files)
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

        bundles = {"a": bundle_a, "b": bundle_b}
        drew = "; ".join(f"{name.upper()}: {bundles[name]} ({recipes[name].describe()})" for name in sides)
        notes = [f"{drew}; seeds from {seed}; PSNR in dB"]
        title = report_title("compare", model_files)
        rows = clip_rows(clip_set, pictures_of, sheet_clips)
        write_report(report, title, tables, rows, notes + model_notes(model_files))
        console.print(f"wrote {report}/index.html and {report}/sheet.png")
    if failed:
        raise typer.Exit(1)
