"""``audiotoken-rt info``: a bundle's manifest and this machine's devices, then every file checked against its sha256.

What a user asks of a bundle first: its recipe (the scheduler, steps, guidance, eta and timestep spacing ``generate``
uses unless told otherwise: ``runtime.sampling.Sampling.describe``; and whether ``--fast`` works), the LoRA fused into
its UNet and its distillation preset, its decoder, the UNet batches it holds (2 for guidance above 1, 1 for guidance
1) and its token slots (sounds one ``compose`` prompt holds), whose UNet it is (a small one given in place of Stable
Diffusion's, ``export --unet``); then each engine's size, parity with PyTorch, tensors and TensorRT plans. Every
table reads at 80 columns (long values fold, nothing is cut off).

Place: reads what ``export`` wrote (``runtime.bundle``) and what the runtime would run it with
(``runtime.commands.doctor.machine_facts``); torch-free, so it runs on a runtime-only install. ``--verify full`` (the
default) hashes every file, ignoring the per-user record of files already checked that opening a bundle trusts
(``--verify quick``: the check ``generate`` and the others make); docs/bundles.md says what either proves.
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.bundle import UNET_SOURCE, VERIFY_MODES
from runtime.commands.cli import choice, reports_errors
from runtime.contract import GUIDED_BATCH, SINGLE_BATCH

DECODERS = {"sd-vae": "Stable Diffusion's autoencoder", "taesd": "the tiny autoencoder, TAESD"}
BATCH_USES = {SINGLE_BATCH: "guidance 1", GUIDED_BATCH: "guidance above 1"}


def recipe_rows(manifest) -> list[tuple[str, str]]:
    """What the bundle draws with and holds: the recipe, the fused LoRA and its distillation preset, the decoder, the
    UNet batches, the token slots."""
    recipe = manifest.recipe
    lora, preset = recipe.lora, recipe.distillation()
    fast = "; --fast works" if recipe.fast_preset() else ""
    slots = manifest.token_slots
    return [
        ("recipe", f"{recipe.sampling.describe()} (the defaults){fast}"),
        ("fused LoRA", f"{lora.source}, scale {lora.scale:g}, sha256 {lora.sha256[:16]}" if lora else "none"),
        ("preset", f"{preset.name}: {preset.lora_name}, {preset.sampling.describe()}" if preset else "none"),
        ("decoder", f"{recipe.decoder} ({DECODERS.get(recipe.decoder, 'unknown')})"),
        ("UNet batches", ", ".join(f"{b} ({BATCH_USES.get(b, '?')})" for b in recipe.unet_batches)),
        (
            "token slots",
            f"{slots}: a compose prompt holds <1>..<{slots}>" if slots > 1 else "1: one sound per prompt",
        ),
    ]


def unet_row(manifest) -> tuple[str, str]:
    """Whose UNet the bundle holds: Stable Diffusion's own, or one given in its place (``export --unet``), with the
    sha256 of its weights."""
    source = next((s for s in manifest.sources if s.role == UNET_SOURCE), None)
    if source is None:
        return ("UNet", "Stable Diffusion's own")
    weights = [digest for name, digest in source.files.items() if name != "config.json"]
    return ("UNet", f"{source.ref} in place of Stable Diffusion's" + (f", sha256 {weights[0][:16]}" if weights else ""))


def manifest_tables(manifest) -> list:
    """The manifest as rich tables that read at 80 columns: the bundle's facts and recipe, then one row per engine
    (sizes and parity), its tensors, and its TensorRT plans where it has some."""
    from rich.table import Table

    facts = Table(title="bundle", show_header=False, show_edge=False)
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    rows = [
        ("id", f"{manifest.bundle_id} (schema {manifest.schema_version})"),
        ("image", f"{manifest.width}x{manifest.height}, VAE scaling {manifest.vae_scaling_factor}"),
        ("text", f"D={manifest.token_dim}, {manifest.placeholder} = id {manifest.placeholder_id}"),
        ("template", repr(manifest.template)),
        *recipe_rows(manifest),
        unet_row(manifest),
        ("scheduler config", f"{manifest.scheduler_config.get('_class_name', '?')}, {manifest.prediction_type}"),
        ("precision", f"{manifest.precision}, ONNX opset {manifest.opset}"),
        *((f"source {s.role}", f"{s.ref} ({len(s.files)} files)") for s in manifest.sources),
        ("created with", ", ".join(f"{k} {v}" for k, v in manifest.created_with.items())),
    ]
    for row in rows:
        facts.add_row(*row)

    engines = Table(title="engines", show_edge=False)
    for column in ("engine", "precision", "MB", "max rel err (tolerance)", "variants"):
        engines.add_column(column, justify="right" if column == "MB" else "left", overflow="fold")
    tensors = Table(title="engine tensors", show_edge=False)
    for column in ("engine.tensor", "in/out", "dtype", "shape"):
        tensors.add_column(column, overflow="fold")
    plans = Table(title="TensorRT plans", show_edge=False)
    for column in ("engine", "GPU", "TensorRT"):
        plans.add_column(column, overflow="fold")
    for name, engine in manifest.engines.items():
        size = (engine.file.size + (engine.data.size if engine.data else 0)) / 1e6
        worst = max(e.max_rel for e in engine.parity.outputs)
        verdict = "ok" if engine.parity.ok else "OVER"
        variants = ", ".join(f"{Path(v.file.path).name} ({', '.join(v.devices)})" for v in engine.variants) or "-"
        engines.add_row(
            name, engine.precision, f"{size:.1f}", f"{worst:.1e} {verdict} ({engine.parity.tolerance:g})", variants
        )
        for direction, specs in (("in", engine.inputs), ("out", engine.outputs)):
            for spec in specs:
                tensors.add_row(f"{name}.{spec.name}", direction, spec.dtype, str(list(spec.shape)))
        for plan in engine.plans:
            plans.add_row(name, plan.gpu, plan.tensorrt_version)
    return [facts, engines, tensors, *([plans] if plans.row_count else [])]


@reports_errors
def info_command(
    bundle: Path = typer.Argument(..., help="Engine bundle folder (from `audiotoken-rt export`).", show_default=False),
    verify_mode: str = typer.Option(
        "full",
        "--verify",
        help="full: hash every file; quick: trust a file whose size and mtime are those of its last check "
        "(what opening a bundle does; AUDIOTOKEN_RT_VERIFY=full makes every command hash everything).",
        **choice(VERIFY_MODES),
    ),
) -> None:
    """Print a bundle's manifest and this machine's devices, then check every file's sha256 (non-zero exit on a mismatch)."""
    from rich.console import Console
    from rich.table import Table

    from runtime.bundle import read_manifest, verify
    from runtime.commands.doctor import machine_facts

    console = Console(markup=False)  # paths and prompts shown as they are
    manifest = read_manifest(bundle)
    for table in manifest_tables(manifest):
        console.print(table)
    device = Table(title="this machine", show_header=False, show_edge=False)
    for fact in machine_facts():
        device.add_row(fact.name, fact.detail)
    console.print(device)
    count = len(manifest.all_files())
    with Console(stderr=True).status(f"checking the sha256 of {count} files ({verify_mode})"):
        verify(bundle, trust_unchanged=verify_mode == "quick")
    trusted = "" if verify_mode == "full" else " (files unchanged since their last check were not hashed again)"
    console.print(f"all {count} files match their sha256{trusted}", highlight=False)
