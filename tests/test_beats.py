"""BEATs: checkpoint layout and shapes from docs/method.md#beats, loading variants, and the forward pass against an
independent float64 re-derivation of its formulas (explicit per-head loops, math.log buckets)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audiotoken.beats import ITER3_CONFIG, BEATs, fold_weight_norm, relative_position_buckets
from audiotoken.random_models import ARCHITECTURES, beats_checkpoint
from runtime.errors import CheckpointError

TINY = ARCHITECTURES["tiny"].beats

# docs/method.md#the-checkpoint: the iter3 state_dict (i = layer), without the predictor head
SPEC_SHAPES = {
    "patch_embedding.weight": (512, 1, 16, 16),
    "layer_norm.weight": (512,),
    "layer_norm.bias": (512,),
    "post_extract_proj.weight": (768, 512),
    "post_extract_proj.bias": (768,),
    "encoder.pos_conv.0.weight_g": (1, 1, 128),
    "encoder.pos_conv.0.weight_v": (768, 48, 128),
    "encoder.pos_conv.0.bias": (768,),
    "encoder.layer_norm.weight": (768,),
    "encoder.layer_norm.bias": (768,),
}
for i in range(12):
    p = f"encoder.layers.{i}."
    for proj in ("q", "k", "v", "out"):
        SPEC_SHAPES[f"{p}self_attn.{proj}_proj.weight"] = (768, 768)
        SPEC_SHAPES[f"{p}self_attn.{proj}_proj.bias"] = (768,)
    SPEC_SHAPES |= {
        f"{p}self_attn.grep_linear.weight": (8, 64),
        f"{p}self_attn.grep_linear.bias": (8,),
        f"{p}self_attn.grep_a": (1, 12, 1, 1),
        f"{p}self_attn.relative_attention_bias.weight": (320, 12),
        f"{p}self_attn_layer_norm.weight": (768,),
        f"{p}self_attn_layer_norm.bias": (768,),
        f"{p}fc1.weight": (3072, 768),
        f"{p}fc1.bias": (3072,),
        f"{p}fc2.weight": (768, 3072),
        f"{p}fc2.bias": (768,),
        f"{p}final_layer_norm.weight": (768,),
        f"{p}final_layer_norm.bias": (768,),
    }


def test_iter3_layout_matches_the_spec_key_for_key():
    with torch.device("meta"):
        model = BEATs(ITER3_CONFIG)
    state = model.to_checkpoint()["model"]
    assert {k: tuple(v.shape) for k, v in state.items()} == SPEC_SHAPES
    aliases = 11 * 320 * 12  # layers 1-11 repeat layer 0's relative-position table
    assert sum(v.numel() for v in state.values()) - aliases == 90_311_792  # docs/method.md#the-checkpoint, no head
    # folding weight norm leaves the 128 magnitudes (weight_g) out of the module's own parameters
    assert sum(p.numel() for p in model.parameters()) == 90_311_792 - 128


def test_iter3_numbers():
    with torch.device("meta"):
        model = BEATs(ITER3_CONFIG)
    assert model.encoder.layers[0].alpha == pytest.approx(2.213363839, abs=1e-9)  # (2 * 12) ** 0.25
    assert model.feature_dim == 2304
    assert model.encoder.layers[0].self_attn.head_dim == 64


@pytest.mark.parametrize(("rel", "bucket"), [(0, 0), (-1, 1), (1, 161), (-80, 80), (80, 240), (495, 303), (-495, 143)])
def test_relative_position_bucket_examples_from_the_spec(rel, bucket):
    table = relative_position_buckets(496, 320, 800)  # [query i, key j], rel = j - i
    i = max(0, -rel)
    assert table[i, i + rel].item() == bucket


def test_weight_norm_fold_equals_torch_weight_norm_dim2():
    torch.manual_seed(0)
    conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(32, 32, 16, groups=4), dim=2)
    with torch.no_grad():
        conv.weight_g.uniform_(0.5, 2.0)
    conv(torch.zeros(1, 32, 20))  # the hook recomputes .weight from g and v
    assert torch.allclose(fold_weight_norm(conv.weight_g, conv.weight_v), conv.weight, atol=1e-6)


def spec_reference_features(checkpoint: dict, fbank: torch.Tensor) -> torch.Tensor:
    """Layers 4, 8, 12 concatenated, [N, 3C], for one fbank [T, 128], re-derived in float64 from
    docs/method.md#the-forward-pass."""
    cfg = checkpoint["cfg"]
    w = {k: v.double() for k, v in checkpoint["model"].items()}
    p, heads, n_layers = cfg["input_patch_size"], cfg["encoder_attention_heads"], cfg["encoder_layers"]
    alpha = (2 * n_layers) ** 0.25
    fbank = fbank.double()
    t = fbank.shape[0] // p
    patches = (
        fbank[: t * p].reshape(t, p, 128 // p, p).permute(0, 2, 1, 3).reshape(t * (128 // p), p * p)
    )  # token t*8+f
    x = patches @ w["patch_embedding.weight"].reshape(cfg["embed_dim"], -1).T
    x = F.layer_norm(x, x.shape[-1:], w["layer_norm.weight"], w["layer_norm.bias"], 1e-5)
    x = x @ w["post_extract_proj.weight"].T + w["post_extract_proj.bias"]
    n, c = x.shape
    g, v = w["encoder.pos_conv.0.weight_g"], w["encoder.pos_conv.0.weight_v"]
    kernel = torch.stack([g[0, 0, k] * v[:, :, k] / v[:, :, k].norm() for k in range(v.shape[2])], dim=2)
    conv = F.conv1d(
        x.T[None], kernel, w["encoder.pos_conv.0.bias"], padding=cfg["conv_pos"] // 2, groups=cfg["conv_pos_groups"]
    )
    x = x + F.gelu(conv[0, :, :n].T)
    x = F.layer_norm(x, (c,), w["encoder.layer_norm.weight"], w["encoder.layer_norm.bias"], 1e-5)

    def bucket(rel: int) -> int:
        a = abs(rel)
        return (160 if rel > 0 else 0) + (
            a if a < 80 else min(159, 80 + int(math.log(a / 80) / math.log(800 / 80) * 80))
        )

    table = w["encoder.layers.0.self_attn.relative_attention_bias.weight"]  # [320, H]
    buckets = torch.tensor([[bucket(j - i) for j in range(n)] for i in range(n)])
    rel_bias = table[buckets]  # [N, N, H]
    d = c // heads
    out = []
    for layer in range(n_layers):
        pre = f"encoder.layers.{layer}."
        q = x @ w[pre + "self_attn.q_proj.weight"].T + w[pre + "self_attn.q_proj.bias"]
        k = x @ w[pre + "self_attn.k_proj.weight"].T + w[pre + "self_attn.k_proj.bias"]
        val = x @ w[pre + "self_attn.v_proj.weight"].T + w[pre + "self_attn.v_proj.bias"]
        head_out = []
        for h in range(heads):
            qh, kh, vh = (m[:, h * d : (h + 1) * d] for m in (q, k, val))
            gl = torch.sigmoid(
                (qh @ w[pre + "self_attn.grep_linear.weight"].T + w[pre + "self_attn.grep_linear.bias"])
                .reshape(n, 2, 4)
                .sum(-1)
            )
            gate = gl[:, 0] * (gl[:, 1] * w[pre + "self_attn.grep_a"][0, h, 0, 0] - 1) + 2
            logits = qh @ kh.T / math.sqrt(d) + gate[:, None] * rel_bias[:, :, h]
            head_out.append(torch.softmax(logits, dim=-1) @ vh)
        attn = torch.cat(head_out, dim=1) @ w[pre + "self_attn.out_proj.weight"].T + w[pre + "self_attn.out_proj.bias"]
        x = F.layer_norm(
            alpha * x + attn, (c,), w[pre + "self_attn_layer_norm.weight"], w[pre + "self_attn_layer_norm.bias"], 1e-5
        )
        ffn = F.gelu(x @ w[pre + "fc1.weight"].T + w[pre + "fc1.bias"]) @ w[pre + "fc2.weight"].T + w[pre + "fc2.bias"]
        x = F.layer_norm(
            alpha * x + ffn, (c,), w[pre + "final_layer_norm.weight"], w[pre + "final_layer_norm.bias"], 1e-5
        )
        if layer + 1 in (4, 8, 12):
            out.append(x)
    return torch.cat(out, dim=1)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    checkpoint = beats_checkpoint(TINY)
    path = tmp_path_factory.mktemp("beats") / "beats.pt"
    torch.save(checkpoint, path)
    return path, checkpoint


def test_forward_matches_the_spec_reference(tiny_checkpoint):
    path, checkpoint = tiny_checkpoint
    model = BEATs.from_checkpoint(path)
    torch.manual_seed(2)
    fbank = torch.randn(2, 500, 128)  # 31 time patches, 4 trailing frames dropped
    features = model(fbank)
    assert features.shape == (2, 31 * 8, 3 * TINY.encoder_embed_dim)
    for b in range(2):
        reference = spec_reference_features(checkpoint, fbank[b])
        assert torch.allclose(features[b].double(), reference, atol=2e-4), (
            (features[b].double() - reference).abs().max()
        )


def test_ten_seconds_give_496_tokens(tiny_checkpoint):
    model = BEATs.from_checkpoint(tiny_checkpoint[0])
    assert model(torch.randn(1, 998, 128)).shape == (1, 496, 96)  # 62 time patches x 8 mel patches


def test_aliased_relative_bias_keys_are_optional(tiny_checkpoint, tmp_path):
    path, checkpoint = tiny_checkpoint
    fbank = torch.randn(1, 160, 128)
    reference = BEATs.from_checkpoint(path)(fbank)
    trimmed = {k: v for k, v in checkpoint["model"].items() if "relative_attention_bias" not in k or ".layers.0." in k}
    assert len(trimmed) == len(checkpoint["model"]) - 11
    torch.save({"cfg": checkpoint["cfg"], "model": trimmed}, tmp_path / "trimmed.pt")
    assert torch.equal(BEATs.from_checkpoint(tmp_path / "trimmed.pt")(fbank), reference)


def test_an_alias_that_differs_is_refused(tiny_checkpoint, tmp_path):
    _, checkpoint = tiny_checkpoint
    model = dict(checkpoint["model"])
    model["encoder.layers.5.self_attn.relative_attention_bias.weight"] = (
        model["encoder.layers.5.self_attn.relative_attention_bias.weight"] + 1
    )
    torch.save({"cfg": checkpoint["cfg"], "model": model}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt.*layers\.5.*differs"):
        BEATs.from_checkpoint(tmp_path / "bad.pt")


def test_new_style_weight_norm_keys_load(tiny_checkpoint, tmp_path):
    path, checkpoint = tiny_checkpoint
    model = dict(checkpoint["model"])
    model["encoder.pos_conv.0.parametrizations.weight.original0"] = model.pop("encoder.pos_conv.0.weight_g")
    model["encoder.pos_conv.0.parametrizations.weight.original1"] = model.pop("encoder.pos_conv.0.weight_v")
    torch.save({"cfg": checkpoint["cfg"], "model": model}, tmp_path / "new.pt")
    fbank = torch.randn(1, 160, 128)
    assert torch.equal(BEATs.from_checkpoint(tmp_path / "new.pt")(fbank), BEATs.from_checkpoint(path)(fbank))


def test_the_checkpoint_cfg_is_obeyed(tiny_checkpoint, tmp_path):
    path, checkpoint = tiny_checkpoint
    torch.save({"cfg": {**checkpoint["cfg"], "deep_norm": False}, "model": checkpoint["model"]}, tmp_path / "plain.pt")
    plain = BEATs.from_checkpoint(tmp_path / "plain.pt")
    assert plain.encoder.layers[0].alpha == 1.0
    fbank = torch.randn(1, 160, 128)
    assert not torch.allclose(plain(fbank), BEATs.from_checkpoint(path)(fbank), atol=1e-3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"model": {}}, r"expected a BEATs checkpoint dict with 'cfg' and 'model'"),
        ([1, 2, 3], r"expected a BEATs checkpoint dict"),
        ("missing-key", r"does not match the BEATs layout \(missing: encoder\.layers\.0\.fc1\.bias"),
        ("six-layers", r"encoder_layers is 6"),
    ],
)
def test_bad_checkpoints_name_the_file_and_the_problem(tiny_checkpoint, tmp_path, content, message):
    _, checkpoint = tiny_checkpoint
    if content == "missing-key":
        content = {
            "cfg": checkpoint["cfg"],
            "model": {k: v for k, v in checkpoint["model"].items() if k != "encoder.layers.0.fc1.bias"},
        }
    elif content == "six-layers":
        content = {"cfg": {**checkpoint["cfg"], "encoder_layers": 6}, "model": checkpoint["model"]}
    torch.save(content, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=message) as info:
        BEATs.from_checkpoint(tmp_path / "bad.pt")
    assert "bad.pt" in str(info.value)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: BEATs checkpoint not found"):
        BEATs.from_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pt: not a readable torch checkpoint"):
        BEATs.from_checkpoint(tmp_path / "text.pt")
