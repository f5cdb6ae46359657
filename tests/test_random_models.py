"""make-random writes the official file formats (LCM-LoRA and TAESD included), and its sd15 architecture has the real
SD 1.5, LCM-LoRA and TAESD sizes."""

from __future__ import annotations

import json
import re

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from audiotoken.random_models import (
    ARCHITECTURES,
    build_stable_diffusion,
    build_taesd,
    kohya_name,
    lora_targets,
    write_clip_tokenizer,
)
from audiotoken_rt.cli import app


def test_beats_checkpoint_has_the_upstream_layout(tiny_models):
    checkpoint = torch.load(tiny_models / "beats.pt", weights_only=True)
    assert set(checkpoint) == {"cfg", "model", "label_dict"}
    cfg, model = checkpoint["cfg"], checkpoint["model"]
    assert cfg["encoder_layers"] == 12 and cfg["deep_norm"] and cfg["gru_rel_pos"] and cfg["max_distance"] == 800
    assert {"layer_wise_gradient_decay_ratio", "finetuned_model", "predictor_class"} <= set(cfg)
    assert model["encoder.pos_conv.0.weight_g"].shape == (1, 1, 16)
    aliases = [model[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] for i in range(12)]
    assert all(torch.equal(a, aliases[0]) for a in aliases)
    assert model["predictor.weight"].shape == (527, 32)


def test_embedder_file_is_a_bare_state_dict_with_official_keys(tiny_models):
    state = torch.load(tiny_models / "embedder.bin", weights_only=True)
    assert sorted(state) == sorted(
        [
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
            "fga.un_models.0.embed.weight",
            "fga.un_models.0.embed.bias",
            "fga.un_models.0.feature_reduce.weight",
            "fga.un_models.0.feature_reduce.bias",
            "fga.pp_models.0.embed_X.weight",
            "fga.pp_models.0.embed_X.bias",
            "fga.pp_models.0.embed_Y.weight",
            "fga.pp_models.0.embed_Y.bias",
            "fga.reduce_potentials.0.weight",
        ]
    )
    assert state["fc2.weight"].shape == (32, 96)


def test_sd_folder_has_the_hub_layout(tiny_models):
    sd = tiny_models / "sd"
    index = json.loads((sd / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in ("text_encoder", "tokenizer", "unet", "vae", "scheduler"):
        assert index[part][1] and (sd / part).is_dir()
    assert {"vocab.json", "merges.txt"} <= {p.name for p in (sd / "tokenizer").iterdir()}
    scheduler = json.loads((sd / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "PNDMScheduler"
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"]) == (
        0.00085,
        0.012,
        "scaled_linear",
    )
    assert scheduler["skip_prk_steps"] and scheduler["steps_offset"] == 1 and not scheduler["set_alpha_to_one"]
    assert json.loads((sd / "vae" / "config.json").read_text())["scaling_factor"] == 0.18215


def test_sd15_architecture_has_the_real_sizes(tmp_path):
    write_clip_tokenizer(tmp_path)
    with torch.device("meta"):  # shapes only: nothing is allocated
        pipe = build_stable_diffusion(ARCHITECTURES["sd15"], tmp_path)
    count = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("unet", "vae", "text_encoder")}
    assert count == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}  # SD 1.5 / CLIP ViT-L/14


def test_cli_refuses_to_overwrite_and_force_replaces(tmp_path):
    runner = CliRunner()
    (tmp_path / "keep.txt").write_text("precious")
    result = runner.invoke(app, ["make-random", str(tmp_path)])
    assert result.exit_code == 1 and "exists and is not empty" in result.output
    assert (tmp_path / "keep.txt").read_text() == "precious"
    result = runner.invoke(app, ["make-random", str(tmp_path), "--seed", "3", "--force"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "keep.txt").exists() and (tmp_path / "beats.pt").is_file()
    assert [
        p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")
    ] == []  # no staging left


# The key layout of latent-consistency/lcm-lora-sdv1-5's pytorch_lora_weights.safetensors: kohya-style names over
# diffusers module paths (diffusers' LCM-LoRA script, get_module_kohya_state_dict), one lora_down, lora_up and alpha per
# adapted layer: attention q/k/v/out, proj_in/out, feed-forward, resnet convs and time projections, down/upsamplers.
LCM_LORA_KEY = re.compile(
    r"^lora_unet_(?P<block>down_blocks_\d+|mid_block|up_blocks_\d+)_(?P<layer>"
    r"attentions_\d+_(?P<attention>proj_in|proj_out|transformer_blocks_\d+_(attn[12]_to_(q|k|v|out_0)|ff_net_0_proj|ff_net_2))"
    r"|resnets_\d+_(?P<resnet>conv1|conv2|conv_shortcut|time_emb_proj)"
    r"|(?P<sampler>downsamplers_0_conv|upsamplers_0_conv))"
    r"\.(?P<part>lora_down\.weight|lora_up\.weight|alpha)$"
)
LCM_LORA_KINDS = {
    "attn1_to_q",
    "attn1_to_k",
    "attn1_to_v",
    "attn1_to_out_0",
    "attn2_to_q",
    "attn2_to_k",
    "attn2_to_v",
    "attn2_to_out_0",
    "ff_net_0_proj",
    "ff_net_2",
    "proj_in",
    "proj_out",
    "conv1",
    "conv2",
    "conv_shortcut",
    "time_emb_proj",
    "downsamplers_0_conv",
    "upsamplers_0_conv",
}


def test_lcm_lora_has_the_real_file_layout(tiny_models):
    file = tiny_models / "lcm-lora" / "pytorch_lora_weights.safetensors"
    assert [p.name for p in file.parent.iterdir()] == [file.name]
    tensors = load_file(file)
    matches = {key: LCM_LORA_KEY.match(key) for key in tensors}
    assert [key for key, match in matches.items() if match is None] == []
    layers = {}
    for key, match in matches.items():
        layers.setdefault(key.split(".")[0], set()).add(match["part"])
    assert all(parts == {"lora_down.weight", "lora_up.weight", "alpha"} for parts in layers.values())
    kinds = {next(kind for kind in LCM_LORA_KINDS if layer.endswith("_" + kind)) for layer in layers}
    assert kinds == LCM_LORA_KINDS and len(layers) == 79
    assert {
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.alpha",
        "lora_unet_down_blocks_1_resnets_0_conv_shortcut.lora_down.weight",
        "lora_unet_up_blocks_0_upsamplers_0_conv.lora_up.weight",
    } <= set(tensors)
    assert all(t.dtype == torch.float16 for t in tensors.values())
    for layer in layers:
        down, up = tensors[f"{layer}.lora_down.weight"], tensors[f"{layer}.lora_up.weight"]
        assert tensors[f"{layer}.alpha"].shape == () and tensors[f"{layer}.alpha"].item() == 2.0
        assert down.shape[0] == up.shape[1] == 4 and down.ndim == up.ndim and up.shape[2:] in ((), (1, 1))
    conv = tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"]
    assert conv.shape == (4, 32, 3, 3)  # a 3x3 kernel: down [rank, in, kh, kw], up [out, rank, 1, 1]


def test_sd15_lcm_lora_covers_the_real_layers_at_the_real_size(tmp_path):
    """278 layers at rank 64: 67.25 M values, 134.5 MB in fp16, the size of lcm-lora-sdv1-5's file (135 MB)."""
    write_clip_tokenizer(tmp_path)
    with torch.device("meta"):
        unet = build_stable_diffusion(ARCHITECTURES["sd15"], tmp_path).unet
    layers = lora_targets(unet)
    assert all(LCM_LORA_KEY.match(kohya_name(name) + ".alpha") for name, _ in layers)
    rank = ARCHITECTURES["sd15"].lora_rank
    values = sum(rank * (layer.weight[0].numel() + layer.weight.shape[0]) for _, layer in layers)
    assert (len(layers), values, rank, ARCHITECTURES["sd15"].lora_alpha) == (278, 67_252_224, 64, 8.0)


def test_sd15_writes_the_one_step_lora_at_its_published_size():
    """sd15 writes LCM-LoRA's and Hyper-SD's one-step stand-ins only (the others would add 1.2 GB): the latter is
    LCM-LoRA's 67.25 M values in fp32, the 269 MB of Hyper-SD15-1step-lora.safetensors on the hub."""
    from audiotoken.random_models import LORA_STAND_INS
    from runtime.sampling import PRESETS

    assert ARCHITECTURES["sd15"].lora_presets == ("lcm", "hyper-1step")
    dtype = LORA_STAND_INS[PRESETS["hyper-1step"].lora].dtype
    assert 67_252_224 * dtype.itemsize == 269_008_896  # 269 MB


def test_taesd_loads_and_decodes_8x(tiny_models):
    from diffusers import AutoencoderTiny

    assert sorted(p.name for p in (tiny_models / "taesd").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    taesd = AutoencoderTiny.from_pretrained(tiny_models / "taesd").eval()
    assert taesd.config.latent_channels == 4
    with torch.no_grad():
        image = taesd.decode(torch.randn(1, 4, 5, 7)).sample  # [1, 4, h, w] -> [1, 3, 8h, 8w]
        latent = taesd.encode(torch.rand(1, 3, 40, 56) * 2 - 1).latents  # and back
    assert image.shape == (1, 3, 40, 56) and latent.shape == (1, 4, 5, 7)
    assert torch.isfinite(image).all() and image.std() > 0


def test_sd15_taesd_has_the_real_architecture():
    """The fields of madebyollin/taesd's config.json (on the hub)."""
    with torch.device("meta"):
        taesd = build_taesd(ARCHITECTURES["sd15"])
    real = {
        "act_fn": "relu",
        "decoder_block_out_channels": [64, 64, 64, 64],
        "encoder_block_out_channels": [64, 64, 64, 64],
        "force_upcast": False,
        "in_channels": 3,
        "latent_channels": 4,
        "latent_magnitude": 3,
        "latent_shift": 0.5,
        "num_decoder_blocks": [3, 3, 3, 1],
        "num_encoder_blocks": [1, 3, 3, 3],
        "out_channels": 3,
        "scaling_factor": 1.0,
        "shift_factor": 0.0,
        "upsample_fn": "nearest",
        "upsampling_scaling_factor": 2,
    }
    config = {key: list(value) if isinstance(value, tuple) else value for key, value in taesd.config.items()}
    assert {key: config[key] for key in real} == real
