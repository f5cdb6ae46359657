"""BEATs, the frozen audio encoder of AudioToken, built from a user's official checkpoint.

Data flow: normalised fbank [B, T, 128] (``audiotoken.fbank``) -> 16x16 patches -> 12 post-LN DeepNorm
transformer layers with a gated relative-position bias -> the hidden states after layers 4, 8 and 12,
concatenated to [B, N, 3 * 768] (docs/method.md#the-features-the-embedder-reads), which the embedder pools into
one token.

The module follows docs/method.md#beats and keeps the official ``state_dict`` key names, so
``BEATs.from_checkpoint(path)`` reads the upstream ``{cfg, model}`` file directly:
- the architecture comes from the checkpoint's ``cfg`` (never from defaults; ``deep_norm`` matters);
- the positional convolution's weight norm (``weight_g``/``weight_v``, or the newer parametrization keys)
  is folded into a plain grouped Conv1d at load time (norm per kernel tap, fairseq ``dim=2``);
- the relative-position table is one shared tensor: layer 0's key is read, the aliased copies of layers
  1-11 are checked equal when present and tolerated when absent;
- a fine-tuned checkpoint's ``predictor`` head is ignored (AudioToken never uses it).
Only what inference needs is implemented: no padding mask (the runtime always feeds 10 s), no dropout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from audiotoken.checkpoints import load_strict, read_torch_file
from runtime.errors import CheckpointError

# AudioToken reads the hidden state after these 1-based layers (0-based 3, 7, 11) and concatenates them.
FEATURE_LAYERS = (4, 8, 12)


@dataclass(frozen=True)
class BEATsConfig:
    """The architecture fields of upstream ``BEATsConfig`` that shape the forward pass
    (docs/method.md#the-checkpoint).

    Defaults are the upstream class defaults; real checkpoints override them through their ``cfg``.
    Training-only fields (dropouts, layerdrop, gradient decay) are accepted and ignored.
    """

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False

    @classmethod
    def from_dict(cls, cfg: dict, source: str = "<cfg>") -> BEATsConfig:
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in cfg.items() if k in known})
        if config.input_patch_size <= 0:
            raise CheckpointError(
                f"{source}: cfg.input_patch_size is {config.input_patch_size}; BEATs needs a positive patch size (16)"
            )
        if config.encoder_layers < max(FEATURE_LAYERS):
            raise CheckpointError(
                f"{source}: cfg.encoder_layers is {config.encoder_layers}; AudioToken reads layers {FEATURE_LAYERS}, so it needs >= 12"
            )
        if config.activation_fn != "gelu" or config.layer_norm_first:
            raise CheckpointError(
                f"{source}: unsupported BEATs variant (activation_fn={config.activation_fn!r}, layer_norm_first={config.layer_norm_first});"
                " AudioToken's BEATs iter3 checkpoints use gelu and post-LN"
            )
        return config

    def to_dict(self) -> dict:
        return asdict(self)


# BEATs iter3 / iter3+ (the AudioToken checkpoint `BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt`),
# docs/method.md#the-checkpoint.
ITER3_CONFIG = BEATsConfig(
    deep_norm=True,
    relative_position_embedding=True,
    max_distance=800,
    gru_rel_pos=True,
)


def relative_position_buckets(n_tokens: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket index [N, N] of the bidirectional log-spaced relative position j - i (docs/method.md#the-forward-pass).

    Half the buckets are for keys after the query; within a half, distances below half of it are exact,
    the rest log-spaced up to ``max_distance``. Computed once, offline, so the graph holds no ``log(0)``.
    """
    half = num_buckets // 2  # 160 for iter3
    max_exact = half // 2  # 80
    position = torch.arange(n_tokens)
    relative = position[None, :] - position[:, None]  # [N, N]  key - query
    bucket = (relative > 0).long() * half
    distance = relative.abs()
    # float32 arithmetic as in the reference; clamp keeps log() away from 0 where the exact branch wins anyway
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + log_ratio * (half - max_exact)).long().clamp(max=half - 1)
    return bucket + torch.where(distance < max_exact, distance, large)  # [N, N]


class GatedRelativeAttention(nn.Module):
    """Multi-head self-attention with BEATs' gated relative-position bias (docs/method.md#the-forward-pass)."""

    def __init__(self, dim: int, heads: int, gated: bool):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gated = gated
        if gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        b, n, dim = x.shape  # [B, N, C]
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, H, N, d]
        k = self.k_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, H, N, d]
        v = self.v_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, H, N, d]
        bias = None
        if position_bias is not None:  # [H, N, N], shared by every layer, ungated
            bias = position_bias[None]  # [1, H, N, N]
            if self.gated:
                # the gate reads the unscaled projected query (bias included)
                g = torch.sigmoid(self.grep_linear(q).view(b, self.heads, n, 2, 4).sum(-1))  # [B, H, N, 2]
                gate = g[..., :1] * (g[..., 1:] * self.grep_a - 1.0) + 2.0  # [B, H, N, 1]
                bias = gate * bias  # [B, H, N, N]
        # standard softmax(q.k / sqrt(d) + bias); the official max-subtract x32 trick only guards fp16
        # (docs/method.md#quirks, Q13)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, H, N, d]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, dim))  # [B, N, C]


class EncoderLayer(nn.Module):
    """One post-LN transformer layer; DeepNorm scales the residual branch by ``alpha``
    (docs/method.md#the-forward-pass, step 4)."""

    def __init__(self, config: BEATsConfig, alpha: float):
        super().__init__()
        dim = config.encoder_embed_dim
        self.self_attn = GatedRelativeAttention(dim, config.encoder_attention_heads, config.gru_rel_pos)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=1e-5)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-5)
        self.alpha = alpha

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn_layer_norm(self.alpha * x + self.self_attn(x, position_bias))  # [B, N, C]
        hidden = F.gelu(self.fc1(x).float()).type_as(x)  # [B, N, F]  exact erf GELU, in fp32
        return self.final_layer_norm(self.alpha * x + self.fc2(hidden))  # [B, N, C]


class Encoder(nn.Module):
    """Convolutional position embedding, the pre-stack LayerNorm and the transformer layers."""

    def __init__(self, config: BEATsConfig):
        super().__init__()
        dim = config.encoder_embed_dim
        # weight norm is folded at load time, so this is a plain grouped conv ("pos_conv.0" keeps the key names)
        self.pos_conv = nn.Sequential(
            nn.Conv1d(dim, dim, config.conv_pos, padding=config.conv_pos // 2, groups=config.conv_pos_groups)
        )
        self.layer_norm = nn.LayerNorm(dim, eps=1e-5)
        alpha = (2.0 * config.encoder_layers) ** 0.25 if config.deep_norm else 1.0  # 2.2134 for 12 layers
        self.layers = nn.ModuleList(EncoderLayer(config, alpha) for _ in range(config.encoder_layers))
        self.relative_attention_bias = (
            nn.Embedding(config.num_buckets, config.encoder_attention_heads)
            if config.relative_position_embedding
            else None
        )
        self.config = config

    def position_bias(self, n_tokens: int) -> torch.Tensor | None:
        """The raw relative bias [H, N, N] that every layer gates on its own (docs/method.md#quirks, Q14)."""
        if self.relative_attention_bias is None:
            return None
        buckets = relative_position_buckets(n_tokens, self.config.num_buckets, self.config.max_distance)  # [N, N]
        buckets = buckets.to(self.relative_attention_bias.weight.device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)  # [H, N, N]

    def forward(self, x: torch.Tensor, capture: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n = x.shape[1]
        conv = self.pos_conv(x.transpose(1, 2))[:, :, :n]  # [B, C, N]  even kernel gives N+1 steps: drop the last
        x = self.layer_norm(x + F.gelu(conv).transpose(1, 2))  # [B, N, C]
        bias = self.position_bias(n)  # [H, N, N] or None
        captured = []
        for index, layer in enumerate(self.layers, start=1):
            x = layer(x, bias)  # [B, N, C]
            if index in capture:
                captured.append(x)
        return x, captured


class BEATs(nn.Module):
    """The BEATs encoder (no padding mask, no predictor head), with the official parameter names."""

    def __init__(self, config: BEATsConfig):
        super().__init__()
        self.config = config
        p = config.input_patch_size
        self.patch_embedding = nn.Conv2d(1, config.embed_dim, kernel_size=p, stride=p, bias=config.conv_bias)
        self.layer_norm = nn.LayerNorm(config.embed_dim, eps=1e-5)
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim)
            if config.embed_dim != config.encoder_embed_dim
            else None
        )
        self.encoder = Encoder(config)

    @property
    def feature_dim(self) -> int:
        """Width of ``features``: the three captured layers side by side (2304 for iter3)."""
        return len(FEATURE_LAYERS) * self.config.encoder_embed_dim

    def patches(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank [B, T, 128] -> projected patch tokens [B, N, C], token index t * 8 + f."""
        x = self.patch_embedding(fbank[:, None])  # [B, 512, T // 16, 8]  trailing frames dropped
        x = x.flatten(2).transpose(1, 2)  # [B, N, 512]
        x = self.layer_norm(x)  # [B, N, 512]
        return x if self.post_extract_proj is None else self.post_extract_proj(x)  # [B, N, C]

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank [B, T, 128] -> AudioToken features [B, N, 3 * C] (layers 4, 8, 12 concatenated)."""
        _, captured = self.encoder(self.patches(fbank), capture=FEATURE_LAYERS)
        return torch.cat(captured, dim=-1)  # [B, N, 3C]

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> BEATs:
        """Load an official BEATs ``.pt`` (a dict with ``cfg`` and ``model``) in eval mode."""
        checkpoint = read_checkpoint(path)
        config = BEATsConfig.from_dict(checkpoint["cfg"], source=str(path))
        model = cls(config)
        load_strict(model, official_to_module_state(checkpoint["model"], config, str(path)), str(path))
        return model.eval().requires_grad_(False)

    def to_checkpoint(self) -> dict:
        """The official ``{cfg, model}`` layout (weight norm unfolded to ``weight_g``/``weight_v``, aliased bias keys)."""
        return {"cfg": self.config.to_dict(), "model": module_to_official_state(self.state_dict(), self.config)}


def read_checkpoint(path: str | Path) -> dict:
    """Read a BEATs ``.pt`` and check it is the upstream ``{cfg, model}`` dict."""
    checkpoint = read_torch_file(
        path, "BEATs checkpoint", hint="pass the path of BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"
    )
    if not isinstance(checkpoint, dict) or "cfg" not in checkpoint or "model" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: expected a BEATs checkpoint dict with 'cfg' and 'model', got {found}")
    return checkpoint


POS_CONV = "encoder.pos_conv.0"
REL_BIAS_KEY = "encoder.layers.{}.self_attn.relative_attention_bias.weight"


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """W[:, :, k] = g[0, 0, k] * V[:, :, k] / ||V[:, :, k]|| with the norm over dims 0 and 1 (weight norm, dim=2)."""
    norm = v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()  # [1, 1, K]
    return g * v / norm  # [C, C / groups, K]


def official_to_module_state(state: dict, config: BEATsConfig, source: str) -> dict:
    """Map an official BEATs ``state_dict`` onto this module: fold weight norm, take the shared bias table."""
    state = {k: v for k, v in state.items() if not k.startswith("predictor.")}
    out = {}
    g = state.pop(f"{POS_CONV}.weight_g", state.pop(f"{POS_CONV}.parametrizations.weight.original0", None))
    v = state.pop(f"{POS_CONV}.weight_v", state.pop(f"{POS_CONV}.parametrizations.weight.original1", None))
    if (g is None) != (v is None):
        raise CheckpointError(f"{source}: weight norm of {POS_CONV} has only one of its two tensors (g, v)")
    if g is not None:
        out[f"{POS_CONV}.weight"] = fold_weight_norm(g.float(), v.float())
    if config.relative_position_embedding:
        table = state.pop(REL_BIAS_KEY.format(0), None)
        if table is None:
            raise CheckpointError(f"{source}: missing {REL_BIAS_KEY.format(0)}, the relative-position table")
        for i in range(1, config.encoder_layers):
            alias = state.pop(REL_BIAS_KEY.format(i), None)
            if alias is not None and not torch.equal(alias, table):
                raise CheckpointError(
                    f"{source}: {REL_BIAS_KEY.format(i)} differs from layer 0's; BEATs shares one table"
                )
        out["encoder.relative_attention_bias.weight"] = table
    out.update(state)
    return out


def module_to_official_state(state: dict, config: BEATsConfig) -> dict:
    """Inverse of ``official_to_module_state``: the key layout ``torch.save(beats.state_dict())`` gives upstream."""
    state = dict(state)
    weight = state.pop(f"{POS_CONV}.weight")  # [C, C / groups, K]
    norm = weight.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()  # [1, 1, K]
    out = {f"{POS_CONV}.weight_g": norm, f"{POS_CONV}.weight_v": weight.clone()}
    table = state.pop("encoder.relative_attention_bias.weight", None)
    out.update(state)
    if table is not None:
        for i in range(config.encoder_layers):
            out[REL_BIAS_KEY.format(i)] = table.clone()
    return out
