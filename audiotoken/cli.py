"""``audiotoken-rt train`` and ``audiotoken-rt make-random``: the command lines of the PyTorch side.

Options of ``train`` are ``audiotoken.train_config.TrainConfig``'s fields (defaults and help from there).
Importing this module needs no torch, so the app lists both commands on a runtime-only install; running
one there says in one line which extra to install.
"""

from __future__ import annotations

from pathlib import Path

import typer

from audiotoken.train_config import MIXED_PRECISIONS, TrainConfig, parse_resolution
from runtime.commands.cli import choice, default_of, option, options_from, reports_errors
from runtime.errors import needs_pytorch_side


@reports_errors
def make_random_command(
    out: Path = typer.Argument(
        ...,
        help="Folder to write sd/, beats.pt, embedder.bin, the distillation LoRAs (lcm-lora/, hyper-sd/, tcd-lora/, "
        "pcm/), taesd/ and bk-sdm-tiny/ into.",
        show_default=False,
    ),
    arch: str = typer.Option(
        "tiny", "--arch", help="tiny: seconds, a few MB; sd15: the real SD 1.5 + BEATs iter3 sizes (~4.5 GB)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    evaluation: bool = typer.Option(
        False, "--eval", help="Also write OUT/eval/: stand-ins of the evaluation models (for `evaluate --models`)."
    ),
) -> None:
    """Write random-weight models in the official file formats (for tests and benchmarks; nothing is downloaded)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    with console.status(f"building random {arch} models"):
        try:
            from audiotoken.random_models import ARCHITECTURES, lora_stand_in, make_random
            from audiotoken.stable_diffusion import quiet_libraries
        except ImportError as exc:
            raise needs_pytorch_side("audiotoken-rt make-random", exc) from exc
        quiet_libraries()
        folder = make_random(out, arch=arch, seed=seed, force=force, evaluation=evaluation)
    loras = sorted(
        {str(lora_stand_in(folder, preset).relative_to(folder).parts[0]) for preset in ARCHITECTURES[arch].lora_presets}
    )
    console.print(
        f"wrote {folder}/sd (diffusers Stable Diffusion), {folder}/beats.pt, {folder}/embedder.bin, "
        f"the distillation LoRAs in {', '.join(f'{folder}/{name}' for name in loras)} (export --lora), "
        f"{folder}/taesd (tiny autoencoder), {folder}/bk-sdm-tiny (small UNet)"
        + (f", {folder}/eval (CLIP ViT-B/32 and ViT-L/14, Wav2CLIP, FID Inception)" if evaluation else "")
    )


def resolution_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@reports_errors
def train_command(
    sd: str = option(TrainConfig, "sd", "--sd", show_default=False),
    beats: Path = option(TrainConfig, "beats", "--beats", show_default=False),
    data: Path = option(TrainConfig, "data", "--data", show_default=False),
    out: Path = option(TrainConfig, "out", "--out", show_default=False),
    embedder: Path | None = option(TrainConfig, "embedder", "--embedder", show_default=False),
    exclude: list[Path] | None = option(TrainConfig, "exclude", "--exclude", default=None, show_default=False),
    steps: int = option(TrainConfig, "steps", "--steps"),
    batch_size: int = option(TrainConfig, "batch_size", "--batch-size"),
    grad_accum: int = option(TrainConfig, "grad_accum", "--grad-accum"),
    lr: float = option(TrainConfig, "lr", "--lr"),
    scale_lr: bool = option(TrainConfig, "scale_lr", "--scale-lr/--no-scale-lr"),
    lambda_l1: float = option(TrainConfig, "lambda_l1", "--lambda-l1"),
    cosine_loss: bool = option(TrainConfig, "cosine_loss", "--cosine-loss/--no-cosine-loss"),
    lambda_cosine: float = option(TrainConfig, "lambda_cosine", "--lambda-cosine"),
    audio_seconds: int = option(TrainConfig, "audio_seconds", "--audio-seconds"),
    resolution: str = option(
        TrainConfig, "resolution", "--resolution", default=resolution_text(default_of(TrainConfig, "resolution"))
    ),
    template: str = option(TrainConfig, "template", "--template"),
    mixed_precision: str = option(TrainConfig, "mixed_precision", "--mixed-precision", **choice(MIXED_PRECISIONS)),
    seed: int = option(TrainConfig, "seed", "--seed"),
    resume: str | None = option(TrainConfig, "resume", "--resume", show_default=False),
    save_every: int = option(TrainConfig, "save_every", "--save-every"),
    cache_features: bool = option(TrainConfig, "cache_features", "--cache-features/--no-cache-features"),
    workers: int = option(TrainConfig, "workers", "--workers"),
) -> None:
    """Train the embedder on paired sounds and pictures (frozen Stable Diffusion and BEATs). Several GPUs:
    `accelerate launch -m audiotoken_rt train ...`. OUT/embedder.bin goes straight into `audiotoken-rt export`."""
    from rich.console import Console

    config = options_from(
        TrainConfig, {**locals(), "exclude": tuple(exclude or ()), "resolution": parse_resolution(resolution)}
    )
    config.check()
    try:
        from audiotoken.stable_diffusion import quiet_libraries
        from audiotoken.training import train
    except ImportError as exc:
        raise needs_pytorch_side("audiotoken-rt train", exc) from exc
    quiet_libraries()
    train(config, console=Console(stderr=True))
