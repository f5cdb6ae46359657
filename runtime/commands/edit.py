"""``audiotoken-rt edit``: a picture changed by what a sound means (SDEdit, optionally masked), with a bundle's engines.

Place in the data flow: picture (+ mask) -> ``runtime.source_picture`` (read, fit to the engines) and clips (or
``--mix``) -> ``runtime.pipeline.Pipeline.draw_edit`` (encode the picture, noise it to ``--strength``, denoise with
the sound's prompt, keep the mask's black region on the picture's own trajectory) -> the result at the picture's
size and framing, composited under the mask -> ``runtime.picture.save_png`` -> ``OUT/<picture stem>-<clip stem>.png``.
The picture and mask are read and every output path checked before any work; then a batch of clips keeps going
past a clip that cannot be read and stops at a failure that is not a sound's (``runtime.commands.jobs.Batch``; each
picture one line on stdout). The PNG records the source picture (name, sha256), strength and mask.
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.commands import drawing_options as shared
from runtime.commands.cli import option, options_from, reports_errors
from runtime.commands.jobs import CLIPS_HELP, MIX_HELP, Batch, Job, jobs_for, picture_paths
from runtime.pipeline import EditOptions, Generation, Stopwatch

PICTURE_HELP = (
    "The picture to edit: PNG, JPEG, WebP (any mode, any size; transparency kept). It is scaled to fit the "
    "bundle's size, its margins filled by mirroring, and the edit comes back at the picture's own size and framing."
)
MASK_HELP = (
    "Where the picture may change: white may change, black stays exactly the picture's (a mask of another size is "
    "resized to the picture's, with a note)."
)


@reports_errors
def edit_command(
    picture: Path = typer.Argument(..., help=PICTURE_HELP, show_default=False, metavar="PICTURE"),
    clips: list[Path] = typer.Argument(None, help=CLIPS_HELP, show_default=False, metavar="CLIP..."),
    engines: Path = shared.ENGINES,
    out: Path = typer.Option(
        ...,
        "--out",
        help="Folder for the pictures: OUT/<picture stem>-<clip stem>.png (-<k> for several).",
        show_default=False,
    ),
    strength: float = option(EditOptions, "strength", "--strength"),
    mask: Path | None = typer.Option(None, "--mask", help=MASK_HELP, show_default=False),
    feather: int = option(EditOptions, "feather", "--feather"),
    fast: bool = shared.FAST,
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
    """Edit a picture with each sound clip (and a --mix of clips): the picture moves toward what the sound means, as
    far as --strength lets it, only where --mask is white; a clip that cannot be read is reported and skipped. Each
    picture written is one line on stdout, PATH<TAB>seed N; progress and messages go to stderr."""
    from rich.console import Console

    from runtime.pipeline import Pipeline
    from runtime.source_picture import load_mask, load_picture

    console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)  # paths shown as they are
    options = options_from(EditOptions, locals())
    options.check()
    targets = picture_paths(jobs_for(clips or [], mix), out, num_images, prefix=f"{picture.stem}-")
    batch = Batch.check(targets, out, overwrite, skip_existing)
    source = load_picture(picture)
    keep = load_mask(mask, source.size) if mask is not None else None
    if keep is not None and keep.note:
        console.print(f"note: {keep.note}")
    with console.status(f"opening {engines} ({backend}, {device})"):
        pipeline = Pipeline.open(engines, backend=backend, device=device)
    pipeline.prepare(options)  # once, up front: a bad prompt or a recipe the bundle lacks is not a bad clip

    def draw(job: Job, watch: Stopwatch) -> Generation:
        return pipeline.draw_edit(source, job.sounds, options, mask=keep, watch=watch)

    batch.run(draw, pipeline.bundle.manifest.bundle_id, console, verbose)
