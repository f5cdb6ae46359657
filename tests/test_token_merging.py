"""Token merging at export (export.token_merging, ``export --token-merging``): on the tiny UNet the merged graph
computes what tomesd's own patch of the diffusers UNet computes (``apply_patch(ratio, use_rand=False)``, the reference
implementation of ToMe for Stable Diffusion), in every self-attention at the highest resolution and nowhere else,
for a batch of two; an int8 bundle exported with it passes the export's validation against the unmerged PyTorch
UNet and says so in its manifest; what it cannot do is one line naming the option."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.attention import fuse_attention
from export.token_merging import merge_tokens
from runtime.errors import ConfigError
from runtime.pipeline import GenerationOptions, Pipeline
from tests.support import export_tiny, relative_error

TIMESTEP = 500.0


def merged_graph(tiny_bundle, ratio: float) -> tuple[onnx.ModelProto, int]:
    """The tiny bundle's fp32 UNet with its attention fused and ``ratio`` of the tokens merged."""
    model, _ = fuse_attention(onnx.load(str(tiny_bundle / "unet.onnx")))
    sample = next(i for i in model.graph.input if i.name == "sample")
    h, w = (d.dim_value for d in sample.type.tensor_type.shape.dim[2:])
    return model, merge_tokens(model, ratio, (h, w))


def unet_inputs(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    return {
        "sample": rng.standard_normal(shapes["sample"]).astype(np.float32),
        "timestep": np.array([TIMESTEP], np.float32),
        "encoder_hidden_states": rng.standard_normal(shapes["encoder_hidden_states"]).astype(np.float32),
    }


def torch_unet(tiny_models, feeds: dict[str, np.ndarray], ratio: float | None) -> np.ndarray:
    """diffusers' UNet on ``feeds``, patched by tomesd at ``ratio`` (None: as it is)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "sd" / "unet").eval()
    if ratio is not None:
        import tomesd

        tomesd.apply_patch(unet, ratio=ratio, use_rand=False)
    with torch.no_grad():
        out = unet(torch.from_numpy(feeds["sample"]), torch.tensor(TIMESTEP),
                   torch.from_numpy(feeds["encoder_hidden_states"])).sample  # fmt: skip
    return out.numpy()


@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.3])
def test_the_merged_graph_is_tomesds_patched_unet(tiny_bundle, tiny_models, ratio):
    pytest.importorskip("tomesd", reason="tomesd (the ToMe reference) is not installed: .ci/setup installs it")
    model, merged = merged_graph(tiny_bundle, ratio)
    config = json.loads((tiny_models / "sd" / "unet" / "config.json").read_text())
    highest = [config["down_block_types"][0], config["up_block_types"][-1]]
    assert all(kind.startswith("CrossAttn") for kind in highest)
    per_block = config["layers_per_block"]
    assert merged == per_block + (per_block + 1)  # the first down block's attentions and the last up block's
    feeds = unet_inputs(model)
    assert len(feeds["sample"]) == 2  # the tiny bundle's UNet takes guidance's batch: each row is matched alone
    options = ort.SessionOptions()
    options.log_severity_level = 3
    engine = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (output,) = engine.run(None, feeds)
    reference = torch_unet(tiny_models, feeds, ratio)
    assert relative_error(output, reference) < 1e-5
    assert relative_error(output, torch_unet(tiny_models, feeds, None)) > 1e-2  # merging changed the output


def test_an_int8_bundle_with_token_merging_passes_validation_and_records_it(tiny_models, clips, tmp_path):
    bundle = export_tiny(tiny_models, tmp_path / "merged", precision="int8", token_merging=0.5)
    manifest = json.loads((bundle / "manifest.json").read_text())
    parity = manifest["engines"]["unet"]["parity"]
    assert "tokens merged at 0.5 (ToMe) in its 3 self-attentions at 8x8" in parity["sample"]
    assert all(error["max_rel"] <= parity["tolerance"] == 0.1 for error in parity["outputs"])
    graph = onnx.load(str(bundle / "unet.onnx"), load_external_data=False)
    assert sum(node.name.endswith("/tome/unmerged") for node in graph.graph.node) == 3
    picture = Pipeline.open(bundle).generate(clips[0], GenerationOptions(steps=2, seed=1))[0]
    assert np.asarray(picture).std() > 0


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(precision="int8", token_merging=0.0), "--token-merging is 0; it must be above 0 and at most 0.75"),
        (dict(precision="int8", token_merging=0.8), "--token-merging is 0.8; it must be above 0 and at most 0.75"),
        (dict(precision="int8", token_merging=float("nan")), "--token-merging is nan"),
        (
            dict(token_merging=0.5),
            "--token-merging is for int8 bundles of one UNet batch; this export is --precision fp32",
        ),
        (dict(precision="int8", token_merging=0.5, unet_batch="1,2"), "--unet-batch 1,2"),
        (dict(precision="int8", token_merging=0.5, height=72), "--token-merging: the latent is 9x8"),
    ],
)
def test_what_token_merging_cannot_do_is_one_line_before_any_work(tiny_models, tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        export_tiny(tiny_models, tmp_path / "refused", **settings)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "refused").exists()
