"""Live: a stream of sound -> a stream of pictures, one every ``every`` seconds of audio heard. This is the engine
layer of ``audiotoken-rt live`` and its Python API; the command (outputs, the page, the video) is
``runtime.commands.live``.

Place in the data flow: a source (a clip file read block by block, raw float32 PCM from a pipe, or the microphone)
-> ``Hearing`` (the last ``window`` seconds, mono, at the source's rate; a window completed each time ``every``
more seconds have been heard, the newest of each block read cut out as a ``Window``) -> a schedule picks the windows
to draw -> ``Pipeline.draw``, or with ``follow`` an edit
of the previous picture (``Pipeline.draw_edit`` at that strength) -> ``Live.frames`` yields (``Window``,
``Drawing``) pairs.

Windows: window k ends k * every seconds into the stream and starts ``window`` seconds before that (at 0 while less
has been heard). Its samples go to the pipeline as they are, which resamples them to 16 kHz and loop-tiles them to
the encoder's 10 s (``runtime.audio.prepare_waveform``), as ``generate`` does with a short clip. Audio after the
last whole ``every`` is heard but gets no window.

Schedules (``LiveOptions.realtime``):
- in order (the default for a file or a pipe): every window, one after another, as fast as the machine draws; the
  source is read only as far as the next window, so a writer on a pipe waits while a picture is drawn;
- real time, a file: the file is heard as if it started playing when ``frames`` started (clock time); after each
  picture the newest window heard by then is drawn and those before it are skipped; with none yet, it waits for the
  next. Single-threaded, so a clock that tests move by hand makes it exact;
- real time, a live source (a pipe with ``realtime``, the microphone always): a reader thread hears the source as it
  comes, so a writer never waits, and keeps only the newest window; the drawer takes it when free, skipping the
  windows in between.
Nothing is queued, so the pictures never fall behind the sound: each window says how many were skipped just before
it (``Window.skipped``), and each picture its latency, from its window's end being heard to the picture
(``Drawing.latency``).

Continuity (``follow``): from the second picture on, each is the previous one edited by its window's sound at
strength ``follow`` (0: each picture drawn anew), with the same seed unless ``vary_seed`` (picture n: seed + n - 1).

Time is read from a ``Clock`` (``time.monotonic`` and ``time.sleep`` by default), so that tests can make the
drawing slow without waiting for it.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import soundfile as sf

from runtime.audio import (
    DOWNMIX_MODES,
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    downmix_samples,
    open_clip,
)
from runtime.contract import CLIP_SECONDS
from runtime.errors import AudioLoadError, ConfigError, first_line, is_real, is_whole, shown
from runtime.noise import MAX_SEED
from runtime.pipeline import EditOptions, Generation, GenerationOptions, Pipeline

MIN_EVERY = 0.01  # seconds: a window per 10 ms of sound is already more than any bundle draws
MAX_EVERY = 3600.0  # seconds: a picture an hour
MIN_WINDOW = 0.01  # seconds of sound in a window; the encoder hears 10 s (CLIP_SECONDS), loop-tiled from less
READ_SECONDS = 0.1  # the most a read takes from a file or a pipe at a time (a live source gives what it has)
DEFAULT_RATE = 16_000  # Hz of raw PCM and of the microphone unless told: the encoder's own rate
MIC = "mic"  # the input that names the system's default microphone
STDIN = "-"  # the input that names raw PCM on standard input


@dataclass(frozen=True)
class LiveOptions:
    """How a stream becomes pictures (the drawing itself is a ``GenerationOptions``). The ``help`` of each field is
    the ``live`` option's help."""

    every: float = field(
        default=2.0,
        metadata={"help": f"Draw a picture every this many seconds of sound heard ({MIN_EVERY:g} to {MAX_EVERY:g})."},
    )
    window: float = field(
        default=CLIP_SECONDS,
        metadata={
            "help": f"Each picture hears the last this many seconds ({MIN_WINDOW:g} to {CLIP_SECONDS:g}, the "
            "encoder's); less while less has been heard, loop-tiled to 10 s as generate does."
        },
    )
    follow: float = field(
        default=0.0,
        metadata={
            "help": "Continuity, 0-1: each picture is the previous one edited by its window's sound at this strength "
            "(pictures that evolve); 0 draws each anew."
        },
    )
    realtime: bool = field(
        default=False,
        metadata={
            "help": "Never fall behind the sound: a file is heard at its own pace, and when drawing is slower than "
            "the sound the windows in between are skipped (and counted), not queued. Always on for mic; without it "
            "a file or '-' gets a picture for every window, as fast as the machine draws."
        },
    )
    vary_seed: bool = field(
        default=False,
        metadata={"help": "Picture n takes seed SEED+n-1 (default: every picture the same seed)."},
    )

    def check(self) -> None:
        """Refuse impossible options before any work, each by its option's name with the value received."""
        if not (is_real(self.every, MIN_EVERY, MAX_EVERY)):
            raise ConfigError(
                f"--every is {shown(self.every)} s; it must be from {MIN_EVERY:g} to {MAX_EVERY:g} seconds",
                hint="the seconds of sound heard between two pictures, e.g. --every 2",
            )
        if not is_real(self.window, MIN_WINDOW, CLIP_SECONDS):
            raise ConfigError(
                f"--window is {shown(self.window)} s; it must be from {MIN_WINDOW:g} to {CLIP_SECONDS:g} seconds "
                "(the audio encoder hears 10 s)",
                hint="each picture hears the last --window seconds of the stream",
            )
        if not is_real(self.follow, 0.0, 1.0):
            raise ConfigError(
                f"--follow is {shown(self.follow)}; it must be between 0 (each picture anew) and 1",
                hint="0.3-0.6 gives pictures that evolve with the sound",
            )


def check_format(rate, channels) -> None:
    """A raw stream's (or the microphone's) ``--rate`` and ``--channels``, refused before any work when out of
    bounds (the rates ``runtime.audio`` reads; at most MAX_CHANNELS channels)."""
    if not is_whole(rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE):
        raise ConfigError(
            f"--rate is {shown(rate)} Hz; it must be a whole number from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}",
            hint="pass the stream's true sample rate, e.g. --rate 16000",
        )
    if not is_whole(channels, 1, MAX_CHANNELS):
        raise ConfigError(
            f"--channels is {shown(channels)}; it must be a whole number from 1 to {MAX_CHANNELS}",
            hint="the channels interleaved in each frame of the stream, e.g. --channels 2",
        )


class Clock(Protocol):
    """Where the stream reads time: seconds that only go forward, and a wait."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The clock of a real stream: ``time.monotonic`` and ``time.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Source(Protocol):
    """A stream of sound: ``read`` gives float32 frames [n, channels] (n > 0; none: the stream ended). A source
    that is not ``live`` (a file) gives at most the frames asked for and can be heard at any pace; a live one gives
    what it has when it has it."""

    name: str
    rate: int
    channels: int
    live: bool  # gives what it has as it comes (a pipe, a device), not what is asked at any pace (a file)
    device: bool  # a device that records whether read or not: always heard in real time

    def read(self, frames: int) -> np.ndarray: ...

    def close(self) -> None: ...


class FileSource:
    """A clip file (any format ``generate`` reads: ``runtime.audio.open_clip``'s checks first), read block by block."""

    live = device = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(path)
        self.file = open_clip(self.path)
        self.rate, self.channels = self.file.samplerate, self.file.channels
        self.frames_read = 0

    def read(self, frames: int) -> np.ndarray:
        try:
            block = self.file.read(frames, dtype="float32", always_2d=True)  # [n, C]
        except sf.SoundFileError as exc:
            raise AudioLoadError(
                f"{self.name}: cannot decode the audio after {self.frames_read / self.rate:.2f} s ({first_line(exc)})",
                hint="the file is truncated or corrupt: re-export it",
            ) from exc
        self.frames_read += len(block)
        return block

    def close(self) -> None:
        self.file.close()


class PcmSource:
    """Raw little-endian float32 PCM, ``channels`` interleaved at ``rate``, from a binary stream (standard input):
    read as it comes (``read1``); a last partial frame is dropped and counted in ``trailing_bytes``."""

    live, device = True, False

    def __init__(self, stream: BinaryIO, rate: int = DEFAULT_RATE, channels: int = 1, name: str = "stdin"):
        check_format(rate, channels)
        self.stream, self.rate, self.channels, self.name = stream, rate, channels, name
        self.frame_bytes = 4 * channels
        self.pending = b""
        self.trailing_bytes = 0

    def read(self, frames: int) -> np.ndarray:
        read_some = getattr(self.stream, "read1", self.stream.read)
        while True:
            data = read_some(max(1, frames * self.frame_bytes - len(self.pending)))
            if not data:
                self.trailing_bytes = len(self.pending)
                return np.zeros((0, self.channels), np.float32)
            data = self.pending + data
            whole = len(data) // self.frame_bytes * self.frame_bytes
            self.pending = data[whole:]
            if whole:
                return np.frombuffer(data[:whole], "<f4").astype(np.float32).reshape(-1, self.channels)  # [n, C]

    def close(self) -> None:
        """The stream is the caller's (standard input): it stays open."""


class MicSource:
    """The system's default input device through PortAudio (the ``sounddevice`` package, the ``live`` extra): each
    block the device delivers, as it delivers it. Refused in one line when the package, PortAudio, or an input
    device is missing, or the device cannot take the rate and channels."""

    live = device = True

    def __init__(self, rate: int = DEFAULT_RATE, channels: int = 1):
        check_format(rate, channels)
        try:
            import sounddevice
        except ImportError as exc:
            raise ConfigError(
                "mic needs the sounddevice package (PortAudio's Python binding), which is not installed",
                hint="pip install 'audiotoken-rt[live]'; or read a file, or raw PCM on stdin with '-'",
            ) from exc
        except OSError as exc:  # the package is there, PortAudio's library is not
            raise ConfigError(
                f"mic: {first_line(exc)}", hint="install PortAudio (Debian: apt install libportaudio2)"
            ) from exc
        try:
            device = sounddevice.query_devices(kind="input")
        except (sounddevice.PortAudioError, ValueError) as exc:
            raise ConfigError(
                f"mic: no input device ({first_line(exc)})",
                hint="connect a microphone, or read a file, or raw PCM on stdin with '-'",
            ) from exc
        try:
            sounddevice.check_input_settings(samplerate=rate, channels=channels, dtype="float32")
        except (sounddevice.PortAudioError, ValueError) as exc:
            raise ConfigError(
                f"mic: {device['name']} cannot record --rate {rate} --channels {channels} ({first_line(exc)})",
                hint=f"its default rate is {device['default_samplerate']:g} Hz and it has "
                f"{device['max_input_channels']} input channels",
            ) from exc
        self.name, self.rate, self.channels = f"mic ({device['name']})", rate, channels
        self.blocks: queue.Queue[np.ndarray] = queue.Queue()
        self.closed = threading.Event()
        self.stream = sounddevice.InputStream(
            samplerate=rate, channels=channels, dtype="float32", callback=self.delivered
        )  # started by the first read: nothing recorded before the stream is listened to

    def delivered(self, samples: np.ndarray, frames: int, when, status) -> None:
        """PortAudio's callback (its own thread): keep a copy of the block."""
        self.blocks.put(samples.copy())  # [frames, C]

    def read(self, frames: int) -> np.ndarray:
        if not self.stream.active and not self.closed.is_set():
            self.stream.start()
        while not self.closed.is_set():
            try:
                return self.blocks.get(timeout=0.2)
            except queue.Empty:
                continue
        return np.zeros((0, self.channels), np.float32)

    def close(self) -> None:
        self.closed.set()
        self.stream.stop()
        self.stream.close()


def open_source(input: str, rate: int | None = None, channels: int | None = None, stdin: BinaryIO | None = None):
    """The source an input names: ``-`` raw PCM on ``stdin``, ``mic`` the default microphone, anything else a clip
    file (``./mic`` for a file of that name). ``rate`` and ``channels`` (default DEFAULT_RATE, 1) describe a raw
    stream or what to ask of the microphone; a file says its own, so giving them with one is refused."""
    if input in (STDIN, MIC):
        rate, channels = DEFAULT_RATE if rate is None else rate, 1 if channels is None else channels
        if input == MIC:
            return MicSource(rate, channels)
        if stdin is None:
            import sys

            stdin = sys.stdin.buffer
        return PcmSource(stdin, rate, channels)
    for flag, value in (("--rate", rate), ("--channels", channels)):
        if value is not None:
            raise ConfigError(
                f"{flag} describes raw PCM on stdin ('-') or the microphone ('mic'); {input} says its own",
                hint=f"leave out {flag} for a file",
            )
    return FileSource(input)


@dataclass(frozen=True)
class Window:
    """A stretch of the stream a picture hears: the last ``window`` seconds up to ``end``."""

    index: int  # k of the k-th window of the stream (1, 2, ...), skipped ones counted
    start: float  # seconds into the stream
    end: float  # seconds into the stream: index * every
    samples: np.ndarray = field(repr=False)  # [n] mono float32 at ``rate``
    rate: int
    heard_at: float  # clock time its last sample was heard (a paced file: when it would have been)
    skipped: int = 0  # windows skipped just before it (real time only)


class Hearing:
    """The last ``window`` seconds of a stream, mono (``downmix``), in a ring buffer at the stream's rate; a window is
    complete each time ``every`` more seconds have been heard, and ``feed`` gives the newest a block completes (only
    that one is cut from the ring: no schedule draws an older one, and with a short ``every`` and a slow drawer the
    others would be thousands of copies of the ring). Non-finite samples are an AudioLoadError naming the stream and
    the time."""

    def __init__(self, name: str, rate: int, every: float, window: float, downmix: str = "first"):
        if downmix not in DOWNMIX_MODES:
            raise ConfigError(f"--downmix {downmix!r}: expected one of {', '.join(DOWNMIX_MODES)}")
        self.name, self.rate, self.downmix = name, rate, downmix
        self.hop = max(1, round(every * rate))  # frames between two windows' ends
        self.ring = np.zeros(max(1, round(window * rate)), np.float32)  # [size]
        self.filled = self.position = 0  # frames held; where the next frame goes
        self.heard = 0  # frames heard since the start
        self.windows = 0  # windows given

    def next_end(self) -> int:
        """The frame the next window ends at."""
        return (self.windows + 1) * self.hop

    def feed(self, block: np.ndarray, heard_at: Callable[[float], float]) -> tuple[Window | None, int]:
        """Frames [n, C] (or [n]) heard -> (the newest window they complete, stamped ``heard_at(its end)``, or None;
        how many windows they complete)."""
        mono = downmix_samples(np.asarray(block, np.float32), self.downmix)  # [n]
        if not np.isfinite(mono).all():
            raise AudioLoadError(
                f"{self.name}: samples that are not finite (NaN or Inf) after {self.heard / self.rate:.2f} s",
                hint="the stream is corrupt, or not float32 (for '-': little-endian float32, --rate and --channels "
                "as the writer sends them)",
            )
        to_next = self.next_end() - self.heard  # frames up to the next window's end
        if len(mono) < to_next:
            self.keep(mono)
            return None, 0
        completed = 1 + (len(mono) - to_next) // self.hop
        newest_end = to_next + (completed - 1) * self.hop  # in the block
        self.keep(mono[:newest_end])
        self.windows += completed
        held = self.held()  # [filled]
        end = self.heard / self.rate
        newest = Window(self.windows, (self.heard - len(held)) / self.rate, end, held, self.rate, heard_at(end))
        self.keep(mono[newest_end:])
        return newest, completed

    def keep(self, part: np.ndarray) -> None:
        size, count = len(self.ring), len(part)
        self.heard += count
        if count >= size:
            self.ring[:] = part[-size:]
            self.position, self.filled = 0, size
            return
        head = min(count, size - self.position)
        self.ring[self.position : self.position + head] = part[:head]
        self.ring[: count - head] = part[head:]
        self.position = (self.position + count) % size
        self.filled = min(size, self.filled + count)

    def held(self) -> np.ndarray:
        """The frames held, oldest first: [filled] (a copy)."""
        if self.filled < len(self.ring):
            return self.ring[: self.filled].copy()
        return np.concatenate([self.ring[self.position :], self.ring[: self.position]])


class Newest:
    """Between a live source's reader thread and the drawer: the newest window heard, how many arrived since the
    drawer last took one, and whether (and how) the stream ended."""

    def __init__(self):
        self.changed = threading.Condition()
        self.window: Window | None = None
        self.arrived = 0
        self.ended = False
        self.error: BaseException | None = None

    def put(self, window: Window, completed: int) -> None:
        """``window`` is the newest, the last of ``completed`` windows heard since the last ``put``."""
        with self.changed:
            self.window, self.arrived = window, self.arrived + completed
            self.changed.notify_all()

    def end(self, error: BaseException | None = None) -> None:
        with self.changed:
            self.ended, self.error = True, error
            self.changed.notify_all()

    def take(self) -> Window | None:
        """The newest window (its ``skipped``: those that arrived before it since the last take), waiting for one;
        None once the stream ended and every window was taken or skipped; the reader's failure, raised here."""
        with self.changed:
            while self.window is None and not self.ended:
                self.changed.wait()
            if self.window is None:
                if self.error is not None:
                    raise self.error
                return None
            window = replace(self.window, skipped=self.arrived - 1)
            self.window, self.arrived = None, 0
            return window


@dataclass
class Drawing:
    """A window's picture and what it takes to reproduce it."""

    picture: object  # PIL image
    generation: Generation  # seed, prompt, options (strength and source picture for an edit), stage timings
    latency: float  # seconds from the window's end being heard to the picture
    follows: int | None  # the window whose picture this one edits (``follow``); None when drawn anew

    def metadata(self, window: Window, source: str) -> dict[str, object]:
        """PNG text chunks: the drawing's (``Generation.metadata``, the clip named ``source``, less its ``start``:
        a window's sound is placed by ``window_start`` and ``window_end``), then the window's place in the stream and
        the latency."""
        drawn = {key: value for key, value in self.generation.metadata(0, clip=source).items() if key != "start"}
        return {
            **drawn,
            "window": window.index,
            "window_start": round(window.start, 6),
            "window_end": round(window.end, 6),
            "skipped_before": window.skipped,
            "latency_s": f"{self.latency:.3f}",
            **({"follows_window": self.follows} if self.follows is not None else {}),
        }


class Live:
    """A source's stream drawn as pictures (the module docstring): build it (every option checked, the recipe
    prepared), then iterate ``frames``. ``windows``, ``skipped`` and ``heard`` say how far it got."""

    def __init__(
        self,
        pipeline: Pipeline,
        source: Source,
        options: LiveOptions = LiveOptions(),
        drawing: GenerationOptions = GenerationOptions(),
        *,
        clock: Clock | None = None,
    ):
        options.check()
        if drawing.num_images != 1 or drawing.stereo or drawing.start != 0:
            raise ConfigError("live draws one picture per window from its mono sound: num_images 1, no stereo, start 0")
        self.pipeline, self.source, self.options = pipeline, source, options
        self.clock = SystemClock() if clock is None else clock
        seed = drawing.first_seed()
        self.fresh = GenerationOptions(**{f.name: getattr(drawing, f.name) for f in fields(GenerationOptions)})
        self.fresh = replace(self.fresh, seed=seed)
        self.fresh, _ = pipeline.prepare(self.fresh)
        self.edit = EditOptions(**{f.name: getattr(self.fresh, f.name) for f in fields(GenerationOptions)})
        self.edit = replace(self.edit, strength=options.follow)
        if options.follow > 0:  # a strength that leaves the recipe no step is refused before any sound
            try:
                pipeline.prepare(self.edit)
            except ConfigError as exc:  # the scheduler names edit's --strength; here the strength is --follow
                raise ConfigError(str(exc).replace("--strength", "--follow"), hint=exc.hint) from exc
        self.hearing = Hearing(source.name, source.rate, options.every, options.window, drawing.downmix)
        self.skipped = 0

    @property
    def realtime(self) -> bool:
        """Whether the windows are drawn in real time (``realtime``, or a device that records regardless)."""
        return self.options.realtime or self.source.device

    def warm_up(self) -> None:
        """Draw (and drop) one picture of a second of quiet noise, and with ``follow`` one edit of it, so that the
        first window heard does not pay for the engines' first runs (ONNX Runtime sets a session up on its first
        call: a second or more at 512x512). Worth it in real time, where the first picture's latency counts; the
        command calls it there."""
        rate = self.source.rate
        quiet = (1e-3 * np.random.default_rng(0).standard_normal(rate)).astype(np.float32)  # [rate]
        first = self.pipeline.draw(quiet, self.fresh, sample_rate=rate)
        if self.options.follow > 0:
            self.pipeline.draw_edit(first.pictures[0], quiet, self.edit, sample_rate=rate)

    @property
    def windows(self) -> int:
        """Windows heard so far (drawn or skipped)."""
        return self.hearing.windows

    @property
    def heard(self) -> float:
        """Seconds of sound heard so far."""
        return self.hearing.heard / self.source.rate

    def frames(self) -> Iterator[tuple[Window, Drawing]]:
        """(window, drawing) for each window drawn, as it is drawn; the source is closed when the generator ends
        (the stream's end, an error, or the caller closing it: Ctrl-C)."""
        scheduled = self.scheduled()
        previous: tuple[Window, object] | None = None
        try:
            for number, window in enumerate(scheduled, start=1):
                self.skipped += window.skipped
                drawing = self.draw(window, previous, number)
                previous = (window, drawing.picture)
                yield window, drawing
        finally:
            scheduled.close()
            self.source.close()

    def draw(self, window: Window, previous: tuple[Window, object] | None, number: int) -> Drawing:
        """Window -> picture ``number`` (1, 2, ...): drawn anew, or the previous picture edited (``follow``); its
        seed is the first (``vary_seed``: the first + number - 1, past MAX_SEED wrapping to 0)."""
        seed = (self.fresh.seed + (number - 1 if self.options.vary_seed else 0)) % (MAX_SEED + 1)
        if previous is None or self.options.follow == 0:
            generation = self.pipeline.draw(window.samples, replace(self.fresh, seed=seed), sample_rate=window.rate)
            follows = None
        else:
            from runtime.source_picture import load_picture

            before, picture = previous
            source = load_picture(picture, name=f"window {before.index}")
            generation = self.pipeline.draw_edit(
                source, window.samples, replace(self.edit, seed=seed), sample_rate=window.rate
            )
            follows = before.index
        return Drawing(generation.pictures[0], generation, self.clock.now() - window.heard_at, follows)

    def scheduled(self) -> Iterator[Window]:
        """The windows to draw, by the schedule the options and the source call for (module docstring)."""
        if not self.realtime:
            return self.in_order()
        return self.newest_of_live() if self.source.live else self.newest_of_file()

    def in_order(self) -> Iterator[Window]:
        """Every window, reading the source only as far as the next one."""
        most = max(1, round(READ_SECONDS * self.source.rate))
        while True:
            block = self.source.read(min(most, self.hearing.next_end() - self.hearing.heard))  # [n, C]
            if len(block) == 0:
                return
            window, _ = self.hearing.feed(block, lambda end: self.clock.now())  # at most one: read up to its end
            if window is not None:
                yield window

    def newest_of_file(self) -> Iterator[Window]:
        """A file heard at its own pace from now: each time, the newest window heard by then."""
        started, rate = self.clock.now(), self.source.rate
        most = max(1, round(READ_SECONDS * rate))
        ended = False

        def hear_until(frame: int) -> Window | None:
            """The newest window heard up to ``frame`` (its ``skipped``: the others heard), None for none."""
            nonlocal ended
            newest, completed = None, 0
            while not ended and self.hearing.heard < frame:
                block = self.source.read(min(most, frame - self.hearing.heard))  # [n, C]
                if len(block) == 0:
                    ended = True
                    continue
                window, count = self.hearing.feed(block, lambda end: started + end)
                newest, completed = window or newest, completed + count
            return None if newest is None else replace(newest, skipped=completed - 1)

        while True:
            heard = hear_until(math.floor((self.clock.now() - started) * rate))
            if heard is None and not ended:  # nothing new yet: wait until the next window's end is due, then hear it
                due = self.hearing.next_end()
                self.clock.sleep(max(0.0, started + due / rate - self.clock.now()))
                heard = hear_until(due)
            if heard is not None:
                yield heard
            elif ended:
                return

    def newest_of_live(self) -> Iterator[Window]:
        """A live source heard by a reader thread as it comes: each time, the newest window."""
        newest, stop = Newest(), threading.Event()
        most = max(1, round(READ_SECONDS * self.source.rate))

        def hear() -> None:
            try:
                while not stop.is_set():
                    block = self.source.read(most)  # [n, C]
                    if len(block) == 0:
                        break
                    window, completed = self.hearing.feed(block, lambda end: self.clock.now())
                    if window is not None:
                        newest.put(window, completed)
                newest.end()
            except BaseException as exc:  # handed to the drawer, which raises it
                newest.end(exc)

        reader = threading.Thread(target=hear, name="live-reader", daemon=True)  # a blocked read must not hold exit
        reader.start()
        try:
            while (window := newest.take()) is not None:
                yield window
        finally:
            stop.set()
