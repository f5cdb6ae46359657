"""``audiotoken-rt live``: a stream of pictures from a stream of sound (a file, raw PCM on stdin, or the microphone).

Place in the data flow: INPUT -> ``runtime.live`` (the source, the windows, the schedule, each window's picture,
drawn anew or as an edit of the previous one) -> ``runtime.picture.save_png`` -> ``OUT/frame-000001.png``, ... (each
recording its window's start and end in the stream, the seed, the recipe and the latency) -> one line per frame on
stdout, ``PATH<TAB>seed N<TAB>window START END`` (seconds into the stream); skips, notes and the closing figures
(frames per minute, latency p50 and p95) on stderr. ``--web`` shows each frame as it is written
(``runtime.commands.live_page``), ``--json`` writes the run's figures and frames, ``--video`` assembles the frames
at their times into an MP4 (PyAV) once the stream ends.

Everything is checked before any sound is heard: the options, the input (a file's format, the microphone), OUT and
the files it would replace (``--overwrite`` first removes an earlier run's frames), the page's port, the bundle and
the recipe. The end of the stream and Ctrl-C both end cleanly (exit status 0): every frame drawn so far is on disk,
written atomically, and the video and figures are written from them. A failure mid-stream (a corrupt stream, an
engine) still writes them, then is reported in one line (exit status 1).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import typer

from runtime.commands import drawing_options as shared
from runtime.commands.cli import option, options_from, reports_errors
from runtime.commands.jobs import plural
from runtime.commands.live_page import FRAME_NAME
from runtime.errors import AudioTokenError, ConfigError
from runtime.live import Drawing, LiveOptions, Window
from runtime.pipeline import GenerationOptions

VIDEO_MILLISECONDS = Fraction(1, 1000)  # the video's time base: frames placed to the millisecond

INPUT_HELP = (
    "The sound: a clip file (any format generate reads; ./mic for a file named mic), '-' for raw little-endian "
    "float32 PCM on stdin (--rate, --channels), or 'mic' for the system's default input (the live extra)."
)


@dataclass(frozen=True)
class Frame:
    """A frame written: its file, its window and how it was drawn, as --json lists them."""

    file: str
    window: int
    start: float
    end: float
    skipped_before: int
    latency_s: float
    seed: int


@reports_errors
def live_command(
    input: str = typer.Argument(..., help=INPUT_HELP, show_default=False, metavar="INPUT"),
    engines: Path = shared.ENGINES,
    out: Path = typer.Option(..., "--out", help="Folder for the frames: OUT/frame-000001.png, ...", show_default=False),
    every: float = option(LiveOptions, "every", "--every"),
    window: float = option(LiveOptions, "window", "--window"),
    follow: float = option(LiveOptions, "follow", "--follow"),
    realtime: bool = option(LiveOptions, "realtime", "--realtime"),
    vary_seed: bool = option(LiveOptions, "vary_seed", "--vary-seed"),
    rate: int | None = typer.Option(
        None, "--rate", help="'-' and mic: samples per second (default 16000).", show_default=False
    ),
    channels: int | None = typer.Option(
        None, "--channels", help="'-' and mic: interleaved channels (default 1).", show_default=False
    ),
    fast: bool = shared.FAST,
    steps: int | None = shared.STEPS,
    guidance: float | None = shared.GUIDANCE,
    seed: int | None = shared.SEED,
    scheduler: str | None = shared.SCHEDULER,
    eta: float | None = shared.ETA,
    timestep_spacing: str | None = shared.SPACING,
    prompt: str | None = shared.PROMPT,
    negative_prompt: str = shared.NEGATIVE_PROMPT,
    downmix: str = shared.DOWNMIX,
    backend: str = shared.BACKEND,
    device: str = shared.DEVICE,
    web: int | None = typer.Option(
        None,
        "--web",
        help="Serve a page on 127.0.0.1:PORT that shows the newest picture as it arrives (0: any free port; the "
        "address is printed).",
        show_default=False,
    ),
    video: Path | None = typer.Option(
        None, "--video", help="Assemble the frames at their times into this MP4 at the end (PyAV).", show_default=False
    ),
    json_path: Path | None = typer.Option(
        None,
        "--json",
        help="Write the run's figures (frames per minute, latency p50/p95, skips) and every frame's window here.",
        show_default=False,
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Remove an earlier run's frames from OUT first; replace --video and --json."
    ),
) -> None:
    """Draw a picture every --every seconds of a sound stream, from its last --window seconds; with --follow each
    picture evolves from the previous one. Each frame is one line on stdout, PATH<TAB>seed N<TAB>window START END;
    Ctrl-C (or the end of the stream) stops it, every frame drawn so far on disk."""
    from rich.console import Console

    from runtime.live import Live, open_source
    from runtime.pipeline import Pipeline

    console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    live_options = options_from(LiveOptions, locals())
    live_options.check()
    drawing = options_from(GenerationOptions, locals())
    drawing.check()
    earlier = check_outputs(out, video, json_path, overwrite)
    if video is not None:
        require_pyav()
    if web is not None:
        from runtime.commands.live_page import check_port

        check_port(web)
    if input == "-" and sys.stdin.isatty():
        raise ConfigError(
            "'-' reads raw float32 PCM from stdin, which is a terminal",
            hint="pipe the sound in: CMD | audiotoken-rt live - ...",
        )
    source = open_source(input, rate, channels)
    page = None
    try:
        if web is not None:  # listening first: a port in use is refused before the bundle is opened
            from runtime.commands.live_page import LivePage

            page = LivePage(out, web)
        with console.status(f"opening {engines} ({backend}, {device})"):
            pipeline = Pipeline.open(engines, backend=backend, device=device)
        stream = Live(pipeline, source, live_options, drawing)
        if stream.realtime:
            with console.status("warming up the engines"):
                stream.warm_up()
    except BaseException:
        source.close()
        if page is not None:
            page.close()
        raise
    for path in earlier:
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    bundle_id = pipeline.bundle.manifest.bundle_id
    frames: list[Frame] = []
    failure: AudioTokenError | None = None
    ending = "the stream ended"
    if page is not None:
        console.print(f"watch it at {page.url}")
    console.print(f"listening to {source.name}: a picture every {every:g} s of sound, from the last {window:g} s")
    started = time.monotonic()
    try:
        terminated = signal.signal(signal.SIGTERM, interrupt)  # `kill` and `docker stop` end it as Ctrl-C does
    except ValueError:  # not the main thread (the API's callers): signals stay as they are
        terminated = None
    try:
        for heard, drawn in stream.frames():
            with interrupt_after():  # a frame on disk and announced is in the figures and the video too
                frames.append(write_frame(out, len(frames) + 1, heard, drawn, source.name, bundle_id, console))
            if page is not None:
                page.show(frames[-1].file, len(frames), heard.start, heard.end)
    except KeyboardInterrupt:
        ending = "interrupted"
    except AudioTokenError as exc:
        failure, ending = exc, "stopped by an error"
    finally:
        if terminated is not None:
            signal.signal(signal.SIGTERM, terminated)
    elapsed = time.monotonic() - started
    if page is not None:
        page.close()
    figures = summary(frames, stream, elapsed)
    console.print(f"{ending}: {describe(figures, out)}")
    if json_path is not None:
        from runtime.atomic import write_atomically

        report = {"input": source.name, "bundle": bundle_id, **asdict(live_options), **figures}
        report["frames"] = [asdict(frame) for frame in frames]
        write_atomically(json_path, (json.dumps(report, indent=2) + "\n").encode())
    if video is not None and frames:
        write_video(video, [out / frame.file for frame in frames], [frame.end for frame in frames], every)
        console.print(f"wrote {video}")
    elif video is not None:
        console.print(f"no frame was drawn, so no {video} was written")
    if failure is not None:
        raise failure


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; kill's default


def interrupt(number: int, frame: object) -> None:
    """SIGTERM's handler while the stream runs: it stops as Ctrl-C does."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_after() -> Iterator[None]:
    """Ctrl-C or SIGTERM during the block raises KeyboardInterrupt at its end, not halfway (only the main thread can
    defer them; elsewhere the block is as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {number: signal.signal(number, lambda number, _: caught.append(number)) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if caught:
        raise KeyboardInterrupt


def check_outputs(out: Path, video: Path | None, json_path: Path | None, overwrite: bool) -> list[Path]:
    """Refuse, before any work, an OUT that is a file, an earlier run's frames in OUT, or a --video or --json file
    that exists (all unless ``overwrite``), and a --video that is not .mp4; the earlier frames to remove."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder", hint="pass a folder for the frames")
    earlier = sorted(path for path in out.glob("frame-*.png") if FRAME_NAME.match(path.name)) if out.is_dir() else []
    if earlier and not overwrite:
        raise ConfigError(
            f"{out} holds {plural(len(earlier), 'frame')} of an earlier run ({earlier[0].name}, ...); nothing was drawn",
            hint="pass --overwrite to remove them first, or choose another --out",
        )
    if video is not None and video.suffix.lower() != ".mp4":
        raise ConfigError(f"--video {video}: the video is an MP4 file", hint="name it FILE.mp4")
    for flag, path in (("--video", video), ("--json", json_path)):
        if path is None:
            continue
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a folder", hint="name a file")
        if path.exists() and not overwrite:
            raise ConfigError(f"{flag} {path}: already exists", hint="pass --overwrite to replace it")
        if not path.parent.is_dir():
            raise ConfigError(f"{flag} {path}: no folder {path.parent}", hint="create it first")
    return earlier


def require_pyav() -> None:
    try:
        import av  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "--video needs PyAV (the av package), which is not installed", hint="pip install 'audiotoken-rt[live]'"
        ) from exc


def write_frame(out: Path, number: int, window: Window, drawn: Drawing, source: str, bundle_id: str, console) -> Frame:
    """Frame ``number``'s PNG (atomically), its stdout line, and a note on stderr of windows skipped before it."""
    from runtime.picture import save_png

    if window.skipped:
        console.print(
            f"skipped {plural(window.skipped, 'window')} (drawing is slower than the sound): drawing window "
            f"{window.index}, {window.start:g} to {window.end:g} s"
        )
    path = out / f"frame-{number:06d}.png"
    save_png(drawn.picture, path, {**drawn.metadata(window, source), "bundle": bundle_id}, overwrite=False)
    seed = drawn.generation.seeds[0]
    print(f"{path}\tseed {seed}\twindow {window.start:g} {window.end:g}", flush=True)
    return Frame(path.name, window.index, window.start, window.end, window.skipped, round(drawn.latency, 6), seed)


def summary(frames: list[Frame], stream, elapsed: float) -> dict[str, object]:
    """The run's figures: windows heard, drawn and skipped, seconds heard and taken, frames per minute (of wall
    time), and the latency from a window's end to its picture (p50, p95; None without frames)."""
    latencies = np.array([frame.latency_s for frame in frames])  # [F]
    return {
        "windows": stream.windows,
        "frames_drawn": len(frames),
        "skipped": stream.skipped,
        "heard_s": round(stream.heard, 3),
        "elapsed_s": round(elapsed, 3),
        "frames_per_minute": round(60 * len(frames) / elapsed, 3) if elapsed > 0 else None,
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3) if len(frames) else None,
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 3) if len(frames) else None,
    }


def describe(figures: dict[str, object], out: Path) -> str:
    line = f"{plural(figures['frames_drawn'], 'frame')} from {figures['heard_s']:g} s of sound in {out}"
    if figures["skipped"]:
        line += f" ({plural(figures['skipped'], 'window')} skipped)"
    if figures["frames_drawn"]:
        line += (
            f"; {figures['frames_per_minute']:g} frames/min, latency p50 {figures['latency_p50_s']:g} s, "
            f"p95 {figures['latency_p95_s']:g} s"
        )
    return line


def write_video(path: Path, pictures: list[Path], ends: list[float], every: float) -> None:
    """The frames as an H.264 MP4 (MPEG-4 Part 2 where the PyAV build lacks libx264), written atomically and
    frame by frame (never whole in memory): frame k shown from its window's end (the first at 0) until the next
    frame's, the last for ``every`` seconds."""
    import av
    from PIL import Image

    from runtime.atomic import atomic_file

    with atomic_file(path) as encoded, av.open(encoded, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4")
        if stream.name == "libx264":
            stream.options = {"crf": "18"}  # near-transparent for pictures (x264's default, 23, smears fine texture)
        with Image.open(pictures[0]) as first:
            stream.width, stream.height = first.size
        stream.pix_fmt = "yuv420p"
        stream.time_base = VIDEO_MILLISECONDS
        stream.codec_context.time_base = VIDEO_MILLISECONDS
        for k, picture in enumerate(pictures):
            with Image.open(picture) as image:
                frame = av.VideoFrame.from_image(image.convert("RGB"))
            frame.pts = round((ends[k] - ends[0]) * 1000)
            frame.time_base = VIDEO_MILLISECONDS
            after = ends[k + 1] if k + 1 < len(ends) else ends[k] + every
            frame.duration = round((after - ends[k]) * 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
