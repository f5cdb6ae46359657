"""``audiotoken-rt generate``: a picture for each sound clip, with a bundle's engines (torch-free).

Place in the data flow: clips (and ``--mix`` of clips) -> ``runtime.commands.jobs`` (the batch: output checks, the
drawing loop, one stdout line per picture) -> ``runtime.pipeline.Pipeline.draw`` -> ``OUT/<clip stem>.png`` (``-<k>``
for several pictures per clip; a mix is named by its stems joined with '+'). Before any work it checks the options,
the prompts, the backend and every output path, so a mistake costs nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.commands import drawing_options as shared
from runtime.commands.cli import option, options_from, reports_errors
from runtime.commands.jobs import CLIPS_HELP, MIX_HELP, Batch, Job, jobs_for, picture_paths
from runtime.pipeline import Generation, GenerationOptions, Stopwatch


@reports_errors
def generate_command(
    clips: list[Path] = typer.Argument(None, help=CLIPS_HELP, show_default=False, metavar="CLIP..."),
    engines: Path = shared.ENGINES,
    out: Path = typer.Option(
        ..., "--out", help="Folder for the pictures: OUT/<clip stem>.png (-<k> for several).", show_default=False
    ),
    fast: bool = shared.FAST,
    stereo: bool = option(GenerationOptions, "stereo", "--stereo"),
    steps: int | None = shared.STEPS,
    guidance: float | None = shared.GUIDANCE,
    seed: int | None = shared.SEED,
    scheduler: str | None = shared.SCHEDULER,
    eta: float | None = shared.ETA,
    timestep_spacing: str | None = shared.SPACING,
    prompt: str | None = shared.PROMPT,
    negative_prompt: str = shared.NEGATIVE_PROMPT,
    num_images: int = shared.NUM_IMAGES,
    mix: str | None = typer.Option(None, "--mix", help=MIX_HELP, show_default=False),
    start: float = shared.START,
    downmix: str = shared.DOWNMIX,
    backend: str = shared.BACKEND,
    device: str = shared.DEVICE,
    overwrite: bool = shared.OVERWRITE,
    skip_existing: bool = shared.SKIP_EXISTING,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print a stage timing table per clip."),
) -> None:
    """Draw a picture for each sound clip (and for a --mix of clips) with a bundle's engines; a clip that cannot be
    read is reported and skipped. Each picture written is one line on stdout, PATH<TAB>seed N (cut -f1 gives the
    paths); progress and messages go to stderr."""
    from rich.console import Console

    from runtime.pipeline import Pipeline

    console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)  # paths shown as they are
    options = options_from(GenerationOptions, locals())
    options.check()
    batch = Batch.check(picture_paths(jobs_for(clips or [], mix), out, num_images), out, overwrite, skip_existing)
    with console.status(f"opening {engines} ({backend}, {device})"):
        pipeline = Pipeline.open(engines, backend=backend, device=device)
    pipeline.prepare(options)  # once, up front: a bad prompt or a recipe the bundle lacks is not a bad clip

    def draw(job: Job, watch: Stopwatch) -> Generation:
        return pipeline.draw(job.sounds, options, watch=watch)

    batch.run(draw, pipeline.bundle.manifest.bundle_id, console, verbose)
