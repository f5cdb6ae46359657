"""The command-line options every drawing command shares (``generate``, ``edit``, ``compose``, ``live``), declared once.

Place: each command's signature names these as its parameters' defaults (``steps: int | None = shared.STEPS``); its
``options_from`` then builds the options dataclass from them. Defaults and help come from ``GenerationOptions``'s
fields (``runtime.commands.cli.option``), which ``EditOptions`` and ``ComposeOptions`` inherit unchanged, so one
declaration serves every command. The options a command words its own way (``--out``, ``--prompt`` of ``compose``,
``--overwrite`` of ``live``) stay in that command.
"""

from __future__ import annotations

import typer

from runtime.audio import DOWNMIX_MODES
from runtime.backends import DEVICES, backend_names
from runtime.commands.cli import choice, option
from runtime.commands.jobs import SKIP_EXISTING_HELP
from runtime.pipeline import GenerationOptions
from runtime.schedulers import SCHEDULER_NAMES, TIMESTEP_SPACINGS

ENGINES = typer.Option(..., "--engines", help="Engine bundle folder (from `audiotoken-rt export`).", show_default=False)
FAST = option(GenerationOptions, "fast", "--fast")
STEPS = option(GenerationOptions, "steps", "--steps", show_default=False)
GUIDANCE = option(GenerationOptions, "guidance", "--guidance", show_default=False)
SEED = option(GenerationOptions, "seed", "--seed", show_default=False)
SCHEDULER = option(GenerationOptions, "scheduler", "--scheduler", show_default=False, **choice(SCHEDULER_NAMES))
ETA = option(GenerationOptions, "eta", "--eta", show_default=False)
SPACING = option(GenerationOptions, "timestep_spacing", "--spacing", show_default=False, **choice(TIMESTEP_SPACINGS))
PROMPT = option(GenerationOptions, "prompt", "--prompt", show_default="the bundle's")
NEGATIVE_PROMPT = option(GenerationOptions, "negative_prompt", "--negative-prompt")
NUM_IMAGES = option(GenerationOptions, "num_images", "--num-images")
START = option(GenerationOptions, "start", "--start")
DOWNMIX = option(GenerationOptions, "downmix", "--downmix", **choice(DOWNMIX_MODES))
BACKEND = typer.Option(
    "onnxruntime", "--backend", help=f"{', '.join(backend_names())} (the PyTorch reference networks)."
)
DEVICE = typer.Option(
    "cpu",
    "--device",
    **choice(DEVICES),
    help="For onnxruntime: cpu, cuda, tensorrt, or openvino (Intel CPUs; bf16 where the CPU has it).",
)
OVERWRITE = typer.Option(False, "--overwrite", help="Replace pictures that exist.")
SKIP_EXISTING = typer.Option(False, "--skip-existing", help=SKIP_EXISTING_HELP)
