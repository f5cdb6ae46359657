"""``audiotoken-rt export``: the command line of ``export.builder.export_bundle``.

Its options are ``export.options.ExportOptions``' fields (defaults and help from there); importing this module
needs no torch, so the app lists the command on a runtime-only install, and running it there says in one line
which extra to install.
"""

from __future__ import annotations

from pathlib import Path

from export.options import ExportOptions
from runtime.bundle import PRECISIONS
from runtime.commands.cli import choice, option, options_from, reports_errors
from runtime.errors import needs_pytorch_side
from runtime.sampling import PRESETS


@reports_errors
def export_command(
    sd: str = option(ExportOptions, "sd", "--sd", show_default=False),
    beats: Path = option(ExportOptions, "beats", "--beats", show_default=False),
    embedder: Path = option(ExportOptions, "embedder", "--embedder", show_default=False),
    out: Path = option(ExportOptions, "out", "--out", show_default=False),
    height: int | None = option(ExportOptions, "height", "--height", show_default=False),
    width: int | None = option(ExportOptions, "width", "--width", show_default=False),
    precision: str = option(ExportOptions, "precision", "--precision", **choice(PRECISIONS)),
    template: str = option(ExportOptions, "template", "--template"),
    fast: bool = option(ExportOptions, "fast", "--fast"),
    preset: str | None = option(
        ExportOptions, "preset", "--preset", show_default=False, **{**choice(PRESETS), "metavar": "NAME"}
    ),  # the help lists the names: all of them in the metavar would not fit 80 columns
    lora: str | None = option(ExportOptions, "lora", "--lora", show_default=False),
    lcm_lora: str | None = option(ExportOptions, "lcm_lora", "--lcm-lora", show_default=False),
    lora_scale: float | None = option(ExportOptions, "lora_scale", "--lora-scale", show_default=False),
    tiny_vae: str | None = option(ExportOptions, "tiny_vae", "--tiny-vae", show_default=False),
    unet: str | None = option(ExportOptions, "unet", "--unet", show_default=False),
    unet_batch: str | None = option(ExportOptions, "unet_batch", "--unet-batch", show_default=False),
    token_merging: float | None = option(ExportOptions, "token_merging", "--token-merging", show_default=False),
    sample_clip: Path | None = option(ExportOptions, "sample_clip", "--sample-clip", show_default=False),
    tensorrt: bool = option(ExportOptions, "tensorrt", "--tensorrt"),
    force: bool = option(ExportOptions, "force", "--force"),
    update: bool = option(ExportOptions, "update", "--update"),
    allow_parity_error: bool = option(ExportOptions, "allow_parity_error", "--allow-parity-error"),
) -> None:
    """Export the five networks to an engine bundle (ONNX, validated against PyTorch; optional TensorRT plans)."""
    from rich.console import Console

    try:
        from audiotoken.stable_diffusion import quiet_libraries
        from export.builder import export_bundle
    except ImportError as exc:
        raise needs_pytorch_side("audiotoken-rt export", exc) from exc
    quiet_libraries()
    options = options_from(ExportOptions, locals())
    console = Console(stderr=True)
    result = export_bundle(options, console)
    m = result.manifest
    verb = "kept" if result.reused else "wrote"
    console.print(
        f"{verb} {result.folder}: {len(m.engines)} engines, {m.precision}, {m.width}x{m.height}, D={m.token_dim}, "
        f"id {m.bundle_id}; `audiotoken-rt info {result.folder}` shows it",
        highlight=False,
    )
