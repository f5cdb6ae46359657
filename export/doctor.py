"""``audiotoken-rt doctor``: prove a device in one command, the first thing to run after installing (a Jetson, a
GPU box) and the first thing this project runs whenever a GPU is lent.

Place: prints ``runtime.commands.doctor.machine_facts``; checks that the backend and device can start; takes the bundle
of ``--engines``, or (the PyTorch side installed) writes tiny random models (``audiotoken.random_models``) and exports
them to a bundle (``export.builder``: fp16 for a GPU device, fp32 on the CPU; TensorRT plans for ``--backend
tensorrt``); then ``runtime.commands.doctor.check_bundle`` compares each engine and a picture with the CPU and gives a
speed figure. One line per check; the exit status is 1 when any check fails. This command lives beside the export
because building that bundle is an export; importing it needs no torch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from runtime.backends import DEVICES, GPU_DEVICES, backend_names
from runtime.commands.cli import choice, reports_errors
from runtime.errors import AudioTokenError, needs_pytorch_side

STATUS_STYLE = {"ok": "green", "FAIL": "bold red", "info": "dim", "skip": "yellow"}


def test_bundle(folder: Path, backend: str, device: str, console) -> Path:
    """Tiny random models in the official formats, exported to a bundle under ``folder``; its path."""
    try:
        from audiotoken.random_models import make_random
        from audiotoken.stable_diffusion import quiet_libraries
        from export.builder import export_bundle
        from export.options import ExportOptions
    except ImportError as exc:
        raise needs_pytorch_side("building doctor's test bundle (or pass --engines DIR)", exc) from exc

    quiet_libraries()
    with console.status("writing tiny random models"):
        models = make_random(folder / "models", arch="tiny")
    gpu = device in GPU_DEVICES or backend == "tensorrt"
    options = ExportOptions(
        sd=str(models / "sd"),
        beats=models / "beats.pt",
        embedder=models / "embedder.bin",
        out=folder / "engines",
        precision="fp16" if gpu else "fp32",
        tensorrt=backend == "tensorrt",
    )
    return export_bundle(options, console).folder


@reports_errors
def doctor_command(
    device: str = typer.Option("cpu", "--device", **choice(DEVICES), help="The device to prove."),
    backend: str = typer.Option(
        "onnxruntime", "--backend", help=f"{', '.join(backend_names())}: the backend to prove on that device."
    ),
    engines: Path | None = typer.Option(
        None,
        "--engines",
        help="Check this bundle instead of a tiny random one (needs no PyTorch).",
        show_default="a tiny random bundle, exported here (needs the PyTorch side)",
    ),
) -> None:
    """Print versions and devices, then run a bundle on DEVICE with BACKEND and check every engine, a picture and
    the speed against the CPU; one line per check, exit status 1 if any fails."""
    from rich.console import Console
    from rich.text import Text

    from runtime.bundle import Bundle
    from runtime.commands.doctor import Check, check_bundle, device_ready, machine_facts

    console = Console(highlight=False, markup=False, soft_wrap=True)  # details (paths, errors) shown as they are
    progress = Console(stderr=True)

    def show(check: Check) -> None:
        console.print(
            Text.assemble((f"{check.status:>4}", STATUS_STYLE[check.status]), f" {check.name}: {check.detail}")
        )
        if check.hint:
            console.print(f"     hint: {check.hint}")

    checks = [*machine_facts(), device_ready(backend, device)]
    for check in checks:
        show(check)
    if not checks[-1].failed:
        with tempfile.TemporaryDirectory(prefix="audiotoken-doctor-") as scratch:
            try:
                folder = engines or test_bundle(Path(scratch), backend, device, progress)
                bundle = Bundle.open(folder)
                made = "" if engines else ", tiny random models exported just now"
                found = [
                    Check(
                        "bundle",
                        "ok",
                        f"{bundle.manifest.precision}, {bundle.manifest.width}x{bundle.manifest.height}{made}",
                    )
                ]
            except AudioTokenError as exc:
                found = [Check("bundle", "FAIL", str(exc), hint=exc.hint or "")]
            with progress.status(f"running the bundle on {backend} {device} and on the reference"):
                found += check_bundle(bundle, backend, device) if not found[0].failed else []
        for check in found:
            show(check)
        checks += found
    failed = [c.name for c in checks if c.failed]
    console.print(
        f"{len(failed)} check{'s' * (len(failed) != 1)} failed: {', '.join(failed)}" if failed else "all checks passed"
    )
    if failed:
        raise typer.Exit(1)
