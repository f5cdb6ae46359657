"""The options of ``audiotoken-rt train``: one frozen dataclass, torch-free, whose field help is the CLI's.

Place in the data flow: the command line (``audiotoken.cli``) or a Python caller fills ``TrainConfig`` ->
``audiotoken.training.train``. Kept apart from the training code so the command's help and defaults need no torch.
Defaults are the official ones (docs/method.md#training).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.contract import CLIP_SECONDS, TRAIN_TEMPLATE
from runtime.errors import ConfigError
from runtime.tokenizer import check_template

MIXED_PRECISIONS = ("no", "fp16", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``audiotoken-rt train``; defaults are the official ones (docs/method.md#training)."""

    sd: str = field(
        metadata={"help": "Stable Diffusion: a hub id (CompVis/stable-diffusion-v1-4) or a local diffusers folder."}
    )
    beats: Path = field(
        metadata={
            "help": "The BEATs checkpoint (.pt) the embedder was trained on: the official iter3+ AS2M fine-tuned cpt2."
        }
    )
    data: Path = field(
        metadata={
            "help": "Dataset: audio/<name>.<wav|flac|ogg|mp3>, images/<name>.<png|jpg> or video/<name>.mp4, labels.csv (name,label,split)."
        }
    )
    out: Path = field(metadata={"help": "Output folder: checkpoint-<step>/, embedder.bin, metrics.csv."})
    embedder: Path | None = field(
        default=None, metadata={"help": "Fine-tune these embedder weights instead of a seeded random init."}
    )
    exclude: tuple[Path, ...] = field(
        default=(),
        metadata={"help": "Text file of clip names (or VGGSound ids) to leave out, one per line; repeatable."},
    )
    steps: int = field(default=60_000, metadata={"help": "Optimiser steps in all (a resumed run continues up to it)."})
    batch_size: int = field(default=4, metadata={"help": "Clips per micro-batch and process."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimiser step."})
    lr: float = field(default=1e-5, metadata={"help": "Base learning rate (AdamW, constant)."})
    scale_lr: bool = field(
        default=True,
        metadata={
            "help": "Multiply the lr by grad-accum x batch x processes (official default); the effective lr is printed."
        },
    )
    lambda_l1: float = field(default=0.01, metadata={"help": "Weight of mean |token| (L1 regularisation)."})
    cosine_loss: bool = field(
        default=False, metadata={"help": "Add the label cosine loss (CLIP embedding of the label as target)."}
    )
    lambda_cosine: float = field(default=0.01, metadata={"help": "Weight of the cosine loss."})
    audio_seconds: int = field(
        default=5, metadata={"help": "Length L of the random audio window (1-9 s; start in 0 .. 10 - L - 1)."}
    )
    resolution: tuple[int, int] = field(
        default=(512, 320), metadata={"help": "Training picture size WIDTHxHEIGHT (the official 512x320)."}
    )
    template: str = field(default=TRAIN_TEMPLATE, metadata={"help": "Training prompt holding <*> once."})
    mixed_precision: str = field(
        default="no",
        metadata={"help": "no, fp16 or bf16 for the frozen UNet, VAE and text encoder (BEATs stays fp32)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the init, the data order and every noise draw."})
    resume: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' in OUT (a new run when OUT has none)."}
    )
    save_every: int = field(
        default=1000, metadata={"help": "Optimiser steps between checkpoints (0: only the final one)."}
    )
    cache_features: bool = field(
        default=False, metadata={"help": "Keep BEATs features per clip and window start in OUT/feature-cache."}
    )
    workers: int = field(
        default=4, metadata={"help": "Data loader worker processes (0: load in the training process)."}
    )

    def check(self) -> None:
        """Refuse impossible options before anything is loaded."""
        at_least = {"steps": 1, "batch_size": 1, "grad_accum": 1, "save_every": 0, "workers": 0}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')} is {getattr(self, name)}; it must be at least {low}")
        if not self.lr > 0:
            raise ConfigError(f"--lr is {self.lr}; it must be positive", hint="the official base lr is 1e-5")
        for name in ("lambda_l1", "lambda_cosine"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name.replace('_', '-')} is {getattr(self, name)}; it must be zero or more")
        width, height = self.resolution
        if width <= 0 or height <= 0 or width % 8 or height % 8:
            raise ConfigError(
                f"--resolution is {width}x{height}; width and height must be positive multiples of 8",
                hint="e.g. 512x320",
            )
        if not 1 <= self.audio_seconds < CLIP_SECONDS:
            raise ConfigError(
                f"--audio-seconds is {self.audio_seconds}; it must be 1 to {CLIP_SECONDS - 1} (the window start is drawn in 0 .. 10 - L - 1)"
            )
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError(
                f"--mixed-precision is {self.mixed_precision!r}; choose one of {', '.join(MIXED_PRECISIONS)}"
            )
        check_template(self.template)

    def to_json(self) -> dict:
        """Plain JSON values (paths as strings, tuples as lists)."""

        def plain(value):
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            return str(value) if isinstance(value, Path) else value

        return {name: plain(value) for name, value in asdict(self).items()}


def parse_resolution(text: str) -> tuple[int, int]:
    """``"512x320"`` -> (512, 320): width x height, each a positive multiple of 8 (the VAE's scale factor)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(
            f"resolution {text!r} is not WIDTHxHEIGHT", hint="e.g. 512x320 (the official training size)"
        ) from None
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise ConfigError(f"resolution {text!r}: width and height must be positive multiples of 8", hint="e.g. 512x320")
    return width, height
