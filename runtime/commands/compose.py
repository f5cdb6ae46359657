"""``audiotoken-rt compose``: several sounds in one picture, in one prompt (``<1>``..``<4>``) or each in a region.

Place in the data flow: clips -> ``runtime.pipeline.Pipeline.draw_compose`` (one token per clip; without
``--layout`` the text engine splices token k at ``<k>``; with it, each region's one-sound prompt is blended with
the others under soft masks from ``runtime.regions``, around a ``--background`` prompt) ->
``runtime.picture.save_png`` -> ``OUT/<stem1>+<stem2>....png``, its text chunks naming every clip and region.
Options, the layout (every part of the picture must belong to a sound or the background) and output paths are
checked before any work (``runtime.commands.jobs``); ``--preview-layout`` checks and writes only its own file,
``OUT/<stems>.layout.png``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.commands import drawing_options as shared
from runtime.commands.cli import option, options_from, reports_errors
from runtime.commands.jobs import Batch, Job, picture_line, picture_paths
from runtime.contract import TOKEN_SLOTS
from runtime.errors import ConfigError
from runtime.pipeline import ComposeOptions, Generation, Stopwatch

COMPOSE_CLIPS_HELP = (
    f"The sounds, 1 to {TOKEN_SLOTS}: clip k goes to <k> of the prompt, or to region k of --layout. Read as in "
    "`generate` (10 s from --start, 16 kHz)."
)
COMPOSE_PROMPT_HELP = (
    "Without --layout: one prompt holding <1>..<K>, one per clip (default: the bundle's template with '<1> and "
    "<2> ...' for <*>). With --layout: every region's one-sound prompt, holding <*> (default: the bundle's template)."
)


def write_layout_preview(pipeline, options: ComposeOptions, path: Path, overwrite: bool) -> None:
    """The layout's regions as a picture at the bundle's size (no sound is read, no engine runs)."""
    from runtime.picture import save_png
    from runtime.regions import layout_picture, parse_layout, region_weights

    boxes = parse_layout(options.layout)
    manifest = pipeline.bundle.manifest
    h, w = pipeline.latent_shape[2:]
    weights = region_weights(boxes, (h, w), background=options.background is not None, blend=options.blend)
    preview = layout_picture(weights, boxes, (manifest.width, manifest.height))
    save_png(preview, path, {"layout": "; ".join(b.describe() for b in boxes)}, overwrite=overwrite)
    picture_line(path)


@reports_errors
def compose_command(
    clips: list[Path] = typer.Argument(..., help=COMPOSE_CLIPS_HELP, show_default=False, metavar="CLIP..."),
    engines: Path = shared.ENGINES,
    out: Path = typer.Option(
        ..., "--out", help="Folder for the picture: OUT/<stem1>+<stem2>....png (-<k> for several).", show_default=False
    ),
    prompt: str | None = typer.Option(None, "--prompt", help=COMPOSE_PROMPT_HELP, show_default=False),
    layout: str | None = option(ComposeOptions, "layout", "--layout", show_default=False),
    background: str | None = option(ComposeOptions, "background", "--background", show_default=False),
    blend: float = option(ComposeOptions, "blend", "--blend"),
    fast: bool = shared.FAST,
    steps: int | None = shared.STEPS,
    guidance: float | None = shared.GUIDANCE,
    seed: int | None = shared.SEED,
    scheduler: str | None = shared.SCHEDULER,
    eta: float | None = shared.ETA,
    timestep_spacing: str | None = shared.SPACING,
    negative_prompt: str = shared.NEGATIVE_PROMPT,
    num_images: int = shared.NUM_IMAGES,
    start: float = shared.START,
    downmix: str = shared.DOWNMIX,
    backend: str = shared.BACKEND,
    device: str = shared.DEVICE,
    preview_layout: bool = typer.Option(
        False,
        "--preview-layout",
        help="Write OUT/<stems>.layout.png (each region's colour where it draws, numbered) instead of drawing.",
    ),
    overwrite: bool = shared.OVERWRITE,
    skip_existing: bool = shared.SKIP_EXISTING,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print a stage timing table."),
) -> None:
    """Draw several sounds in one picture: "a photo of <1> next to <2>", or each sound in its region (--layout
    left,right) around a --background. Each picture written is one line on stdout, PATH<TAB>seed N."""
    from rich.console import Console

    from runtime.pipeline import Pipeline

    console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)  # paths shown as they are
    options = options_from(ComposeOptions, locals())
    options.check()
    if preview_layout and options.layout is None:
        raise ConfigError("--preview-layout shows a --layout; this composition has none (one prompt)")
    job = Job(tuple(clips), "+".join(clip.stem for clip in clips), " | ".join(map(str, clips)))
    # --preview-layout writes its own file, and only that one is checked: the composed picture is not drawn.
    targets = {job: [out / f"{job.stem}.layout.png"]} if preview_layout else picture_paths([job], out, num_images)
    batch = Batch.check(targets, out, overwrite, skip_existing)
    if preview_layout and batch.existing is not None and batch.existing.kept:
        console.print(batch.existing.summary())
        return
    with console.status(f"opening {engines} ({backend}, {device})"):
        pipeline = Pipeline.open(engines, backend=backend, device=device)
    pipeline.prepare_compose(options, len(clips))  # before any sound is read: placeholders, slots, regions
    if preview_layout:
        (path,) = targets[job]
        write_layout_preview(pipeline, options, path, batch.replaces(path))
        return

    def draw(job: Job, watch: Stopwatch) -> Generation:
        return pipeline.draw_compose(list(job.sounds), options, watch=watch)

    batch.run(draw, pipeline.bundle.manifest.bundle_id, console, verbose)
