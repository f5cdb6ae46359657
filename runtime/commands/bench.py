"""``audiotoken-rt bench``: per-stage and end-to-end latency and peak memory of several configurations, in one run.

A configuration is a bundle, a backend and a way to draw (``GenerationOptions``). Two sets are measured:
- ``--backends onnxruntime,torch`` (the default): each backend on ``--engines``, ``--steps`` steps of
  ``--scheduler``, the bundle's recipe where unset (DPM-Solver++ at guidance 7.5 for a plain bundle); ratios
  against ``torch``, the PyTorch networks the bundle was exported from;
- named configurations, ``--engines NAME=DIR`` (repeatable): NAME is ``[BACKEND-]RECIPE[-LABEL]``, a recipe of
  ``RECIPES`` drawn on bundle DIR by BACKEND (onnxruntime when left out), e.g. ``turbo``, ``torch-turbo``,
  ``turbo-small``: ``default`` (the bundle's own recipe, DPM-Solver++ 25 steps at guidance 7.5 with the full VAE for
  a plain bundle), ``fast`` (the ``--fast`` preset: LCM, 4 steps, guidance 1, the tiny decoder) and ``turbo`` (one
  step from the last training timestep, no classifier-free guidance: ``TURBO``); ratios of each configuration over
  its labelless form (turbo-small / turbo) or else over ``default``, and over its ``torch-`` form;
- ``--fast-engines FAST``: short for ``--engines default=ENGINES --engines fast=FAST --engines torch-fast=FAST``
  (``torch-fast``: the fast recipe on the PyTorch networks, fp32); ratios fast / default and fast / torch-fast;
- ``--regions`` adds ``NAME-2regions``: the clip composed twice in two regions (left, right), whose UNet step
  (all of its calls) over the plain one is what a region costs;
- ``--edit`` adds, beside each configuration, ``NAME-edit``: ``edit`` at strength 0.6 of the picture that
  configuration's warm-up drew (the same recipe, so about 60% of the UNet steps plus the VAE encoder); ratios
  between the edit configurations as between the others, and each edit over its own generate.

Each configuration is measured in its own fresh Python process (``python -m runtime.commands.bench --worker ...``), so its
peak resident memory (``ru_maxrss``) is its own and one configuration's caches never warm another's. A worker
opens the bundle, draws one warm-up picture (2 steps, not counted), then ``repeats`` measured pictures with the same
clip and seed 0, and prints one JSON object. The parent runs the configurations in turn for ``rounds`` rounds
(A, B, C, A, B, C, ...) and keeps each figure's best round (the lowest time, the highest memory), because a shared
or throttled CPU drifts by 20% over minutes and alternation exposes every configuration to the same drift. Each
round's total is kept too, and each ratio's round-by-round values beside its best-over-best one: the spread of
those is how far the drift moves the ratio.
Before any worker runs, each configuration's backend is asked whether it can start here
(``runtime.backends.backend_ready``). It prints tables that read at 100 columns, one row per configuration (what
it drew, its UNet step, total and peak memory; its milliseconds per stage; each round's total) and one per ratio,
and optionally writes ``--json``: ``{"configs": {name: {"stages": {stage: ms}, "total_ms": ...,
"unet_step_ms": ..., "peak_rss_mb": ..., "round_totals_ms": [...], "recipe": {the drawn
``runtime.sampling.Sampling``'s fields, "unet_batch", "decoder"}}}, "ratios": {"a / b": {..., "total_by_round":
[...]}}, ...}``. The ``torch`` backend is the
PyTorch side's plug-in (``runtime.backends``); the worker finds it like any backend.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import typer

from runtime.backends import DEVICES, GPU_DEVICES, backend_names, backend_ready
from runtime.commands.cli import choice, option, reports_errors
from runtime.contract import UNET
from runtime.errors import AudioTokenError, ConfigError
from runtime.pipeline import ComposeOptions, EditOptions, GenerationOptions, Pipeline, Stopwatch
from runtime.sampling import PRESETS
from runtime.schedulers import SCHEDULER_NAMES

STAGES = ("load_audio", "encode_audio", "encode_prompt", "encode_picture", "denoise", "decode_latents")
WARM_UP_STEPS = 2
EDIT_STRENGTH = 0.6
# The one-step recipe: the hyper-1step preset's (Hyper-SD's one-step LoRA: TCD, one step from t=999, no
# classifier-free guidance, a UNet of batch 1), drawn on any bundle holding batch 1.
TURBO = GenerationOptions(**PRESETS["hyper-1step"].sampling.to_json())
RECIPES = {"default": GenerationOptions(), "fast": GenerationOptions(fast=True), "turbo": TURBO}  # unset: the bundle's
TORCH = "torch"  # the reference backend, the PyTorch networks a bundle was exported from


@dataclass(frozen=True)
class BenchOptions:
    """How often each configuration draws; ``help`` of each field is the command-line option's help."""

    steps: int | None = field(
        default=None,
        metadata={"help": "Denoising steps per measured picture (--backends only; default: the bundle's recipe)."},
    )
    repeats: int = field(
        default=1, metadata={"help": "Measured pictures per configuration and round (after a warm-up)."}
    )
    rounds: int = field(
        default=2, metadata={"help": "Rounds of alternating configurations; the best round of each counts."}
    )
    scheduler: str | None = field(
        default=None,
        metadata={"help": "Scheduler of the measured pictures (--backends only; default: the bundle's recipe)."},
    )
    regions: bool = field(
        default=False,
        metadata={
            "help": "Also measure two regions beside each configuration (NAME-2regions: compose the clip twice, "
            "--layout left,right); the unconditional pass is shared."
        },
    )
    edit: bool = field(
        default=False,
        metadata={
            "help": f"Also measure `edit` at strength {EDIT_STRENGTH} beside each configuration (NAME-edit): it edits "
            "the picture that configuration's warm-up drew."
        },
    )

    def check(self) -> None:
        for name in ("steps", "repeats", "rounds"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name} is {getattr(self, name)}; it must be at least 1")


@dataclass(frozen=True)
class Config:
    """One measured configuration: a bundle, a backend on a device, and how to draw."""

    name: str
    bundle: Path
    backend: str
    device: str
    options: GenerationOptions  # EditOptions: the configuration edits a picture


def measure(bundle: str, backend: str, device: str, clip: str, repeats: int, options: GenerationOptions) -> dict:
    """One configuration's figures (run inside the worker process). An edit configuration edits the picture its
    warm-up drew (the vae_encoder engine warms up in a first edit, not counted)."""
    started = time.perf_counter()
    pipeline = Pipeline.open(bundle, backend=backend, device=device)
    open_ms = (time.perf_counter() - started) * 1000
    warm_up = replace(options, steps=min(WARM_UP_STEPS, options.steps or WARM_UP_STEPS))
    drawing = {f.name: getattr(warm_up, f.name) for f in fields(GenerationOptions)}  # an edit's options, less the edit
    (picture,) = pipeline.draw(clip, GenerationOptions(**{**drawing, "num_images": 1})).pictures
    editing = isinstance(options, EditOptions)

    def draw(options: GenerationOptions, watch: Stopwatch | None = None):
        if editing:
            return pipeline.draw_edit(picture, clip, options, watch=watch)
        if isinstance(options, ComposeOptions):
            return pipeline.draw_compose([clip, clip], options, watch=watch)
        return pipeline.draw(clip, options, watch=watch)

    if editing or isinstance(options, ComposeOptions):
        draw(warm_up)
    watch = Stopwatch()  # every repeat's stages, summed (encode_picture only when editing)
    total_ms = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        result = draw(options, watch)
        total_ms += (time.perf_counter() - started) * 1000
    drawn = result.options
    return {
        "stages": {stage: watch.stages[stage] / repeats for stage in STAGES if stage in watch.stages},
        "total_ms": total_ms / repeats,
        "unet_step_ms": watch.stages[UNET] / watch.steps,  # per denoising step (two regions: all their calls)
        "open_ms": open_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
        "recipe": {
            **drawn.sampling(pipeline.bundle.manifest.recipe).to_json(),
            "unet_batch": 2 if pipeline.guided(drawn) else 1,
            "decoder": pipeline.bundle.manifest.recipe.decoder,
        },
    }


def run_worker(config: Config, clip: Path, repeats: int) -> dict:
    """Measure one configuration in a fresh interpreter; its errors come back as AudioTokenError."""
    options = json.dumps(asdict(replace(config.options, seed=0)))
    command = [sys.executable, "-m", "runtime.commands.bench", "--worker", str(config.bundle), config.backend, config.device,
               str(clip), str(repeats), options]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AudioTokenError(f"bench of {config.name} ({config.backend} on {config.bundle}) failed: {last}")
    return json.loads(lines[-1])


def worker_device(backend: str, device: str) -> str:
    """The device a backend runs on: the torch reference takes the CPU beside OpenVINO and CUDA beside TensorRT."""
    if backend != "torch":
        return device
    return "cuda" if device in GPU_DEVICES else "cpu"


def run_rounds(
    configs: list[Config], clip: Path, repeats: int, rounds: int, progress: Callable[[str, int], None] | None = None
) -> dict[str, dict]:
    """Alternate the configurations for ``rounds`` rounds; keep the fastest round's times and the largest peak memory,
    and every round's total (``round_totals_ms``)."""
    best: dict[str, dict] = {}
    for round_ in range(rounds):
        for config in configs:
            if progress is not None:
                progress(config.name, round_)
            figures = run_worker(config, clip, repeats)
            if config.name not in best:
                best[config.name] = {**figures, "round_totals_ms": [figures["total_ms"]]}
                continue
            kept = best[config.name]
            kept["round_totals_ms"].append(figures["total_ms"])
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


def ratio(results: dict[str, dict], name: str, reference: str) -> dict:
    """One configuration's figures over another's (below 1 is faster or smaller): best over best, and the totals
    round by round (``total_by_round``: the two measured minutes apart at most, so a drifting CPU moves both)."""
    figures, base = results[name], results[reference]
    return {
        "unet_step": figures["unet_step_ms"] / base["unet_step_ms"],
        "total": figures["total_ms"] / base["total_ms"],
        "peak_rss": figures["peak_rss_mb"] / base["peak_rss_mb"],
        "total_by_round": [a / b for a, b in zip(figures["round_totals_ms"], base["round_totals_ms"], strict=True)],
    }


def ratios(results: dict[str, dict], pairs: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """``{"a / b": ratio(a, b)}`` for each pair whose two configurations were measured."""
    return {f"{a} / {b}": ratio(results, a, b) for a, b in pairs if a in results and b in results}


def main() -> None:
    """Worker entry point: ``python -m runtime.commands.bench --worker BUNDLE BACKEND DEVICE CLIP REPEATS OPTIONS_JSON``."""
    parser = argparse.ArgumentParser(prog="python -m runtime.commands.bench")
    parser.add_argument("--worker", action="store_true", required=True)
    for name in ("bundle", "backend", "device", "clip"):
        parser.add_argument(name)
    parser.add_argument("repeats", type=int)
    parser.add_argument("options", type=json.loads)
    args = parser.parse_args()
    kind = (
        EditOptions if "strength" in args.options else ComposeOptions if "layout" in args.options else GenerationOptions
    )
    try:
        figures = measure(args.bundle, args.backend, args.device, args.clip, args.repeats, kind(**args.options))
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


def config_parts(name: str) -> tuple[str, str, str]:
    """(backend, recipe, label) of a configuration named ``[BACKEND-]RECIPE[-LABEL]``: ``torch-turbo`` is (torch,
    turbo, ''), ``turbo-small`` (onnxruntime, turbo, 'small'); one ConfigError line naming --engines when no word of
    it is a recipe of ``RECIPES``, or the words before that one are no backend."""
    words = name.split("-")
    at = next((i for i, word in enumerate(words) if word in RECIPES), None)
    backend = "-".join(words[:at]) if at else "onnxruntime"
    if at is None or backend not in backend_names():
        raise ConfigError(
            f"--engines {name}=...: a configuration's name is [BACKEND-]RECIPE[-LABEL], RECIPE one of "
            f"{', '.join(RECIPES)} and BACKEND one of {', '.join(backend_names())}",
            hint="e.g. --engines turbo=DIR --engines torch-turbo=DIR --engines turbo-small=DIR2",
        )
    return backend, words[at], "-".join(words[at + 1 :])


def engines_given(values: list[str]) -> tuple[Path | None, list[tuple[str, Path]]]:
    """``--engines``' values: the bundle the backends (or ``default``) are measured on (DIR, at most one) and the named
    configurations (NAME=DIR, in the order given)."""
    plain, named = [], []
    for value in values:
        name, equals, folder = value.partition("=")
        if equals and "/" not in name:
            config_parts(name)  # a bad name is one line before any bundle is read
            named.append((name, Path(folder)))
        else:
            plain.append(Path(value))
    if len(plain) > 1:
        raise ConfigError(
            f"--engines: {len(plain)} plain bundle folders ({', '.join(map(str, plain))}); at most one",
            hint="name the others: --engines NAME=DIR",
        )
    return (plain[0] if plain else None), named


def recipe_pairs(names: list[str]) -> list[tuple[str, str]]:
    """The ratios the named configurations show: each over its labelless form (turbo-small / turbo), else (a recipe
    other than default) over default; and each but the torch ones over its torch form (turbo / torch-turbo)."""
    pairs = []
    for name in names:
        backend, recipe, label = config_parts(name)
        if backend == TORCH:
            continue
        base = name.removesuffix(f"-{label}") if label else ("default" if recipe != "default" else None)
        reference = "-".join([TORCH, recipe, *([label] if label else [])])
        pairs += [(name, other) for other in (base, reference) if other in names and other != name]
    return pairs


def bench_configs(
    engines: Path | None,
    fast_engines: Path | None,
    backends: list[str],
    device: str,
    settings: BenchOptions,
    named: list[tuple[str, Path]] | None = None,
) -> tuple[list[Config], list[tuple[str, str]]]:
    """The configurations to measure, and the pairs whose ratios the table shows: ``backends`` on ``engines`` (unless
    ``fast_engines`` makes that bundle ``default``), then the ``named`` configurations (NAME, bundle)."""
    named = list(named or [])
    configs, pairs = [], []
    if fast_engines is not None:
        assert engines is not None, "--fast-engines measures default on the plain --engines"
        named = [("default", engines), ("fast", fast_engines), ("torch-fast", fast_engines), *named]
    elif engines is not None:
        options = GenerationOptions(steps=settings.steps, scheduler=settings.scheduler)  # unset: the bundle's recipe
        configs = [Config(name, engines, name, worker_device(name, device), options) for name in backends]
        pairs = [(name, TORCH) for name in backends if name != TORCH]
    for name, bundle in named:
        backend, recipe, _ = config_parts(name)
        configs.append(Config(name, bundle, backend, worker_device(backend, device), RECIPES[recipe]))
    pairs += recipe_pairs([name for name, _ in named])
    names = [config.name for config in configs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"--engines: configuration {', '.join(twice)} given twice", hint="give each name once")
    variants = {"edit": dict(strength=EDIT_STRENGTH)} if settings.edit else {}
    if settings.regions:
        variants["2regions"] = dict(layout="left,right")
    beside, base_pairs = [], list(pairs)
    for suffix, extra in variants.items():
        kind = EditOptions if suffix == "edit" else ComposeOptions
        beside += [replace(c, name=f"{c.name}-{suffix}", options=kind(**asdict(c.options), **extra)) for c in configs]
        pairs += [(f"{a}-{suffix}", f"{b}-{suffix}") for a, b in base_pairs]
        pairs += [(f"{c.name}-{suffix}", c.name) for c in configs]
    return configs + beside, pairs


def recipe_text(recipe: dict) -> str:
    """A configuration's recipe as its row shows it: 'ddim 50 trailing, guidance 7.5, eta 0.5, batch 2, sd-vae'
    (eta 0 and the scheduler config's spacing left unsaid)."""
    eta = f", eta {recipe['eta']:g}" if recipe["eta"] != 0 else ""
    spacing = f" {recipe['timestep_spacing']}" if recipe["timestep_spacing"] is not None else ""
    return (
        f"{recipe['scheduler']} {recipe['steps']}{spacing}, guidance {recipe['guidance']:g}{eta}, "
        f"batch {recipe['unet_batch']}, {recipe['decoder']}"
    )


def bench_tables(title: str, results: dict[str, dict], relative: dict[str, dict]) -> list:
    """The figures as tables that read at 100 columns, one row per configuration (and per ratio): what each drew
    with its headline figures, its milliseconds per stage, each round's total (the spread is the machine's drift),
    and the ratios of the chosen pairs. Figures are the best round's."""
    from rich.table import Table

    def table(title: str, first: str, *columns: str) -> Table:
        made = Table(title=title, show_edge=False, title_justify="left")
        made.add_column(first, no_wrap=True)  # a configuration's or pair's name is never cut
        for column in columns:
            made.add_column(column, justify="right")
        return made

    summary = table(title, "configuration", "recipe", "UNet\nstep ms", "total\nms", "peak RSS\nMB")
    summary.columns[1].justify = "left"
    for name, figures in results.items():
        recipe = recipe_text(figures["recipe"])
        headline = (figures["unet_step_ms"], figures["total_ms"], figures["peak_rss_mb"])
        summary.add_row(name, recipe, *(f"{value:.1f}" for value in headline))
    measured = [stage for stage in STAGES if any(stage in figures["stages"] for figures in results.values())]
    stages = table("milliseconds per stage", "configuration", *(stage.replace("_", " ") for stage in measured))
    for name, figures in results.items():
        stages.add_row(name, *(f"{figures['stages'][s]:.1f}" if s in figures["stages"] else "-" for s in measured))
    count = max(len(figures["round_totals_ms"]) for figures in results.values())
    rounds = table("total by round, s", "configuration", *(f"round {k + 1}" for k in range(count)))
    for name, figures in results.items():
        rounds.add_row(name, *(f"{ms / 1000:.1f}" for ms in figures["round_totals_ms"]))
    by_pair = table("ratios (below 1: faster or smaller)", "a / b", "UNet step", "total", "peak RSS", "total by round")
    for pair, figures in relative.items():
        headline = (figures["unet_step"], figures["total"], figures["peak_rss"])
        by_round = " ".join(f"{x:.2f}" for x in figures["total_by_round"])
        by_pair.add_row(pair, *(f"{value:.2f}" for value in headline), by_round)
    return [summary, stages, rounds, *([by_pair] if relative else [])]


@reports_errors
def bench_command(
    clip: Path = typer.Argument(..., help="The sound clip every configuration draws from.", show_default=False),
    engines: list[str] = typer.Option(
        ...,
        "--engines",
        show_default=False,
        help="Engine bundle folder, measured by --backends; or NAME=DIR (repeatable): configuration NAME on bundle DIR, "
        "NAME being [BACKEND-]RECIPE[-LABEL], RECIPE default, fast or turbo (one step, guidance 1), BACKEND "
        "onnxruntime where left out: e.g. turbo=DIR, torch-turbo=DIR, turbo-small=DIR2.",
    ),
    fast_engines: Path | None = typer.Option(
        None,
        "--fast-engines",
        show_default=False,
        help="A fast bundle (export --fast): measure default (the plain --engines' recipe), fast and torch-fast.",
    ),
    backends: str = typer.Option(
        "onnxruntime,torch", "--backends", help="Comma-separated backends on --engines, each in its own process."
    ),
    device: str = typer.Option(
        "cpu",
        "--device",
        **choice(DEVICES),
        help="cpu, cuda, tensorrt or openvino for onnxruntime; torch then runs on cuda or cpu.",
    ),
    steps: int | None = option(BenchOptions, "steps", "--steps", show_default=False),
    repeats: int = option(BenchOptions, "repeats", "--repeats"),
    rounds: int = option(BenchOptions, "rounds", "--rounds"),
    scheduler: str | None = option(
        BenchOptions, "scheduler", "--scheduler", show_default=False, **choice(SCHEDULER_NAMES)
    ),
    edit: bool = option(BenchOptions, "edit", "--edit"),
    regions: bool = option(BenchOptions, "regions", "--regions"),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the figures to this JSON file.", show_default=False
    ),
) -> None:
    """Measure per-stage and end-to-end latency and peak memory of backends or recipes on one clip."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from runtime.atomic import write_atomically
    from runtime.bundle import read_manifest

    settings = BenchOptions(
        steps=steps, repeats=repeats, rounds=rounds, scheduler=scheduler, edit=edit, regions=regions
    )
    settings.check()
    names = check_backends([b.strip() for b in backends.split(",") if b.strip()])
    plain, named = engines_given(engines)
    if plain is None and (fast_engines is not None or not named):
        raise ConfigError(
            "--engines: no plain bundle folder given; --fast-engines measures default on it, and without NAME=DIR "
            "--backends do",
            hint="--engines DIR (the plain bundle) beside --fast-engines FAST or --engines NAME=DIR",
        )
    configs, pairs = bench_configs(plain, fast_engines, names, device, settings, named)
    manifests = {config.bundle: read_manifest(config.bundle) for config in configs}
    manifest = manifests[configs[0].bundle]  # the plain bundle's, else the first named one's: the title, the JSON's
    if not clip.is_file():
        raise ConfigError(f"{clip}: clip not found")
    for backend, on in dict.fromkeys((config.backend, config.device) for config in configs):
        backend_ready(backend, on)  # a backend that cannot start here is one line before any worker runs
    console = Console(stderr=True, highlight=False, markup=False)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("bench", total=rounds * len(configs))
        order = [config.name for config in configs]

        def progress(name: str, round_: int) -> None:
            bar.update(task, completed=round_ * len(configs) + order.index(name),
                       description=f"{name}, round {round_ + 1} of {rounds}: warm-up + {repeats} measured")  # fmt: skip

        results = run_rounds(configs, clip, repeats, rounds, progress)
    relative = ratios(results, pairs)
    title = f"{configs[0].bundle}: {manifest.precision}, {manifest.width}x{manifest.height}, {device}"
    shown = Console(markup=False)  # paths shown as they are
    for table in bench_tables(title, results, relative):
        shown.print(table)
    if json_out:
        report = {
            "configs": results,
            "ratios": relative,
            "bundles": {config.name: str(config.bundle) for config in configs},
            "repeats": repeats,
            "rounds": rounds,
            "device": device,
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
