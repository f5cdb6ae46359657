"""``audiotoken-rt generate``: a picture for each sound clip, with a bundle's engines (torch-free).

Place in the data flow: clips (and ``--mix`` of clips) -> ``runtime.commands.jobs`` (the batch: output checks, the
drawing loop, one stdout line per picture) -> ``runtime.pipeline.Pipeline.draw`` -> ``OUT/<clip stem>.png`` (``-<k>``
for several pictures per clip; a mix is named by its stems joined with '+'). Before any work it checks the options,
the prompts, the backend and every output path, so a mistake costs nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.audio import DOWNMIX_MODES
from runtime.backends import DEVICES, backend_names
from runtime.commands.cli import choice, option, options_from, reports_errors
from runtime.commands.jobs import CLIPS_HELP, MIX_HELP, SKIP_EXISTING_HELP, Batch, Job, jobs_for, picture_paths
from runtime.pipeline import Generation, GenerationOptions, Stopwatch
from runtime.schedulers import SCHEDULER_NAMES, TIMESTEP_SPACINGS


@reports_errors
def generate_command(
    clips: list[Path] = typer.Argument(None, help=CLIPS_HELP, show_default=False, metavar="CLIP..."),
    engines: Path = typer.Option(
        ..., "--engines", help="Engine bundle folder (from `audiotoken-rt export`).", show_default=False
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for the pictures: OUT/<clip stem>.png (-<k> for several).", show_default=False
    ),
    fast: bool = option(GenerationOptions, "fast", "--fast"),
    stereo: bool = option(GenerationOptions, "stereo", "--stereo"),
    steps: int | None = option(GenerationOptions, "steps", "--steps", show_default=False),
    guidance: float | None = option(GenerationOptions, "guidance", "--guidance", show_default=False),
    seed: int | None = option(GenerationOptions, "seed", "--seed", show_default=False),
    scheduler: str | None = option(
        GenerationOptions, "scheduler", "--scheduler", show_default=False, **choice(SCHEDULER_NAMES)
    ),
    eta: float | None = option(GenerationOptions, "eta", "--eta", show_default=False),
    timestep_spacing: str | None = option(
        GenerationOptions, "timestep_spacing", "--spacing", show_default=False, **choice(TIMESTEP_SPACINGS)
    ),
    prompt: str | None = option(GenerationOptions, "prompt", "--prompt", show_default="the bundle's"),
    negative_prompt: str = option(GenerationOptions, "negative_prompt", "--negative-prompt"),
    num_images: int = option(GenerationOptions, "num_images", "--num-images"),
    mix: str | None = typer.Option(None, "--mix", help=MIX_HELP, show_default=False),
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
    skip_existing: bool = typer.Option(False, "--skip-existing", help=SKIP_EXISTING_HELP),
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
