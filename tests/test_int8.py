"""int8 convolutions (export.int8): the im2col GEMM form against ONNX Runtime's fp32 Conv on the same weights,
for the kernel, stride, padding and bias combinations of the SD UNets, and what ``quantize_convs`` leaves alone;
TAESD's calibrated int8 decoder against diffusers' fp32 one, and its calibration pictures' spectrum."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from export.int8 import quantize_convs


def conv_model(
    weight: np.ndarray, bias: np.ndarray | None, name: str = "/unet/block/conv/Conv", **attrs
) -> onnx.ModelProto:
    inputs = ["x", "w"] + (["b"] if bias is not None else [])
    inits = [numpy_helper.from_array(weight, "w")] + ([numpy_helper.from_array(bias, "b")] if bias is not None else [])
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["y"], name=name, **attrs)],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "k", "p", "q"])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(
    "c_in, c_out, size, kernel, stride, pad, bias",
    [
        (32, 48, 16, 3, 1, 1, True),  # resnet conv
        (48, 48, 16, 3, 2, 1, True),  # downsampler
        (32, 64, 8, 1, 1, 0, True),  # 1x1 shortcut / proj_in
        (16, 24, 9, 3, 2, 1, False),  # odd size, stride 2, no bias
        (8, 8, 7, 3, 1, 0, True),  # no padding
        (2, 16, 36, 12, 12, 0, True),  # a patch embedding: a kernel over ten taps wide (tap names stay apart)
    ],
)
def test_int8_conv_matches_fp32_conv(c_in, c_out, size, kernel, stride, pad, bias):
    rng = np.random.default_rng(c_in + c_out + size)
    weight = (rng.standard_normal((c_out, c_in, kernel, kernel)) / np.sqrt(c_in * kernel**2)).astype(np.float32)
    b = (rng.standard_normal(c_out) * 0.1).astype(np.float32) if bias else None
    x = rng.standard_normal((2, c_in, size, size)).astype(np.float32)
    attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
    reference = run(conv_model(weight, b, **attrs), x)
    model = conv_model(weight, b, **attrs)
    assert quantize_convs(model, keep=()) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    taps = 0 if (kernel, stride) == (1, 1) else kernel * kernel  # a 1x1 kernel's columns are the pixels themselves
    assert "Conv" not in ops and ops.count("MatMulInteger") == 1 and ops.count("Slice") == taps
    assert {t.name for t in model.graph.initializer}.isdisjoint({"w"})  # the fp32 weight is gone
    ours = run(model, x)
    assert ours.shape == reference.shape
    error = np.abs(ours - reference).max() / np.abs(reference).max()
    assert 1e-4 < error < 2e-2, error  # 8-bit rounding, not exactness (then it would not be int8) nor a wrong tap


def test_kept_and_unsupported_convs_stay_fp32():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    kept = conv_model(weight, None, name="/unet/conv_in/Conv", kernel_shape=[3, 3], pads=[1] * 4)
    assert quantize_convs(kept, keep=("/unet/conv_in/",)) == 0
    grouped = conv_model(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), None, kernel_shape=[3, 3], group=2)
    dilated = conv_model(weight, None, kernel_shape=[3, 3], dilations=[2, 2])
    for model in (kept, grouped, dilated):
        assert quantize_convs(model, keep=("/unet/conv_in/",)) == 0 and [n.op_type for n in model.graph.node] == [
            "Conv"
        ]


def test_pink_pictures_span_minus_one_to_one_with_a_one_over_f_spectrum():
    """The decoder's calibration pictures: each spans [-1, 1], and its power spectrum falls as 1/f^2 (a slope of -2
    in log-log, natural pictures' statistics), not flat as white noise's."""
    from export.networks import pink_pictures

    pictures = pink_pictures([1, 3, 128, 128], 3).numpy()  # [3, 3, 128, 128]
    assert pictures.shape == (3, 3, 128, 128)
    assert np.allclose(pictures.min(axis=(1, 2, 3)), -1) and np.allclose(pictures.max(axis=(1, 2, 3)), 1)
    power = np.abs(np.fft.fft2(pictures - pictures.mean(axis=(2, 3), keepdims=True))) ** 2  # [3, 3, 128, 128]
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij"))  # [128, 128]
    bands = np.geomspace(2 / 128, 0.5, 9)
    mean_power = [
        power[..., (frequency >= lo) & (frequency < hi)].mean() for lo, hi in zip(bands[:-1], bands[1:], strict=True)
    ]
    centres = np.sqrt(bands[:-1] * bands[1:])
    slope = np.polyfit(np.log(centres), np.log(mean_power), 1)[0]
    assert -2.3 < slope < -1.7, slope


def test_an_int8_bundle_with_taesd_has_a_calibrated_int8_decoder(tiny_models, tmp_path):
    """With ``--precision int8 --tiny-vae``, TAESD's decoder goes int8 (static, QDQ): every convolution but the first
    and last reads int8 weights and a quantized input; on latents it was not calibrated on (a 1/f picture of another
    seed through diffusers' TAESD encoder, and noise) it draws diffusers' own fp32 decode within 3% of its scale,
    and not exactly (it is quantized). The encoder stays fp32."""
    from diffusers import AutoencoderTiny

    from runtime.bundle import read_manifest
    from tests.support import export_tiny

    out = export_tiny(tiny_models, tmp_path / "bundle", precision="int8", tiny_vae=str(tiny_models / "taesd"))
    manifest = read_manifest(out)
    assert (manifest.engines["vae_decoder"].precision, manifest.engines["vae_encoder"].precision) == ("int8", "fp32")

    graph = onnx.load(str(out / "vae_decoder.onnx"), load_external_data=False).graph
    produced_by = {output: node for node in graph.node for output in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    quantized = [
        all(name in produced_by and produced_by[name].op_type == "DequantizeLinear" for name in conv.input[:2])
        for conv in convs
    ]
    assert len(convs) > 4 and quantized == [False] + [True] * (len(convs) - 2) + [False]

    taesd = AutoencoderTiny.from_pretrained(tiny_models / "taesd").eval()
    height, width = manifest.height, manifest.width
    rng = np.random.default_rng(11)  # the calibration draws with seed 0
    spectrum = rng.standard_normal((1, 3, height, width // 2 + 1)) + 1j * rng.standard_normal(
        (1, 3, height, width // 2 + 1)
    )
    frequency = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]).clip(1 / height)
    picture = np.fft.irfft2(spectrum / frequency, s=(height, width))  # [1, 3, H, W], 1/f
    picture = (picture - picture.min()) / (picture.max() - picture.min()) * 2 - 1
    session = ort.InferenceSession(str(out / "vae_decoder.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        encoded = taesd.encode(torch.from_numpy(picture).float()).latents  # [1, 4, h, w]
        for latent in (encoded, torch.from_numpy(rng.standard_normal(encoded.shape)).float()):
            reference = taesd.decode(latent).sample.numpy()  # [1, 3, H, W]
            ours = session.run(None, {"latent": latent.numpy()})[0]
            error = np.abs(ours - reference).max() / np.abs(reference).max()
            assert 1e-4 < error < 3e-2, error  # 8-bit rounding (about 0.5% here), not exactness
