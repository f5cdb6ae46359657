"""The AudioToken embedder: BEATs features [B, N, 3C] -> one token [B, D] in CLIP's text-embedding space.

Data flow: ``BEATs`` features -> two linear layers with GELU (per patch) -> factor-graph attention pooling over
the N time x frequency patches -> the token that replaces ``<*>`` in the prompt (docs/method.md#the-embedder).

The parameter names are those of the official ``embedder_learned_embeds.bin`` (``fc1``, ``fc2``,
``fga.un_models.0``, ``fga.pp_models.0``, ``fga.reduce_potentials.0``); the kernel-1 Conv1d's of the official
FGA module are kept as Conv1d so the file loads as is. D comes from ``fc2.weight``, never from a model name.

Official quirk Q1 (docs/method.md#quirks): the official unary branch applies ``F.dropout(p=0.5)`` even in eval mode,
so the official inference is stochastic. Here the dropout is off by default (identity, which is the expectation of
the official output since the branch is linear after it); ``stochastic=True`` restores the official behaviour for the
PyTorch reference only. Exported engines are always deterministic.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from audiotoken.checkpoints import load_strict, read_torch_file
from runtime.errors import CheckpointError

OFFICIAL_DROPOUT = 0.5  # F.dropout's default p, always active in the official unary branch


class UnaryPotential(nn.Module):
    """u_n = w_r . drop(relu(W_e h_n + b_e)) + b_r, one score per patch."""

    def __init__(self, dim: int):
        super().__init__()
        self.embed = nn.Conv1d(dim, dim, 1)
        self.feature_reduce = nn.Conv1d(dim, 1, 1)

    def forward(self, h: torch.Tensor, stochastic: bool) -> torch.Tensor:
        x = F.relu(self.embed(h))  # [B, D, N]
        if stochastic:
            x = F.dropout(x, p=OFFICIAL_DROPOUT, training=True)
        return self.feature_reduce(x)[:, 0]  # [B, N]


class SelfPotential(nn.Module):
    """s_n = mean_m <x_n, y_m> with x, y two L2-normalised projections: a patch's mean cosine to all patches."""

    def __init__(self, dim: int):
        super().__init__()
        self.embed_X = nn.Conv1d(dim, dim, 1)
        self.embed_Y = nn.Conv1d(dim, dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.embed_X(h), dim=1)  # [B, D, N]
        y = F.normalize(self.embed_Y(h), dim=1)  # [B, D, N]
        # mean_m <x_n, y_m> = <x_n, mean_m y_m>: O(N D) instead of the [N, N] similarity matrix
        return (x * y.mean(dim=2, keepdim=True)).sum(dim=1)  # [B, N]


class FactorGraphAttention(nn.Module):
    """FGA reduced to AudioToken's single utility: softmax over patches of c0 * unary + c1 * self."""

    def __init__(self, dim: int):
        super().__init__()
        self.un_models = nn.ModuleList([UnaryPotential(dim)])
        self.pp_models = nn.ModuleDict({"0": SelfPotential(dim)})
        self.reduce_potentials = nn.ModuleList([nn.Conv1d(2, 1, 1, bias=False)])

    def forward(self, h: torch.Tensor, stochastic: bool = False) -> torch.Tensor:
        """h [B, D, N] -> attention weights [B, N] over the N patches."""
        potentials = torch.stack([self.un_models[0](h, stochastic), self.pp_models["0"](h)], dim=1)  # [B, 2, N]
        return torch.softmax(self.reduce_potentials[0](potentials)[:, 0], dim=-1)  # [B, N]


class Embedder(nn.Module):
    """fc1 -> GELU -> fc2 per patch, then attention pooling: [B, N, D_in] -> [B, D]."""

    def __init__(self, in_dim: int, token_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, in_dim)
        self.fc2 = nn.Linear(in_dim, token_dim)
        self.fga = FactorGraphAttention(token_dim)
        self.stochastic = False

    @property
    def token_dim(self) -> int:
        return self.fc2.out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.fc2(F.gelu(self.fc1(features)))  # [B, N, D]
        weights = self.fga(h.transpose(1, 2), stochastic=self.stochastic)  # [B, N]
        return torch.einsum("bn,bnd->bd", weights, h)  # [B, D]

    @classmethod
    def from_file(cls, path: str | Path, stochastic: bool = False) -> Embedder:
        """Load ``embedder_learned_embeds.bin`` (a bare state_dict, official key names); D from ``fc2.weight``."""
        state = read_torch_file(path, "embedder weights", hint="pass the path of embedder_learned_embeds.bin")
        if not isinstance(state, dict) or "fc2.weight" not in state or "fc1.weight" not in state:
            found = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(
                f"{path}: expected an AudioToken embedder state_dict with fc1/fc2/fga keys, got {found}"
            )
        token_dim, in_dim = state["fc2.weight"].shape  # [D, 3C]
        model = cls(in_dim, token_dim)
        load_strict(model, state, str(path))
        model.stochastic = stochastic
        return model.eval().requires_grad_(False)
