"""A batch of pictures, shared by ``generate``, ``edit`` and ``compose`` (and the clips of ``compare``): the jobs (a
clip, a mix, or several clips composed), the pictures each will write and the checks of them before any work, the
loop that draws every job with a progress bar and writes its pictures, and the stage timing table of ``--verbose``.

Place in the data flow: a command's clips -> ``jobs_for`` -> ``picture_paths`` -> ``Batch.check`` (``check_outputs``,
before any engine opens) -> ``Batch.run`` (``runtime.pipeline.Pipeline`` draws each job on a ``Stopwatch`` whose
progress is the job's bar, ``runtime.picture.save_png`` writes) -> one line per picture on stdout
(``PATH<TAB>seed N``), progress, errors and the closing count on stderr. A batch keeps going past a clip that cannot
be read, and stops at a failure that is not a sound's (an engine, NaN from a network), which would fail every later
clip alike. A picture that exists is refused, replaced (``--overwrite``) or, to finish an interrupted batch, kept when
it reads back as a whole PNG (``--skip-existing``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from runtime.contract import UNET
from runtime.errors import AudioLoadError, AudioTokenError, ConfigError
from runtime.pipeline import Generation, Stopwatch, mix_weights

MIX_HELP = (
    "A mix of clips drawn as one more sound: CLIP:WEIGHT items, comma-separated (dog.wav:0.7,rain.wav:0.3); its "
    "token is the weighted mean of theirs. Its pictures are named by the clips' stems joined with '+'."
)
CLIPS_HELP = (
    "Sound clips: WAV, FLAC, OGG/Vorbis or MP3, at 4 to 384 kHz, any channel count. Each is read as 10 s from "
    "--start (default 0): resampled to 16 kHz, channel 0 (or the mean, --downmix mean), a shorter clip repeated to "
    "fill 10 s. For names starting with '-', put them after '--' at the end: generate --engines E --out O -- -x.wav"
)
SKIP_EXISTING_HELP = (
    "Keep the pictures that exist and read back as whole PNGs, and draw the others (to finish an interrupted "
    "batch); a PNG that does not read back (cut short) is drawn again, and any other file there is refused."
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # the first 8 bytes of every PNG file


@dataclass(frozen=True)
class Job:
    """What one set of pictures is drawn from: a clip, a mix of (clip, weight) pairs, or (compose) several clips;
    ``stem`` names its pictures, ``label`` names it in messages (the clips' paths as given, so that two clips of one
    name in different folders read apart)."""

    sounds: Path | tuple
    stem: str
    label: str


def parse_mix(text: str) -> tuple[tuple[Path, float], ...]:
    """``--mix A.wav:0.7,B.wav:0.3`` -> ((A.wav, 0.7), (B.wav, 0.3)); each clip must exist and the weights must sum
    to a positive number."""
    pairs = []
    for item in text.split(","):
        path, colon, weight = item.strip().rpartition(":")
        try:
            value = float(weight) if colon and path else float("nan")
        except ValueError:
            value = float("nan")
        if not math.isfinite(value):
            raise ConfigError(f"--mix: {item.strip()!r} is not CLIP:WEIGHT", hint="e.g. --mix dog.wav:0.7,rain.wav:0.3")
        if not Path(path).is_file():
            raise ConfigError(f"--mix: {path}: no such clip", hint="check the path; CLIP:WEIGHT items, comma-separated")
        pairs.append((Path(path), value))
    mix_weights([w for _, w in pairs])
    return tuple(pairs)


def jobs_for(clips: list[Path], mix: str | None) -> list[Job]:
    """A job per clip, and one for the mix (named by its clips' stems joined with '+')."""
    jobs = [Job(clip, clip.stem, str(clip)) for clip in clips]
    if mix:
        pairs = parse_mix(mix)
        label = ",".join(f"{path}:{weight:g}" for path, weight in pairs)
        jobs.append(Job(pairs, "+".join(path.stem for path, _ in pairs), label))
    if not jobs:
        raise ConfigError("no sound given", hint="name clips, or a mix with --mix A.wav:0.7,B.wav:0.3")
    return jobs


def picture_paths(jobs: list[Job], out: Path, num_images: int, prefix: str = "") -> dict[Job, list[Path]]:
    """The pictures each job will write: OUT/<prefix><stem>.png, or OUT/<prefix><stem>-<k>.png for several."""
    if num_images == 1:
        return {job: [out / f"{prefix}{job.stem}.png"] for job in jobs}
    return {job: [out / f"{prefix}{job.stem}-{k}.png" for k in range(num_images)] for job in jobs}


@dataclass(frozen=True)
class Existing:
    """The pictures to write that exist already, sorted by ``--skip-existing``."""

    kept: frozenset[Path]  # read back as whole PNGs: not drawn again
    unreadable: frozenset[Path]  # drawn again, and replaced

    def summary(self) -> str:
        kept, unreadable = len(self.kept), len(self.unreadable)
        line = f"kept {kept} picture{'s' * (kept != 1)} that exist{'s' * (kept == 1)} (--skip-existing)"
        if unreadable:
            line += f"; {unreadable} that do{'es' * (unreadable == 1)} not read back as a PNG will be drawn again"
        return line


def reads_back(path: Path) -> bool:
    """Whether ``path`` holds a whole PNG: every chunk's checksum holds and its pixels decode."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            if picture.format != "PNG":
                return False
            picture.verify()  # chunk checksums, up to IEND
        with Image.open(path) as picture:
            picture.load()  # the image data
    except Exception:  # PIL raises many types for a damaged file
        return False
    return True


def starts_as_png(path: Path) -> bool:
    """Whether ``path`` is a file that begins with the PNG signature (a picture, perhaps cut short)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def check_outputs(
    targets: dict[Job, list[Path]], out: Path, overwrite: bool, skip_existing: bool = False
) -> Existing | None:
    """Refuse, before any work, an OUT that is a file, two sounds writing one picture, or pictures that exist
    (unless ``overwrite``); with ``skip_existing``, sort the pictures that exist instead."""
    if overwrite and skip_existing:
        raise ConfigError(
            "--overwrite and --skip-existing exclude each other: replace the pictures that exist, or keep them"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder", hint="pass a folder for the pictures")
    owners: dict[Path, Job] = {}
    for job, paths in targets.items():
        for path in paths:
            if path in owners and owners[path] != job:
                raise ConfigError(
                    f"{owners[path].label} and {job.label} would both write {path}",
                    hint="rename one, or run them separately",
                )
            owners[path] = job
    existing = [path for path in owners if path.exists()]
    if skip_existing:
        kept = frozenset(path for path in existing if reads_back(path))
        foreign = [str(path) for path in existing if path not in kept and not starts_as_png(path)]
        if foreign:  # only a PNG of ours that was cut short is drawn again: anything else is not ours to replace
            raise ConfigError(
                f"{', '.join(foreign[:3])}{' and more' if len(foreign) > 3 else ''}: exist{'s' * (len(foreign) == 1)}"
                " and not as a PNG picture; nothing was drawn",
                hint="move them away, or pass --overwrite to replace them",
            )
        return Existing(kept, frozenset(existing) - kept)
    if existing and not overwrite:
        shown = ", ".join(map(str, existing[:3])) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise ConfigError(
            f"{shown} already exist{'s' * (len(existing) == 1)}; nothing was drawn",
            hint="pass --overwrite to replace them, --skip-existing to keep them and draw the rest, or choose another"
            " --out",
        )
    return None


def picture_line(path: Path, seed: int | None = None) -> None:
    """A picture written: one line on stdout, ``PATH<TAB>seed N`` (``cut -f1`` gives the paths), flushed at once so
    that a pipe (``| xargs``) sees each picture as it is written; everything else a command says goes to stderr."""
    print(str(path) if seed is None else f"{path}\tseed {seed}", flush=True)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


@dataclass(frozen=True)
class Batch:
    """The pictures a command writes (``targets``: each job's paths, in OUT) and how: built by ``check`` before any
    work, then drawn by ``run``."""

    targets: dict[Job, list[Path]]
    out: Path
    overwrite: bool = False
    existing: Existing | None = None  # --skip-existing: the pictures that exist, sorted

    @classmethod
    def check(cls, targets: dict[Job, list[Path]], out: Path, overwrite: bool, skip_existing: bool = False) -> Batch:
        """The batch writing ``targets`` into ``out``, its outputs checked first (``check_outputs``)."""
        return cls(targets, out, overwrite, check_outputs(targets, out, overwrite, skip_existing))

    def replaces(self, path: Path) -> bool:
        """Whether writing ``path`` may replace a file there (``--overwrite``, or a cut-short PNG of ours)."""
        return self.overwrite or (self.existing is not None and path in self.existing.unreadable)

    def run(self, draw: Callable[[Job, Stopwatch], Generation], bundle_id: str, console, verbose: bool) -> None:
        """Draw every job (``draw(job, watch)``, the watch's progress showing its stages) with a progress bar per job
        on ``console`` (stderr), write its pictures (each one ``picture_line`` on stdout), and close with a count;
        exit status 1 if any job failed.

        A sound that cannot be read (``AudioLoadError``) fails its job alone and the batch goes on. Any other failure
        (an engine that does not load or run, NaN from a network, a file that cannot be written) is not about that
        sound and would fail every later job the same way: it stops the batch, reported once with its hint, and the
        count says how many sounds were not drawn. With ``existing`` (``--skip-existing``), a job whose pictures are
        all kept is not drawn, and the kept pictures of the others are not written; ``verbose`` prints each job's
        stage timing table."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from runtime.picture import save_png

        kept = self.existing.kept if self.existing is not None else frozenset()
        if self.existing is not None:
            console.print(self.existing.summary())
        targets = {job: paths for job, paths in self.targets.items() if not kept.issuperset(paths)}
        failed: list[str] = []
        stopped: AudioTokenError | None = None
        written = finished = 0
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        # The bar lives on stderr, and only where that is a terminal (a log gets no bar, and no blank line for it).
        # Where stdout is a terminal too, rich prints stdout's lines above the bar; where it is a pipe or a file, they
        # must go there untouched (rich would otherwise send them to the bar's stream).
        with Progress(
            *columns,
            console=console,
            transient=True,
            redirect_stdout=sys.stdout.isatty(),
            disable=not console.is_terminal,
        ) as bar:
            overall = bar.add_task("sounds", total=len(targets))
            for job, paths in targets.items():
                task = bar.add_task(f"{job.stem}: start", total=1)

                def report(stage: str, done: int, total: int, task=task, job=job) -> None:
                    bar.update(task, description=f"{job.stem}: {stage}", completed=done, total=total)

                try:
                    result = draw(job, Stopwatch(report))
                    for k, (picture, path) in enumerate(zip(result.pictures, paths, strict=True)):
                        if path in kept:
                            continue
                        metadata = {**result.metadata(k), "bundle": bundle_id}
                        save_png(picture, path, metadata, overwrite=self.replaces(path))
                        picture_line(path, result.seeds[k])
                        written += 1
                    if verbose:
                        console.print(timing_table(job.label, result.timings))
                except AudioLoadError as exc:
                    failed.append(job.label)
                    console.print(f"error: {exc}")
                except AudioTokenError as exc:
                    stopped = exc
                    break
                finally:
                    bar.remove_task(task)
                finished += 1
                bar.advance(overall)
        summary = f"wrote {plural(written, 'picture')} to {self.out}"
        if failed:
            summary += f" ({plural(len(failed), 'sound')} failed)"
        if stopped is not None:
            console.print(f"error: {stopped}")
            if stopped.hint:
                console.print(f"hint: {stopped.hint}")
            summary += (
                f"; stopped with {plural(len(targets) - finished, 'sound')} not drawn (that failure is not a sound's)"
            )
        console.print(summary)
        if failed or stopped is not None:
            raise typer.Exit(1)


def timing_table(title: str, timings: Stopwatch):
    """A rich table of a call's stage wall times (ms), with the mean UNet call."""
    from rich.table import Table

    table = Table(title=f"{title}: stage timings", show_edge=False)
    table.add_column("stage")
    table.add_column("ms", justify="right")
    for stage, ms in timings.stages.items():
        table.add_row(stage, f"{ms:.1f}")
    if timings.unet_calls:
        table.add_row("unet (per call)", f"{timings.stages[UNET] / timings.unet_calls:.1f}")
    return table
