"""make-random writes the official file formats, and its sd15 architecture has the real SD 1.5 sizes."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from audiotoken.random_models import ARCHITECTURES, build_stable_diffusion, write_clip_tokenizer
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
    assert sorted(state) == sorted([
        "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
        "fga.un_models.0.embed.weight", "fga.un_models.0.embed.bias",
        "fga.un_models.0.feature_reduce.weight", "fga.un_models.0.feature_reduce.bias",
        "fga.pp_models.0.embed_X.weight", "fga.pp_models.0.embed_X.bias",
        "fga.pp_models.0.embed_Y.weight", "fga.pp_models.0.embed_Y.bias",
        "fga.reduce_potentials.0.weight",
    ])
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
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"]) == (0.00085, 0.012, "scaled_linear")
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
    assert [p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")] == []  # no staging left
