"""``audiotoken-rt bench``: per-stage and end-to-end latency and peak memory of each backend, in one run.

Each backend is measured in its own fresh Python process (``python -m runtime.bench --worker ...``), so its
peak resident memory (``ru_maxrss``) is its own and one backend's caches never warm another's. A worker opens
the bundle, draws one warm-up picture (2 steps, not counted), then ``repeats`` measured pictures of ``steps``
steps with the same clip and seed, and prints one JSON object. The parent runs the backends in turn for
``rounds`` rounds (A, B, A, B, ...) and keeps each figure's best round (the lowest time, the highest memory),
because a shared or thermally throttled CPU drifts by 20% over minutes and alternation exposes every backend
to the same drift. It prints a table with ratios against the ``torch`` reference and optionally writes ``--json``:
``{"backends": {name: {"stages": {stage: ms}, "total_ms": ..., "unet_step_ms": ..., "peak_rss_mb": ...}}, ...}``.
The ``torch`` backend is the PyTorch side's plug-in (``runtime.backends``); the worker finds it like any backend.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import typer

from runtime.backends import DEVICES, GPU_DEVICES, backend_names
from runtime.command import choice, option, reports_errors
from runtime.errors import AudioTokenError, ConfigError
from runtime.schedulers import SCHEDULER_NAMES

STAGES = ("load_audio", "encode_audio", "encode_prompt", "denoise", "decode_latents")


@dataclass(frozen=True)
class BenchOptions:
    """What each backend draws, and how often; ``help`` of each field is the command-line option's help."""

    steps: int = field(default=10, metadata={"help": "Denoising steps per measured picture."})
    repeats: int = field(default=1, metadata={"help": "Measured pictures per backend and round (after one warm-up)."})
    rounds: int = field(default=2, metadata={"help": "Rounds of alternating backends; the best round of each counts."})
    scheduler: str = field(default="dpm++2m", metadata={"help": "Scheduler of the measured pictures."})

    def check(self) -> None:
        for name in ("steps", "repeats", "rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} is {getattr(self, name)}; it must be at least 1")


def measure(bundle: str, backend: str, device: str, clip: str, steps: int, repeats: int, scheduler: str) -> dict:
    """One backend's figures (run inside the worker process)."""
    from runtime.pipeline import GenerationOptions, Pipeline

    started = time.perf_counter()
    pipeline = Pipeline.open(bundle, backend=backend, device=device)
    open_ms = (time.perf_counter() - started) * 1000
    options = GenerationOptions(steps=steps, seed=0, scheduler=scheduler)
    pipeline.draw(clip, replace(options, steps=2))  # warm-up: lazy sessions, allocator, caches
    stages: dict[str, float] = {}
    unet_ms, unet_calls, total_ms = 0.0, 0, 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        result = pipeline.draw(clip, options)
        total_ms += (time.perf_counter() - started) * 1000
        for stage in STAGES:
            stages[stage] = stages.get(stage, 0.0) + result.timings.stages.get(stage, 0.0)
        unet_ms += result.timings.stages.get("unet", 0.0)
        unet_calls += result.timings.unet_calls
    return {
        "stages": {stage: ms / repeats for stage, ms in stages.items()},
        "total_ms": total_ms / repeats,
        "unet_step_ms": unet_ms / unet_calls,
        "open_ms": open_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
    }


def run_worker(bundle: Path, backend: str, device: str, clip: Path, steps: int, repeats: int, scheduler: str) -> dict:
    """Measure one backend in a fresh interpreter; its errors come back as AudioTokenError."""
    command = [
        sys.executable,
        "-m",
        "runtime.bench",
        "--worker",
        str(bundle),
        backend,
        device,
        str(clip),
        str(steps),
        str(repeats),
        scheduler,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AudioTokenError(f"bench of backend {backend} failed: {last}")
    return json.loads(lines[-1])


def worker_device(backend: str, device: str) -> str:
    """The device a backend runs on: the torch reference takes the CPU beside OpenVINO and CUDA beside TensorRT."""
    if backend != "torch":
        return device
    return "cuda" if device in GPU_DEVICES else "cpu"


def run_rounds(
    bundle: Path,
    backends: list[str],
    device: str,
    clip: Path,
    steps: int,
    repeats: int,
    scheduler: str,
    rounds: int,
    progress=lambda name, round_: None,
) -> dict[str, dict]:
    """Alternate the backends for ``rounds`` rounds; keep the fastest round's times and the largest peak memory."""
    best: dict[str, dict] = {}
    for round_ in range(rounds):
        for name in backends:
            progress(name, round_)
            figures = run_worker(bundle, name, worker_device(name, device), clip, steps, repeats, scheduler)
            if name not in best:
                best[name] = figures
                continue
            kept = best[name]
            kept["stages"] = {s: min(ms, figures["stages"].get(s, ms)) for s, ms in kept["stages"].items()}
            for key in ("total_ms", "unet_step_ms", "open_ms"):
                kept[key] = min(kept[key], figures[key])
            kept["peak_rss_mb"] = max(kept["peak_rss_mb"], figures["peak_rss_mb"])
    return best


def machine() -> dict:
    import os

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def ratios(results: dict[str, dict], reference: str = "torch") -> dict[str, dict[str, float]]:
    """Each backend's figures over the reference backend's (below 1 is faster or smaller)."""
    if reference not in results:
        return {}
    ref = results[reference]
    return {
        name: {
            "unet_step": r["unet_step_ms"] / ref["unet_step_ms"],
            "total": r["total_ms"] / ref["total_ms"],
            "peak_rss": r["peak_rss_mb"] / ref["peak_rss_mb"],
        }
        for name, r in results.items()
        if name != reference
    }


def main() -> None:
    """Worker entry point: ``python -m runtime.bench --worker BUNDLE BACKEND DEVICE CLIP STEPS REPEATS SCHEDULER``."""
    parser = argparse.ArgumentParser(prog="python -m runtime.bench")
    parser.add_argument("--worker", action="store_true", required=True)
    for name in ("bundle", "backend", "device", "clip"):
        parser.add_argument(name)
    parser.add_argument("steps", type=int)
    parser.add_argument("repeats", type=int)
    parser.add_argument("scheduler")
    args = parser.parse_args()
    try:
        figures = measure(args.bundle, args.backend, args.device, args.clip, args.steps, args.repeats, args.scheduler)
    except AudioTokenError as exc:
        print(f"{exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(figures))


def check_backends(names: list[str]) -> list[str]:
    known = backend_names()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"unknown backend(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}")
    return names


def ratio_table(title: str, results: dict[str, dict], relative: dict[str, dict]):
    """Stage-by-backend milliseconds (and peak RSS), with each backend's ratio to torch."""
    from rich.table import Table

    table = Table(title=title, show_edge=False)
    table.add_column("ms (RSS in MB)")
    for name in results:
        table.add_column(name, justify="right")
    for name in relative:
        table.add_column(f"{name} / torch", justify="right")
    rows = [(stage, lambda r, s=stage: r["stages"].get(s, 0.0), None) for stage in STAGES] + [
        ("unet step", lambda r: r["unet_step_ms"], "unet_step"),
        ("total", lambda r: r["total_ms"], "total"),
        ("peak RSS", lambda r: r["peak_rss_mb"], "peak_rss"),
    ]
    for label, value, ratio in rows:
        cells = [f"{value(r):.1f}" for r in results.values()]
        cells += [f"{relative[name][ratio]:.2f}" if ratio else "" for name in relative]
        table.add_row(label, *cells)
    return table


@reports_errors
def bench_command(
    clip: Path = typer.Argument(..., help="The sound clip every backend draws from.", show_default=False),
    engines: Path = typer.Option(..., "--engines", help="Engine bundle folder.", show_default=False),
    backends: str = typer.Option(
        "onnxruntime,torch", "--backends", help="Comma-separated backends, each measured in its own process."
    ),
    device: str = typer.Option(
        "cpu",
        "--device",
        **choice(DEVICES),
        help="cpu, cuda, tensorrt or openvino for onnxruntime; torch then runs on cuda or cpu.",
    ),
    steps: int = option(BenchOptions, "steps", "--steps"),
    repeats: int = option(BenchOptions, "repeats", "--repeats"),
    rounds: int = option(BenchOptions, "rounds", "--rounds"),
    scheduler: str = option(BenchOptions, "scheduler", "--scheduler", **choice(SCHEDULER_NAMES)),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the figures to this JSON file.", show_default=False
    ),
) -> None:
    """Measure per-stage and end-to-end latency and peak memory of each backend on one bundle and clip."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from runtime.atomic import write_atomically
    from runtime.bundle import read_manifest

    settings = BenchOptions(steps=steps, repeats=repeats, rounds=rounds, scheduler=scheduler)
    settings.check()
    names = check_backends([b.strip() for b in backends.split(",") if b.strip()])
    manifest = read_manifest(engines)
    if not clip.is_file():
        raise ConfigError(f"{clip}: clip not found")
    console = Console(stderr=True, highlight=False)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("bench", total=rounds * len(names))

        def progress(name: str, round_: int) -> None:
            bar.update(
                task,
                completed=round_ * len(names) + names.index(name),
                description=f"{name}, round {round_ + 1} of {rounds}: warm-up + {repeats} x {steps} steps",
            )

        results = run_rounds(engines, names, device, clip, steps, repeats, scheduler, rounds, progress)
    relative = ratios(results)
    title = f"{engines}: {manifest.precision}, {manifest.width}x{manifest.height}, {steps} steps, {device}"
    Console().print(ratio_table(title, results, relative))
    if json_out:
        report = {
            "backends": results,
            "ratios_vs_torch": relative,
            "steps": steps,
            "repeats": repeats,
            "rounds": rounds,
            "device": device,
            "scheduler": scheduler,
            "bundle": manifest.bundle_id,
            "precision": manifest.precision,
            "height": manifest.height,
            "width": manifest.width,
            "machine": machine(),
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(json_out, (json.dumps(report, indent=2) + "\n").encode())
        console.print(f"wrote {json_out}")


if __name__ == "__main__":
    main()
