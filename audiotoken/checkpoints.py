"""Reading the official checkpoint files, with errors that name the file and say what was expected.

Both AudioToken checkpoints are ``torch.save`` pickles: the BEATs ``.pt`` (a dict with ``cfg`` and ``model``)
and ``embedder_learned_embeds.bin`` (a bare ``state_dict``). They are read with ``weights_only=True``,
so a checkpoint cannot run code, and loaded strictly, so a wrong or partial file is refused up front.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from runtime.errors import CheckpointError, first_line


def read_torch_file(path: str | Path, what: str, hint: str) -> object:
    """``torch.load`` on the CPU; a missing or foreign file becomes a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found", hint=hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {first_line(exc)})", hint=hint
        ) from exc


def load_strict(module: nn.Module, state: dict, source: str) -> None:
    """``load_state_dict(strict=True)`` whose failure lists the missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = [
        f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source}: does not match the {type(module).__name__} layout ({'; '.join(problems)})")
    module.load_state_dict({k: v.float() for k, v in state.items()})
