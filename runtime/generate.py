"""``audiotoken-rt generate``: a picture for each sound clip, with a bundle's engines (torch-free).

Place in the data flow: clips -> ``runtime.pipeline.Pipeline.draw`` -> ``runtime.picture.save_png`` ->
``OUT/<clip stem>.png`` (``-<k>`` for several pictures per clip). Before any work it checks the options, the
prompts and every output path, so a mistake costs nothing; then a batch keeps going past a bad clip. Each
picture written is one line (path and seed); a closing line counts pictures and failed clips.
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.audio import DOWNMIX_MODES
from runtime.backends import DEVICES, backend_names
from runtime.command import choice, option, reports_errors
from runtime.errors import AudioTokenError, ConfigError
from runtime.pipeline import GenerationOptions
from runtime.schedulers import SCHEDULER_NAMES

CLIPS_HELP = (
    "Sound clips: WAV, FLAC, OGG/Vorbis or MP3, any rate and channel count. Each is read as 10 s from --start "
    "(default 0): resampled to 16 kHz, channel 0 (or the mean, --downmix mean), a shorter clip repeated to fill "
    "10 s. For names starting with '-', put them after '--' at the end: generate --engines E --out O -- -x.wav"
)


def picture_paths(clips: list[Path], out: Path, num_images: int) -> dict[Path, list[Path]]:
    """The pictures each clip will write: OUT/<stem>.png, or OUT/<stem>-<k>.png for several."""
    if num_images == 1:
        return {clip: [out / f"{clip.stem}.png"] for clip in clips}
    return {clip: [out / f"{clip.stem}-{k}.png" for k in range(num_images)] for clip in clips}


def check_outputs(targets: dict[Path, list[Path]], out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an OUT that is a file, two clips writing one picture, or pictures that exist."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder", hint="pass a folder for the pictures")
    owners: dict[Path, Path] = {}
    for clip, paths in targets.items():
        for path in paths:
            if path in owners and owners[path] != clip:
                raise ConfigError(
                    f"clips {owners[path]} and {clip} would both write {path}",
                    hint="rename one, or run them separately",
                )
            owners[path] = clip
    existing = [str(path) for path in owners if path.exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise ConfigError(
            f"{shown} already exist{'s' if len(existing) == 1 else ''}; nothing was drawn",
            hint="pass --overwrite to replace them, or choose another --out",
        )


@reports_errors
def generate_command(
    clips: list[Path] = typer.Argument(..., help=CLIPS_HELP, show_default=False, metavar="CLIP..."),
    engines: Path = typer.Option(
        ..., "--engines", help="Engine bundle folder (from `audiotoken-rt export`).", show_default=False
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for the pictures: OUT/<clip stem>.png (-<k> for several).", show_default=False
    ),
    fast: bool = option(GenerationOptions, "fast", "--fast"),
    steps: int | None = option(GenerationOptions, "steps", "--steps", show_default=False),
    guidance: float | None = option(GenerationOptions, "guidance", "--guidance", show_default=False),
    seed: int | None = option(GenerationOptions, "seed", "--seed", show_default=False),
    scheduler: str | None = option(
        GenerationOptions, "scheduler", "--scheduler", show_default=False, **choice(SCHEDULER_NAMES)
    ),
    prompt: str | None = option(GenerationOptions, "prompt", "--prompt", show_default="the bundle's"),
    negative_prompt: str = option(GenerationOptions, "negative_prompt", "--negative-prompt"),
    num_images: int = option(GenerationOptions, "num_images", "--num-images"),
    start: float = option(GenerationOptions, "start", "--start"),
    downmix: str = option(GenerationOptions, "downmix", "--downmix", **choice(DOWNMIX_MODES)),
    backend: str = typer.Option(
        "onnxruntime", "--backend", help=f"{', '.join(backend_names())} (the PyTorch reference networks)."
    ),
    device: str = typer.Option(
        "cpu",
        "--device",
        **choice(DEVICES),
        help="For onnxruntime: cpu, cuda, tensorrt, or openvino (Intel CPUs; bf16 where the CPU has it).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace pictures that exist."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print a stage timing table per clip."),
) -> None:
    """Draw a picture for each sound clip with a bundle's engines; a bad clip is reported and skipped."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from runtime.picture import save_png
    from runtime.pipeline import Pipeline

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    options = GenerationOptions(
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        guidance=guidance,
        scheduler=scheduler,
        seed=seed,
        num_images=num_images,
        fast=fast,
        start=start,
        downmix=downmix,
    )
    options.check()
    targets = picture_paths(clips, out, num_images)
    check_outputs(targets, out, overwrite)
    with console.status(f"opening {engines} ({backend}, {device})"):
        pipeline = Pipeline.open(engines, backend=backend, device=device)
    pipeline.prepare(options)  # once, up front: a bad prompt or a recipe the bundle lacks is not a bad clip

    failed: list[str] = []
    written = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        overall = bar.add_task("clips", total=len(clips))
        for clip, paths in targets.items():
            task = bar.add_task(f"{clip.name}: start", total=1)

            def report(stage: str, done: int, total: int, task=task, clip=clip) -> None:
                bar.update(task, description=f"{clip.name}: {stage}", completed=done, total=total)

            try:
                result = pipeline.draw(clip, options, progress=report)
                for k, (picture, path) in enumerate(zip(result.pictures, paths, strict=True)):
                    metadata = {**result.metadata(k, clip.name), "bundle": pipeline.bundle.manifest.bundle_id}
                    save_png(picture, path, metadata, overwrite=overwrite)
                    console.print(f"wrote {path} (seed {result.seeds[k]})")
                    written += 1
                if verbose:
                    console.print(timing_table(clip.name, result.timings))
            except AudioTokenError as exc:
                failed.append(clip.name)
                console.print(f"error: {exc}")
            bar.remove_task(task)
            bar.advance(overall)
    summary = f"wrote {written} picture{'s' * (written != 1)} to {out}"
    if failed:
        summary += f" ({len(failed)} clip{'s' * (len(failed) != 1)} failed)"
    console.print(summary)
    if failed:
        raise typer.Exit(1)


def timing_table(title: str, timings):
    """A rich table of stage wall times (ms), with the mean UNet step."""
    from rich.table import Table

    table = Table(title=f"{title}: stage timings", show_edge=False)
    table.add_column("stage")
    table.add_column("ms", justify="right")
    for stage, ms in timings.stages.items():
        table.add_row(stage, f"{ms:.1f}")
    if timings.unet_calls:
        table.add_row("unet (per call)", f"{timings.stages['unet'] / timings.unet_calls:.1f}")
    return table
