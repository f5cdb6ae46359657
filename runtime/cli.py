"""The ``audiotoken-rt`` command line (typer).

The CLI lives in the torch-free runtime; commands that need the PyTorch side (``make-random``, ``export``,
``train``, ``--backend torch``) import it lazily, inside the command, so a runtime-only install still starts.
Every ``AudioTokenError`` becomes one ``error: ...`` line (plus ``hint: ...``) and a non-zero exit, no traceback.
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from runtime.errors import AudioTokenError, ConfigError

app = typer.Typer(
    name="audiotoken-rt",
    help="Turn a sound into a picture: AudioToken on Stable Diffusion, with ONNX Runtime and TensorRT engines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Turn a sound into a picture: AudioToken on Stable Diffusion, with ONNX Runtime and TensorRT engines."""


def fail(exc: AudioTokenError, code: int = 1) -> None:
    """Print an error (and its hint) on one line each, on stderr, and exit non-zero."""
    typer.echo(f"error: {exc}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    raise typer.Exit(code)


def reports_errors(command):
    """Decorator: turn library errors into the CLI's one-line form."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AudioTokenError as exc:
            fail(exc)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


def quiet_heavy_libraries() -> None:
    """Silence transformers' and diffusers' info chatter and their weight-loading bars; our own bars stay."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


# options shared by export and train
SdSource = Annotated[str, typer.Option(help="Stable Diffusion: a hub id (CompVis/stable-diffusion-v1-4) or a local diffusers folder.")]
BeatsCheckpoint = Annotated[Path, typer.Option(help="BEATs checkpoint (BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt).")]


class Arch(str, Enum):
    tiny = "tiny"
    sd15 = "sd15"


@app.command("make-random")
@reports_errors
def make_random_command(
    out: Annotated[Path, typer.Argument(help="Folder to write sd/, beats.pt and embedder.bin into.")],
    arch: Annotated[Arch, typer.Option(help="tiny: seconds, a few MB; sd15: the real SD 1.5 + BEATs iter3 sizes (~4.5 GB).")] = Arch.tiny,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write random-weight models in the official file formats (for tests and benchmarks; nothing is downloaded)."""
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"building random {arch.value} models"):
        quiet_heavy_libraries()
        from audiotoken.random_models import make_random

        folder = make_random(out, arch=arch.value, seed=seed, force=force)
    console.print(f"wrote {folder}/sd (diffusers Stable Diffusion), {folder}/beats.pt, {folder}/embedder.bin")


@app.command("generate")
def generate_command(
    clips: Annotated[list[Path], typer.Argument(help="Sound clips (wav, flac, ogg, mp3). Put a leading '--' before names that start with '-'.")],
    engines: Annotated[Path, typer.Option("--engines", help="Engine bundle folder (from `audiotoken-rt export`).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the pictures: OUT/<clip stem>.png (-<k> for several).")],
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 25,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 7.5,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the initial noise (random if unset; recorded in the PNG).")] = None,
    scheduler: Annotated[str, typer.Option(help="dpm++2m, pndm (the official inference, 50 steps), ddim, euler, euler-a.")] = "dpm++2m",
    prompt: Annotated[Optional[str], typer.Option(help="Prompt template holding <*> once (default: the bundle's).")] = None,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt (the unconditional branch).")] = "",
    num_images: Annotated[int, typer.Option(help="Pictures per clip (seeds SEED, SEED+1, ...).")] = 1,
    backend: Annotated[str, typer.Option(help="onnxruntime, tensorrt, or torch (the PyTorch reference networks).")] = "onnxruntime",
    device: Annotated[str, typer.Option(help="For onnxruntime: cpu, cuda, tensorrt, or openvino (Intel CPUs; bf16 where the CPU has it).")] = "cpu",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing pictures.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print a stage timing table.")] = False,
) -> None:
    """Draw a picture for each sound clip with a bundle's engines; a bad clip is reported and skipped."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from runtime.picture import save_png
    from runtime.pipeline import GenerationOptions, Pipeline

    console = Console(stderr=True)
    options = GenerationOptions(prompt=prompt, negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                scheduler=scheduler, seed=seed, num_images=num_images)
    try:
        options.check()
        if backend == "torch":
            quiet_heavy_libraries()
        with console.status(f"opening {engines} ({backend}, {device})"):
            pipeline = Pipeline.open(engines, backend=backend, device=device)
    except AudioTokenError as exc:
        fail(exc)

    failures: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        overall = bar.add_task("clips", total=len(clips))
        for clip in clips:
            targets = [out / f"{clip.stem}.png"] if num_images == 1 else [out / f"{clip.stem}-{k}.png" for k in range(num_images)]
            task = bar.add_task(f"{clip.name}: start", total=1)

            def report(stage: str, done: int, total: int, task=task, clip=clip) -> None:
                bar.update(task, description=f"{clip.name}: {stage}", completed=done, total=total)

            try:
                for target in targets:
                    if target.exists() and not overwrite:
                        raise ConfigError(f"{target}: already exists", hint="pass --overwrite to replace it")
                result = pipeline.draw(clip, options, progress=report)
                for k, (picture, target) in enumerate(zip(result.pictures, targets)):
                    save_png(picture, target, {**result.metadata(k, clip.name), "bundle": pipeline.bundle.manifest.bundle_id}, overwrite=overwrite)
                bar.update(task, description=f"{clip.name}: done -> {targets[0].name}" + (f" (+{num_images - 1})" if num_images > 1 else ""),
                           completed=1, total=1)
                if verbose:
                    console.print(timing_table(clip.name, result.timings))
            except AudioTokenError as exc:
                failures.append(str(exc))  # the message names the clip
                bar.update(task, description=f"{clip.name}: failed")
                console.print(f"error: {exc}", highlight=False, soft_wrap=True)
            bar.advance(overall)
    if failures:
        console.print(f"{len(failures)} of {len(clips)} clip(s) failed:", highlight=False, soft_wrap=True)
        for line in failures:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def timing_table(title: str, timings):
    """A rich table of stage wall times (ms), with the mean UNet step."""
    from rich.table import Table

    table = Table(title=f"{title}: stage timings", show_edge=False)
    table.add_column("stage")
    table.add_column("ms", justify="right")
    for stage, ms in timings.stages.items():
        table.add_row(stage, f"{ms:.1f}")
    if timings.unet_calls:
        table.add_row("unet (per call)", f"{timings.stages['unet'] / timings.unet_calls:.1f}")
    return table


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@app.command("export")
@reports_errors
def export_command(
    sd: SdSource,
    beats: BeatsCheckpoint,
    embedder: Annotated[Path, typer.Option(help="AudioToken embedder weights (embedder_learned_embeds.bin).")],
    out: Annotated[Path, typer.Option(help="Bundle folder to write, e.g. engines/sd14.")],
    height: Annotated[Optional[int], typer.Option(help="Image height (default: the UNet's sample_size x 8).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Image width (default: the UNet's sample_size x 8).")] = None,
    precision: Annotated[Precision, typer.Option(help="fp16: for GPUs (the fbank, LayerNorm and softmax islands stay fp32). int8: for CPUs (the UNet's linear layers and convolutions in int8).")] = Precision.fp32,
    template: Annotated[Optional[str], typer.Option(help="Prompt template holding <*> once (default 'a photo of <*>, 4k, high resolution').")] = None,
    sample_clip: Annotated[Optional[Path], typer.Option(help="A real clip to validate audio_encoder on (default: seeded noise).")] = None,
    tensorrt: Annotated[bool, typer.Option("--tensorrt", help="Also build fp16 TensorRT plans for this GPU (needs the trt extra).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if OUT is up to date, or holds another bundle.")] = False,
    allow_parity_error: Annotated[bool, typer.Option("--allow-parity-error", help="Keep an engine that differs from PyTorch beyond tolerance (recorded in the manifest).")] = False,
) -> None:
    """Export the five networks to an engine bundle (ONNX, validated against PyTorch; optional TensorRT plans)."""
    from rich.console import Console

    console = Console(stderr=True)
    quiet_heavy_libraries()
    from export.builder import ExportOptions, export_bundle

    options = ExportOptions(sd=sd, beats=beats, embedder=embedder, out=out, height=height, width=width,
                            precision=precision.value, template=template, sample_clip=sample_clip, tensorrt=tensorrt,
                            force=force, allow_parity_error=allow_parity_error)
    result = export_bundle(options, console)
    m = result.manifest
    verb = "kept" if result.reused else "wrote"
    console.print(f"{verb} {result.folder}: {len(m.engines)} engines, {m.precision}, {m.width}x{m.height}, D={m.token_dim}, "
                  f"id {m.bundle_id}; `audiotoken-rt info {result.folder}` shows it", highlight=False)


def manifest_tables(manifest) -> list:
    """The manifest as two rich tables: the bundle's facts, then one row per engine."""
    from rich.table import Table

    facts = Table(title="bundle", show_header=False, show_edge=False)
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    rows = [
        ("id", f"{manifest.bundle_id} (schema {manifest.schema_version})"),
        ("image", f"{manifest.width}x{manifest.height}, VAE scaling {manifest.vae_scaling_factor}"),
        ("text", f"D={manifest.token_dim}, {manifest.placeholder} = id {manifest.placeholder_id}, template {manifest.template!r}"),
        ("scheduler", f"{manifest.scheduler_config.get('_class_name', '?')}, {manifest.prediction_type}"),
        ("precision", f"{manifest.precision}, ONNX opset {manifest.opset}"),
        *((f"source {s.role}", f"{s.ref} ({len(s.files)} files)") for s in manifest.sources),
        ("created with", ", ".join(f"{k} {v}" for k, v in manifest.created_with.items())),
    ]
    for row in rows:
        facts.add_row(*row)

    engines = Table(title="engines", show_edge=False)
    for column in ("engine", "precision", "inputs -> outputs", "MB", "max rel err", "plans"):
        engines.add_column(column, no_wrap=column == "engine")
    for name, engine in manifest.engines.items():
        shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in engine.inputs) + " -> " + ", ".join(f"{t.name} {list(t.shape)}" for t in engine.outputs)
        size = (engine.file.size + (engine.data.size if engine.data else 0)) / 1e6
        worst = max(e.max_rel for e in engine.parity.outputs)
        verdict = "ok" if engine.parity.ok else "OVER"
        plans = ", ".join(f"{p.gpu} (TensorRT {p.tensorrt_version})" for p in engine.plans) or "-"
        engines.add_row(name, engine.precision, shapes, f"{size:.1f}", f"{worst:.1e} {verdict} (<= {engine.parity.tolerance:g})", plans)
    return [facts, engines]


@app.command("info")
@reports_errors
def info_command(
    bundle: Annotated[Path, typer.Argument(help="Engine bundle folder (from `audiotoken-rt export`).")],
) -> None:
    """Print a bundle's manifest and this machine's devices, then check every file's sha256 (non-zero exit on a mismatch)."""
    from rich.console import Console
    from rich.table import Table

    from runtime.backends import describe_device
    from runtime.bundle import read_manifest, verify

    console = Console()
    manifest = read_manifest(bundle)
    for table in manifest_tables(manifest):
        console.print(table)
    device = Table(title="this machine", show_header=False, show_edge=False)
    for key, value in describe_device().items():
        device.add_row(key, value)
    console.print(device)
    verify(bundle)
    console.print(f"all {len(manifest.all_files())} files match their sha256", highlight=False)


@app.command("bench")
@reports_errors
def bench_command(
    clip: Annotated[Path, typer.Argument(help="The sound clip every backend draws from.")],
    engines: Annotated[Path, typer.Option("--engines", help="Engine bundle folder.")],
    backends: Annotated[str, typer.Option(help="Comma-separated backends, each measured in its own process.")] = "onnxruntime,torch",
    device: Annotated[str, typer.Option(help="cpu, cuda (or tensorrt, openvino for onnxruntime; torch then runs on cuda, cpu).")] = "cpu",
    steps: Annotated[int, typer.Option(help="Denoising steps per measured picture.")] = 10,
    repeats: Annotated[int, typer.Option(help="Measured pictures per backend and round (after one warm-up).")] = 1,
    rounds: Annotated[int, typer.Option(help="Rounds of alternating backends; the best round of each counts.")] = 2,
    scheduler: Annotated[str, typer.Option(help="Scheduler of the measured runs.")] = "dpm++2m",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures to this JSON file.")] = None,
) -> None:
    """Measure per-stage and end-to-end latency and peak memory of each backend on one bundle and clip."""
    import json

    from rich.console import Console
    from rich.table import Table

    from runtime.atomic import write_atomically
    from runtime.bench import STAGES, check_backends, machine, ratios, run_rounds
    from runtime.bundle import read_manifest

    names = check_backends([b.strip() for b in backends.split(",") if b.strip()])
    manifest = read_manifest(engines)
    if not clip.is_file():
        raise ConfigError(f"{clip}: clip not found")
    console = Console(stderr=True)
    with console.status("bench") as status:
        results = run_rounds(engines, names, device, clip, steps, repeats, scheduler, rounds,
                             lambda name, r: status.update(f"bench {name} (round {r + 1} of {rounds}): warm-up + {repeats} x {steps} steps"))
    relative = ratios(results)
    table = Table(title=f"{engines}: {manifest.precision}, {manifest.width}x{manifest.height}, {steps} steps, {device}", show_edge=False)
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
    Console().print(table)
    if json_out:
        report = {"backends": results, "ratios_vs_torch": relative, "steps": steps, "repeats": repeats, "rounds": rounds, "device": device,
                  "scheduler": scheduler, "bundle": manifest.bundle_id, "precision": manifest.precision, "height": manifest.height, "width": manifest.width,
                  "machine": machine()}
        json_out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(json_out, (json.dumps(report, indent=2) + "\n").encode())
        console.print(f"wrote {json_out}")


class MixedPrecision(str, Enum):
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


@app.command("train")
@reports_errors
def train_command(
    sd: SdSource,
    beats: BeatsCheckpoint,
    data: Annotated[Path, typer.Option(help="Dataset: audio/<name>.<wav|flac|ogg|mp3>, images/<name>.<png|jpg> or video/<name>.mp4, labels.csv (name,label,split).")],
    out: Annotated[Path, typer.Option(help="Output folder: checkpoint-<step>/, embedder.bin, metrics.csv.")],
    embedder: Annotated[Optional[Path], typer.Option(help="Fine-tune these embedder weights instead of a seeded random init.")] = None,
    exclude: Annotated[Optional[list[Path]], typer.Option(help="Text file of clip names (or VGGSound ids) to leave out, one per line; repeatable.")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps in all (a resumed run continues up to it).")] = 60_000,
    batch_size: Annotated[int, typer.Option(help="Clips per micro-batch and process.")] = 4,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimiser step.")] = 1,
    lr: Annotated[float, typer.Option(help="Base learning rate (AdamW, constant).")] = 1e-5,
    scale_lr: Annotated[bool, typer.Option("--scale-lr/--no-scale-lr", help="Multiply the lr by grad-accum x batch x processes (official default); the effective lr is printed.")] = True,
    lambda_l1: Annotated[float, typer.Option(help="Weight of mean |token| (L1 regularisation).")] = 0.01,
    cosine_loss: Annotated[bool, typer.Option("--cosine-loss/--no-cosine-loss", help="Add the label cosine loss (CLIP embedding of the label as target).")] = False,
    lambda_cosine: Annotated[float, typer.Option(help="Weight of the cosine loss.")] = 0.01,
    audio_seconds: Annotated[int, typer.Option(help="Length L of the random audio window (1-9 s; start in 0 .. 10 - L - 1).")] = 5,
    resolution: Annotated[str, typer.Option(help="Training picture size WIDTHxHEIGHT (the official 512x320).")] = "512x320",
    template: Annotated[str, typer.Option(help="Training prompt holding <*> once.")] = "a photo of <*>",
    mixed_precision: Annotated[MixedPrecision, typer.Option(help="no, fp16 or bf16 for the frozen UNet, VAE and text encoder (BEATs stays fp32).")] = MixedPrecision.no,
    seed: Annotated[int, typer.Option(help="Seed of the init, the data order and every noise draw.")] = 0,
    resume: Annotated[Optional[str], typer.Option(help="A checkpoint folder, or 'latest' in OUT (a new run when OUT has none).")] = None,
    save_every: Annotated[int, typer.Option(help="Optimiser steps between checkpoints (0: only the final one).")] = 1000,
    cache_features: Annotated[bool, typer.Option("--cache-features/--no-cache-features", help="Keep BEATs features per clip and window start in OUT/feature-cache.")] = False,
    workers: Annotated[int, typer.Option(help="Data loader worker processes (0: load in the training process).")] = 4,
) -> None:
    """Train the embedder on paired sounds and pictures (frozen Stable Diffusion and BEATs); several GPUs with
    `accelerate launch -m runtime.cli train ...`. OUT/embedder.bin goes straight into `audiotoken-rt export`."""
    from rich.console import Console

    console = Console(stderr=True)
    quiet_heavy_libraries()
    from audiotoken.training import TrainConfig, parse_resolution, train

    config = TrainConfig(
        sd=sd, beats=beats, data=data, out=out, embedder=embedder, exclude=tuple(exclude or ()), steps=steps,
        batch_size=batch_size, grad_accum=grad_accum, lr=lr, scale_lr=scale_lr, lambda_l1=lambda_l1,
        cosine_loss=cosine_loss, lambda_cosine=lambda_cosine, audio_seconds=audio_seconds,
        resolution=parse_resolution(resolution), template=template, mixed_precision=mixed_precision.value, seed=seed,
        resume=resume, save_every=save_every, cache_features=cache_features, workers=workers,
    )
    train(config, console=console)


def main() -> None:
    """Entry point for ``python -m runtime.cli``."""
    sys.exit(app())


if __name__ == "__main__":
    main()
