"""``audiotoken-rt info``: a bundle's manifest and this machine's devices, then every file checked against its sha256.

Place: reads what ``export`` wrote (``runtime.bundle``) and what the runtime would run it with
(``runtime.doctor.machine_facts``); torch-free, so it runs on a runtime-only install. ``--verify full`` (the
default) hashes every file, ignoring the per-user record of files already checked that opening a bundle trusts
(``--verify quick``: the check ``generate`` and the others make); docs/bundles.md says what either proves.
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.bundle import VERIFY_MODES
from runtime.command import choice, reports_errors


def manifest_tables(manifest) -> list:
    """The manifest as two rich tables: the bundle's facts, then one row per engine."""
    from rich.table import Table

    facts = Table(title="bundle", show_header=False, show_edge=False)
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    rows = [
        ("id", f"{manifest.bundle_id} (schema {manifest.schema_version})"),
        ("image", f"{manifest.width}x{manifest.height}, VAE scaling {manifest.vae_scaling_factor}"),
        (
            "text",
            f"D={manifest.token_dim}, {manifest.placeholder} = id {manifest.placeholder_id}, template {manifest.template!r}",
        ),
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
        shapes = (
            ", ".join(f"{t.name} {list(t.shape)}" for t in engine.inputs)
            + " -> "
            + ", ".join(f"{t.name} {list(t.shape)}" for t in engine.outputs)
        )
        size = (engine.file.size + (engine.data.size if engine.data else 0)) / 1e6
        worst = max(e.max_rel for e in engine.parity.outputs)
        verdict = "ok" if engine.parity.ok else "OVER"
        plans = ", ".join(f"{p.gpu} (TensorRT {p.tensorrt_version})" for p in engine.plans) or "-"
        engines.add_row(
            name,
            engine.precision,
            shapes,
            f"{size:.1f}",
            f"{worst:.1e} {verdict} (<= {engine.parity.tolerance:g})",
            plans,
        )
    return [facts, engines]


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
    from runtime.doctor import machine_facts

    console = Console()
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
