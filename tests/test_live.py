"""``audiotoken-rt live`` and ``runtime.live``, on the tiny bundle and the clip of tests/data.

Each frame is checked against the pipeline called directly on its window, cut from the source here (soundfile, or
the very samples written to the pipe): a file and a pipe give a frame per window, equal to ``Pipeline.draw`` of
that window's samples, with the window's start, end, seed and recipe in the PNG; ``--follow`` gives frames equal to
``Pipeline.draw_edit`` of the previous frame at that strength and seed. Real time: a clock moved by hand (the drawing
"takes" 2.5 s per picture) makes the skipping of a paced file exact (which windows, how many skipped, the
latencies), through the API and the command; a live source keeps every window either drawn or counted as skipped.
The command's bad inputs are one line each; Ctrl-C leaves every frame it announced on disk and exits 0; ``--video``
holds the frames at their windows' times (read back with PyAV); the ``--web`` page, in Debian's headless Chromium
(selenium), shows each new frame's pixels without reloading.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

import runtime.live
from audiotoken_rt.cli import app
from runtime.commands import live_page
from runtime.commands.live import interrupt_after
from runtime.commands.live_page import MAX_CONNECTIONS, LivePage
from runtime.errors import ConfigError
from runtime.live import FileSource, Hearing, Live, LiveOptions, PcmSource
from runtime.picture import read_png_metadata
from runtime.pipeline import EditOptions, GenerationOptions, Pipeline
from tests.support import REPO, psnr

CLIP = REPO / "tests" / "data" / "3YOH4c9HXpo_290000_300000.wav"  # 16 kHz mono, 10.008 s
STEPS = 2
SEED = 5


@pytest.fixture(scope="module")
def pipeline(tiny_bundle) -> Pipeline:
    return Pipeline.open(tiny_bundle)


@pytest.fixture(scope="module")
def clip_samples() -> tuple[np.ndarray, int]:
    samples, rate = sf.read(CLIP, dtype="float32")  # [n]
    return samples, rate


def invoke(*args):
    result = CliRunner().invoke(app, ["live", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def frames_in(out: Path) -> list[Path]:
    return sorted(out.glob("frame-*.png"))


def pixels(path_or_picture) -> np.ndarray:
    picture = Image.open(path_or_picture) if isinstance(path_or_picture, (str, Path)) else path_or_picture
    return np.asarray(picture.convert("RGB"))


def window_of(samples: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    return samples[round(start * rate) : round(end * rate)]


def test_a_file_gives_a_frame_per_window_each_drawn_from_its_window(pipeline, tiny_bundle, clip_samples, tmp_path):
    out = tmp_path / "frames"
    code, stdout, stderr = invoke(
        CLIP, "--engines", tiny_bundle, "--out", out, "--every", 3, "--window", 4, "--steps", STEPS, "--seed", SEED
    )
    assert code == 0, stderr
    # 10.008 s: windows end at 3, 6 and 9 s; the last 1.008 s is less than --every and gets none
    expected = [(0.0, 3.0), (2.0, 6.0), (5.0, 9.0)]
    frames = frames_in(out)
    assert [path.name for path in frames] == ["frame-000001.png", "frame-000002.png", "frame-000003.png"]
    assert stdout.splitlines() == [
        f"{path}\tseed {SEED}\twindow {s:g} {e:g}" for path, (s, e) in zip(frames, expected, strict=True)
    ]
    samples, rate = clip_samples
    for k, (path, (start, end)) in enumerate(zip(frames, expected, strict=True), start=1):
        meta = read_png_metadata(path)
        assert (float(meta["window_start"]), float(meta["window_end"])) == (start, end)
        assert (meta["window"], meta["seed"], meta["steps"], meta["scheduler"]) == (str(k), str(SEED), "2", "dpm++2m")
        assert meta["clip"] == str(CLIP) and meta["bundle"] == pipeline.bundle.manifest.bundle_id
        assert meta["skipped_before"] == "0" and float(meta["latency_s"]) >= 0 and "follows_window" not in meta
        assert "start" not in meta  # a clip's --start does not place a window: window_start does
        reference = pipeline.draw(
            window_of(samples, rate, start, end), GenerationOptions(seed=SEED, steps=STEPS), sample_rate=rate
        )
        assert np.array_equal(pixels(path), pixels(reference.pictures[0])), f"frame {k} is not its window's picture"
    assert not np.array_equal(pixels(frames[0]), pixels(frames[2]))  # the windows differ, so do the pictures
    assert "3 frames from 10.008 s of sound" in stderr


def test_a_window_shorter_than_10_s_is_loop_tiled_as_generate_tiles_a_short_clip(pipeline, clip_samples, tmp_path):
    samples, rate = clip_samples
    short = tmp_path / "short.wav"
    sf.write(short, samples[: 3 * rate], rate)
    ((window, drawn),) = list(
        Live(pipeline, FileSource(short), LiveOptions(every=3), GenerationOptions(seed=1, steps=2)).frames()
    )
    assert (window.start, window.end) == (0.0, 3.0)
    generated = pipeline.draw(short, GenerationOptions(seed=1, steps=2))  # generate's reading of a 3 s clip
    assert np.array_equal(pixels(drawn.picture), pixels(generated.pictures[0]))


def test_stdin_pcm_gets_every_window_while_the_writer_waits(pipeline, tiny_bundle, tmp_path):
    rate, seconds, every = 8_000, 12, 1.5
    time_axis = np.arange(seconds * rate) / rate
    stereo = np.stack(
        [np.sin(2 * np.pi * 220 * time_axis * (1 + time_axis / 4)), np.cos(2 * np.pi * 97 * time_axis)], 1
    )
    stereo = (0.5 * stereo).astype("<f4")  # [n, 2], 384 kB: six times a pipe's buffer, so the writer must wait
    out = tmp_path / "frames"
    args = ["live", "-", "--engines", tiny_bundle, "--out", out, "--every", every, "--window", 3, "--rate", rate]
    args += ["--channels", 2, "--steps", STEPS, "--seed", SEED]
    done = subprocess.run(
        [sys.executable, "-m", "audiotoken_rt", *map(str, args)],
        input=stereo.tobytes() + b"\x00\x00",  # and a partial frame, dropped
        capture_output=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    frames = frames_in(out)
    assert len(frames) == 8 == len(done.stdout.splitlines())  # 12 s / 1.5 s: every window
    ends = [float(read_png_metadata(path)["window_end"]) for path in frames]
    assert ends == [every * k for k in range(1, 9)]
    for k in (0, 7):  # the first window (1.5 s: loop-tiled) and the last (9 to 12 s)
        end = ends[k]
        start = max(0.0, end - 3)
        mono = stereo[round(start * rate) : round(end * rate), 0]  # --downmix first
        reference = pipeline.draw(mono, GenerationOptions(seed=SEED, steps=STEPS), sample_rate=rate)
        assert np.array_equal(pixels(frames[k]), pixels(reference.pictures[0]))


def test_follow_draws_each_frame_as_an_edit_of_the_previous_one(pipeline, tiny_bundle, clip_samples, tmp_path):
    out = tmp_path / "frames"
    follow = 0.5
    code, _, stderr = invoke(
        CLIP, "--engines", tiny_bundle, "--out", out, "--every", 2.5, "--follow", follow, "--steps", 4, "--seed", SEED
    )
    assert code == 0, stderr
    frames = frames_in(out)
    assert len(frames) == 4
    samples, rate = clip_samples
    edit = EditOptions(strength=follow, seed=SEED, steps=4)
    for k in range(1, len(frames)):
        meta = read_png_metadata(frames[k])
        assert (meta["strength"], meta["follows_window"], meta["seed"]) == (str(follow), str(k), str(SEED))
        window = window_of(samples, rate, float(meta["window_start"]), float(meta["window_end"]))
        previous = Image.open(frames[k - 1])
        expected = pipeline.draw_edit(previous, window, edit, sample_rate=rate).pictures[0]
        assert np.array_equal(pixels(frames[k]), pixels(expected)), f"frame {k + 1} is not an edit of frame {k}"
        drawn_anew = pipeline.draw(window, GenerationOptions(seed=SEED, steps=4), sample_rate=rate).pictures[0]
        assert not np.array_equal(pixels(frames[k]), pixels(drawn_anew))  # following is not drawing anew


class HandClock:
    """A clock that moves only when told: ``sleep`` and the slow drawing move it."""

    def __init__(self):
        self.time = 100.0

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.time += seconds


def slow_drawing(monkeypatch, clock: HandClock, seconds: float) -> None:
    """Every picture takes ``seconds`` of the hand clock."""
    draw = Pipeline.draw

    def slow(self, *args, **kwargs):
        result = draw(self, *args, **kwargs)
        clock.time += seconds
        return result

    monkeypatch.setattr(Pipeline, "draw", slow)


# A 10.008 s file heard at its pace, a window per second, 2.5 s per picture: drawn are windows 1 (at 1 s), 3 (the
# newest at 3.5 s), 6 (at 6 s), 8 (at 8.5 s) and 10 (at 11 s: the file has ended), the rest skipped.
PACED_WINDOWS, PACED_SKIPPED, PACED_LATENCY = [1, 3, 6, 8, 10], [0, 1, 2, 1, 1], [2.5, 3.0, 2.5, 3.0, 3.5]


def test_realtime_skips_the_windows_a_slow_drawer_cannot_keep_up_with(pipeline, monkeypatch):
    clock = HandClock()
    slow_drawing(monkeypatch, clock, 2.5)
    live = Live(
        pipeline, FileSource(CLIP), LiveOptions(every=1, realtime=True), GenerationOptions(seed=1, steps=2), clock=clock
    )
    drawn = list(live.frames())
    assert [window.index for window, _ in drawn] == PACED_WINDOWS
    assert [window.skipped for window, _ in drawn] == PACED_SKIPPED
    assert [drawing.latency for _, drawing in drawn] == pytest.approx(PACED_LATENCY)
    assert (live.windows, live.skipped) == (10, 5)


def test_the_command_says_how_many_windows_it_skipped(tiny_bundle, monkeypatch, tmp_path):
    clock = HandClock()
    monkeypatch.setattr(runtime.live, "SystemClock", lambda: clock)
    slow_drawing(monkeypatch, clock, 2.5)
    out, report = tmp_path / "frames", tmp_path / "live.json"
    code, _, stderr = invoke(
        CLIP, "--engines", tiny_bundle, "--out", out, "--every", 1, "--realtime", "--steps", 2, "--json", report
    )
    assert code == 0, stderr
    notes = [line for line in stderr.splitlines() if line.startswith("skipped")]
    assert notes == [
        "skipped 1 window (drawing is slower than the sound): drawing window 3, 0 to 3 s",
        "skipped 2 windows (drawing is slower than the sound): drawing window 6, 0 to 6 s",
        "skipped 1 window (drawing is slower than the sound): drawing window 8, 0 to 8 s",
        "skipped 1 window (drawing is slower than the sound): drawing window 10, 0 to 10 s",
    ]
    assert "5 frames from 10.008 s of sound" in stderr and "(5 windows skipped)" in stderr
    metas = [read_png_metadata(path) for path in frames_in(out)]
    assert [int(meta["window"]) for meta in metas] == PACED_WINDOWS
    assert [int(meta["skipped_before"]) for meta in metas] == PACED_SKIPPED
    assert [float(meta["latency_s"]) for meta in metas] == pytest.approx(PACED_LATENCY)
    figures = json.loads(report.read_text())
    assert (figures["windows"], figures["frames_drawn"], figures["skipped"]) == (10, 5, 5)
    assert figures["latency_p50_s"] == pytest.approx(3.0) and figures["latency_p95_s"] == pytest.approx(3.4)
    assert [frame["window"] for frame in figures["frames"]] == PACED_WINDOWS


def test_hearing_gives_the_newest_window_of_each_block_cut_from_the_stream():
    rate, every, window = 8_000, 0.25, 1.5
    stream = np.random.default_rng(2).standard_normal((12 * rate, 2)).astype(np.float32)  # [n, 2]: 12 s, 48 windows
    hearing = Hearing("stream", rate, every, window, "second")
    sizes = np.random.default_rng(3).integers(1, 3 * rate, 40)  # blocks from 1 frame to 3 s (up to 12 windows)
    first, windows = 0, []
    for size in sizes:
        block = stream[first : first + size]  # [size, 2] (less at the end)
        newest, completed = hearing.feed(block, lambda end: end)
        first += len(block)
        assert hearing.windows == sum(count for _, count in windows) + completed
        if newest is None:
            assert completed == 0
            continue
        windows.append((newest, completed))
        assert newest.index == hearing.windows and newest.end == newest.index * every <= first / rate
        assert first / rate < (newest.index + 1) * every  # the newest the block completed
        assert newest.start == max(0.0, newest.end - window) and newest.heard_at == newest.end
        expected = stream[round(newest.start * rate) : round(newest.end * rate), 1]  # --downmix second
        assert np.array_equal(newest.samples, expected), f"window {newest.index} is not its stretch of the stream"
    assert first == len(stream) and hearing.windows == 48


def test_a_slow_drawer_copies_only_the_windows_it_draws(pipeline, monkeypatch):
    """With a window every 10 ms and 2.5 s per picture, a paced file and a live source each complete hundreds of
    windows per picture: only the newest of each block read (0.1 s) is cut from the ring (a copy of up to 10 s of
    sound), not every window, and only the newest is kept."""
    cuts = []
    held = Hearing.held
    monkeypatch.setattr(Hearing, "held", lambda self: cuts.append(1) or held(self))
    clock = HandClock()
    slow_drawing(monkeypatch, clock, 2.5)
    options, drawing = LiveOptions(every=0.01, realtime=True), GenerationOptions(seed=1, steps=1)
    live = Live(pipeline, FileSource(CLIP), options, drawing, clock=clock)
    drawn = list(live.frames())
    assert (live.windows, len(drawn), live.skipped) == (1000, 5, 995)
    assert len(cuts) <= 101  # a block read each 0.1 s of 10.008 s, against a window each 10 ms (1000)
    samples = (0.3 * np.sin(np.arange(16_000 * 20) / 7)).astype("<f4")  # 20 s on a pipe, read at once
    cuts.clear()
    live = Live(pipeline, PcmSource(io.BytesIO(samples.tobytes())), options, drawing, clock=clock)
    drawn = list(live.frames())
    assert live.windows == 2000 and len(drawn) + live.skipped == 2000
    assert len(cuts) <= 200  # one per block read (0.1 s) at most, against one per window (2000)


def test_a_live_source_in_real_time_draws_the_newest_window_and_counts_the_rest(pipeline, monkeypatch):
    rate = 16_000
    samples = (0.3 * np.sin(np.arange(20 * rate) / 7)).astype("<f4")  # 20 s, all there at once
    live = Live(
        pipeline,
        PcmSource(io.BytesIO(samples.tobytes()), rate),
        LiveOptions(every=0.5, realtime=True),
        GenerationOptions(seed=1, steps=2),
    )
    draw = Pipeline.draw

    def waits_for_the_whole_stream(self, *args, **kwargs):  # the drawer is slower than the reader, for certain
        deadline = time.monotonic() + 60
        while live.windows < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        return draw(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "draw", waits_for_the_whole_stream)
    drawn = [window for window, _ in live.frames()]
    assert live.windows == 40 and drawn[-1].index == 40 and drawn[-1].end == 20.0
    assert len(drawn) <= 2  # the first window taken, then the newest: nothing queued
    assert len(drawn) + live.skipped == 40
    assert [w.skipped for w in drawn] == [
        w.index - before - 1 for w, before in zip(drawn, [0] + [w.index for w in drawn][:-1], strict=True)
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--every", 0], "--every is 0.0 s; it must be from 0.01 to 3600 seconds"),
        (["--every", -2], "--every is -2.0 s"),
        (["--window", 10.5], "--window is 10.5 s; it must be from 0.01 to 10 seconds"),
        (["--follow", 1.5], "--follow is 1.5; it must be between 0"),
        (["--follow", -0.1], "--follow is -0.1"),
        (["--rate", 100], "--rate is 100 Hz; it must be a whole number from 4000 to 384000"),
        (["--rate", 400_000], "--rate is 400000 Hz"),
        (["--channels", 0], "--channels is 0; it must be a whole number from 1 to 1024"),
        (["--web", 70_000], "--web is 70000; it must be a port number"),
        (["--video", "frames.avi"], "the video is an MP4 file"),
    ],
)
def test_a_bad_option_is_one_line_before_any_work(args, says, tmp_path):
    code, stdout, stderr = invoke("-", "--engines", tmp_path / "no-bundle", "--out", tmp_path / "out", *args)
    assert code == 1 and stdout == ""
    lines = stderr.splitlines()
    assert lines[0].startswith("error: ") and says in lines[0], stderr
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:])
    assert not (tmp_path / "out").exists()


def test_rate_with_a_file_and_frames_of_an_earlier_run_are_refused(tiny_bundle, tmp_path):
    code, _, stderr = invoke(CLIP, "--engines", tiny_bundle, "--out", tmp_path, "--rate", 16000)
    assert code == 1 and "--rate describes raw PCM on stdin ('-') or the microphone ('mic')" in stderr
    (tmp_path / "frame-000001.png").write_bytes(b"an earlier run's")
    code, _, stderr = invoke(CLIP, "--engines", tiny_bundle, "--out", tmp_path, "--every", 5, "--steps", 2)
    assert code == 1 and "holds 1 frame of an earlier run (frame-000001.png, ...); nothing was drawn" in stderr
    code, _, stderr = invoke(
        CLIP, "--engines", tiny_bundle, "--out", tmp_path, "--every", 5, "--steps", 2, "--overwrite"
    )
    assert code == 0, stderr
    assert [path.name for path in frames_in(tmp_path)] == ["frame-000001.png", "frame-000002.png"]


def test_a_follow_too_weak_for_the_steps_is_refused_by_its_name(tiny_bundle, tmp_path):
    args = ["--out", tmp_path / "out", "--steps", 2, "--follow", 0.1]
    code, stdout, stderr = invoke(CLIP, "--engines", tiny_bundle, *args)
    assert code == 1 and stdout == "" and not (tmp_path / "out").exists()
    assert stderr.splitlines()[0] == "error: --follow 0.1 leaves int(2 * 0.1) = 0 of the 2 steps to run", stderr
    assert "--strength" not in stderr  # edit's option, not live's


def test_mic_without_sounddevice_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import sounddevice raises ImportError
    code, _, stderr = invoke("mic", "--engines", tmp_path, "--out", tmp_path / "out")
    assert code == 1
    assert stderr.splitlines() == [
        "error: mic needs the sounddevice package (PortAudio's Python binding), which is not installed",
        "hint: pip install 'audiotoken-rt[live]'; or read a file, or raw PCM on stdin with '-'",
    ]


class FakeInputStream:
    """sounddevice.InputStream as PortAudio drives it: once started, its own thread hands the callback block after
    block of ``SIGNAL``, each time in the SAME buffer, overwritten (PortAudio reuses its buffers)."""

    SIGNAL = np.sin(np.arange(16_000 * 3) / 7.0).astype(np.float32).reshape(-1, 2)  # [24000, 2]
    BLOCK = 512

    def __init__(self, samplerate, channels, dtype, callback):
        assert (samplerate, channels, dtype) == (16_000, 2, "float32")
        self.callback, self.active, self.thread = callback, False, None

    def start(self):
        self.active = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        buffer = np.empty((self.BLOCK, 2), np.float32)
        for first in range(0, len(self.SIGNAL), self.BLOCK):
            block = self.SIGNAL[first : first + self.BLOCK]
            buffer[: len(block)] = block
            self.callback(buffer[: len(block)], len(block), None, None)
        buffer[:] = np.nan  # what the last block would read if it were not copied

    def stop(self):
        self.active = False

    def close(self):
        pass


def test_the_microphone_delivers_every_block_in_order_copied_from_portaudios_buffer(monkeypatch):
    """MicSource's data path without a device: PortAudio's callback thread -> the queue -> read(), each block kept as
    a copy (PortAudio overwrites its buffer), none lost or reordered, recording from the first read only."""
    fake = type(sys)("sounddevice")
    fake.PortAudioError = type("PortAudioError", (Exception,), {})
    fake.query_devices = lambda kind: {"name": "fake", "default_samplerate": 16_000.0, "max_input_channels": 2}
    fake.check_input_settings = lambda **settings: None
    fake.InputStream = FakeInputStream
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    source = runtime.live.open_source("mic", 16_000, 2)
    assert source.name == "mic (fake)" and source.stream.active is False  # nothing recorded before listening
    heard = []
    while sum(map(len, heard)) < len(FakeInputStream.SIGNAL):
        heard.append(source.read(4096))  # [n, 2]
    source.stream.thread.join()
    source.close()
    np.testing.assert_array_equal(np.concatenate(heard), FakeInputStream.SIGNAL)
    assert len(source.read(4096)) == 0  # closed: the end of the stream


def test_mic_without_an_input_device_is_one_line(tmp_path):
    """This machine's real sounddevice: PortAudio's library missing, or no input device (a server, CI)."""
    code, _, stderr = invoke("mic", "--engines", tmp_path, "--out", tmp_path / "out")
    assert code == 1
    lines = stderr.splitlines()
    assert lines[0].startswith("error: mic: ") and ("no input device" in lines[0] or "PortAudio" in lines[0])
    assert len(lines) == 2 and lines[1].startswith("hint: ")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_ends_cleanly_with_every_frame_on_disk(tiny_bundle, tmp_path, stop):
    out = tmp_path / "frames"
    args = [
        "live",
        "-",
        "--engines",
        tiny_bundle,
        "--out",
        out,
        "--every",
        0.5,
        "--steps",
        4,
        "--video",
        tmp_path / "v.mp4",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "audiotoken_rt", *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    noise = (0.2 * np.random.default_rng(0).standard_normal(16_000 * 30)).astype("<f4")
    writer = threading.Thread(target=feed, args=(process.stdin, noise.tobytes()), daemon=True)
    writer.start()
    lines = []
    while len(lines) < 3:
        line = process.stdout.readline()
        assert line, process.stderr.read().decode()
        lines.append(line.decode())
    process.send_signal(stop)  # while drawing the next frames (the writer still has most of 30 s to give)
    rest, stderr = process.communicate(timeout=120)
    lines += rest.decode().splitlines(keepends=True)
    assert process.returncode == 0, stderr.decode()
    assert "interrupted: " in stderr.decode() and "Traceback" not in stderr.decode()
    frames = frames_in(out)
    assert [line.split("\t")[0] for line in lines] == [str(path) for path in frames]  # each one announced, and no more
    for path in frames:
        Image.open(path).load()  # whole
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in frames]  # no half-written file left
    assert video_times(tmp_path / "v.mp4") == pytest.approx([0.5 * k for k in range(len(frames))])


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_while_a_frame_is_written_takes_effect_once_it_is_recorded(stop):
    """The race the test above can hit: SIGINT (or SIGTERM) just after a frame is announced, before it is recorded."""
    before = signal.getsignal(stop)
    recorded = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_after():
            os.kill(os.getpid(), stop)
            time.sleep(0.05)  # the handler runs here, between two bytecodes
            recorded.append("frame")
    assert recorded == ["frame"] and signal.getsignal(stop) is before


def feed(pipe, data: bytes) -> None:
    try:
        for first in range(0, len(data), 8192):
            pipe.write(data[first : first + 8192])
        pipe.close()
    except (BrokenPipeError, ValueError):  # the command stopped reading
        pass


def video_times(path: Path) -> list[float]:
    """The presentation time of each frame of an MP4, in seconds (PyAV)."""
    import av

    with av.open(str(path)) as container:
        return [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]


def test_the_video_holds_each_frame_at_its_window_time(tiny_bundle, tmp_path):
    import av

    out, video = tmp_path / "frames", tmp_path / "live.mp4"
    args = ["--every", 2, "--steps", 2, "--seed", SEED, "--vary-seed", "--video", video]  # a seed each: distinct frames
    code, _, stderr = invoke(CLIP, "--engines", tiny_bundle, "--out", out, *args)
    assert code == 0, stderr
    frames = frames_in(out)
    assert [read_png_metadata(path)["seed"] for path in frames] == [str(SEED + k) for k in range(5)]
    assert video_times(video) == pytest.approx([0, 2, 4, 6, 8])  # window ends 2..10 s, the first at 0
    with av.open(str(video)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    for k, picture in enumerate(decoded):  # lossy (the tiny pictures are all fine texture), but each is its own
        scores = [psnr(picture, pixels(path)) for path in frames]
        assert int(np.argmax(scores)) == k and scores[k] > 20 > max(scores[:k] + scores[k + 1 :]), scores
    code, _, stderr = invoke(CLIP, "--engines", tiny_bundle, "--out", tmp_path / "again", "--video", video)
    assert code == 1 and f"--video {video}: already exists" in stderr


def test_the_page_serves_the_newest_frame_and_only_frames(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "frame-000001.png")
    (tmp_path / "secret.txt").write_text("not a frame")
    page = LivePage(tmp_path, 0)
    try:
        assert page.url.startswith("http://127.0.0.1:")
        assert get(page.url + "latest") == b"null"
        page.show("frame-000001.png", 1, 0.0, 2.0)
        latest = json.loads(get(page.url + "latest"))
        assert (latest["frame"], latest["start"], latest["end"]) == (1, 0.0, 2.0)
        assert get(page.url + latest["url"].lstrip("/")) == (tmp_path / "frame-000001.png").read_bytes()
        for path in ("secret.txt", "frames/secret.txt", "frames/..%2Fsecret.txt", "frames/frame-000002.png"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                get(page.url + path)
        with pytest.raises(ConfigError, match=f"--web {page.server.server_address[1]}: cannot listen"):
            LivePage(tmp_path, page.server.server_address[1])
    finally:
        page.close()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def answer_status(page: LivePage, path: str, host: str | None = None) -> int:
    """The HTTP status of GET ``path``, with ``host`` as the Host header (default: the page's own)."""
    request = urllib.request.Request(page.url + path.lstrip("/"), headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_page_refuses_other_hosts_and_stays_quiet_when_clients_vanish(tmp_path, capfd):
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), np.uint8)  # a frame too big for one send
    Image.fromarray(noise).save(tmp_path / "frame-000001.png")
    page = LivePage(tmp_path, 0)
    try:
        port = page.server.server_address[1]
        page.show("frame-000001.png", 1, 0.0, 2.0)
        assert answer_status(page, "latest", f"localhost:{port}") == 200
        for host in (f"attacker.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}"):  # a rebound name, ...
            assert answer_status(page, "frames/frame-000001.png", host) == 403
        for _ in range(5):  # asks for the frame, then resets the connection before reading it
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"GET /frames/frame-000001.png HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        deadline = time.monotonic() + 10
        while page.server.slots._value < MAX_CONNECTIONS and time.monotonic() < deadline:  # all answered
            time.sleep(0.05)
        assert page.server.slots._value == MAX_CONNECTIONS
    finally:
        page.close()
    assert capfd.readouterr().err == ""  # no traceback of a client gone away


def test_the_page_holds_at_most_its_connections_and_drops_idle_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(live_page, "CLIENT_SECONDS", 2.0)
    page = LivePage(tmp_path, 0)
    idle = []
    try:
        idle = [socket.create_connection(("127.0.0.1", page.server.server_address[1])) for _ in range(MAX_CONNECTIONS)]
        deadline = time.monotonic() + 1.5
        while page.server.slots._value > 0 and time.monotonic() < deadline:  # each accepted, holding its thread
            time.sleep(0.01)
        assert answer_status(page, "latest") == 503  # one too many: refused at once
        for client in idle:  # each dropped by the page after CLIENT_SECONDS without a request
            client.settimeout(10)
            assert client.recv(1) == b""
        assert answer_status(page, "latest") == 200  # their places are free again
    finally:
        for client in idle:
            client.close()
        page.close()


def chromium_driver():
    """Debian's headless Chromium under its chromedriver (.ci/setup installs both, and selenium)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/setup installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(driver))


SHOWN_PIXELS = """
const picture = document.getElementById("picture");
if (!picture.complete || picture.naturalWidth === 0) return null;
const canvas = document.createElement("canvas");
canvas.width = picture.naturalWidth; canvas.height = picture.naturalHeight;
const context = canvas.getContext("2d");
context.drawImage(picture, 0, 0);
return [picture.getAttribute("src"), document.getElementById("when").textContent,
        Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)];
"""


def test_the_page_shows_each_new_picture_without_reloading(tiny_bundle, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium_driver()
    out = tmp_path / "frames"
    args = ["live", "-", "--engines", tiny_bundle, "--out", out, "--every", 1, "--window", 1, "--steps", 2, "--web", 0]
    process = subprocess.Popen(
        [sys.executable, "-m", "audiotoken_rt", *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        url = next(line.decode().split()[-1] for line in process.stderr if line.startswith(b"watch it at "))
        browser.get(url)
        browser.execute_script("window.sameDocument = true;")
        tone = np.sin(np.arange(16_000) * 0.3).astype("<f4")  # 1 s: window 1
        noise = np.random.default_rng(1).uniform(-0.5, 0.5, 16_000).astype("<f4")  # the next second: window 2
        shown = []
        for k, second in enumerate((tone, noise), start=1):
            process.stdin.write(second.tobytes())
            process.stdin.flush()
            name = f"frame-{k:06d}.png"
            src, when, rgba = WebDriverWait(browser, 60, poll_frequency=0.1).until(
                lambda b, name=name: (got := b.execute_script(SHOWN_PIXELS)) and name in got[0] and got
            )
            page_pixels = np.array(rgba, np.uint8).reshape(*pixels(out / name).shape[:2], 4)[..., :3]
            assert np.array_equal(page_pixels, pixels(out / name))  # the page shows that frame, pixel for pixel
            assert when == f"frame {k}: {k - 1:.2f} to {k:.2f} s of the stream"
            shown.append(page_pixels)
        assert not np.array_equal(shown[0], shown[1])  # the picture changed
        assert browser.execute_script("return window.sameDocument === true;")  # no reload
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        browser.quit()
        if process.poll() is None:
            process.kill()
        process.wait()
