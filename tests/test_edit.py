"""Editing a picture with a sound (runtime.pipeline: ``draw_edit``, ``denoise(..., source=)``), on the tiny models
and a real clip, checked against diffusers and against answers known in advance.

Against diffusers, from the same token (the reference's ``encode_prompt``), the same initial noise
(``runtime.noise.initial_noise``, injected by patching diffusers' ``randn_tensor``) and guidance 7.5:
- SDEdit is ``StableDiffusionImg2ImgPipeline`` (DPM-Solver++ 2M and Euler, strengths 0.3, 0.6, 0.9 of 10 steps),
  fed the runtime's own source latents: same picture (PSNR >= 40 dB) and same final latents;
- masked editing is ``StableDiffusionInpaintPipeline`` with the plain 4-channel UNet (its blended-latents branch),
  the VAE posterior's mode as the source latents: same final latents (strengths 0.6 and 1.0), and the runtime's
  picture keeps every black-mask pixel of the source exactly;
- the fast recipe's edit (LCM-LoRA fused, TAESD, LCM at strength 0.5) is ``LatentConsistencyModelImg2ImgPipeline``
  with the reference's fused components and LCM's step noise injected too: same timesteps, same picture.
A control shows that these measures tell apart an edit that starts one step off. Known answers: strength 0 is the
picture itself (alpha too), strength 1 without a mask is ``draw``, a non-square picture comes back at its own size,
a mix of one clip with itself is that clip, bad mix weights and strengths are one ConfigError, and the PNG metadata
records the source, the strength and the mask.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.audio import load_audio
from runtime.errors import ConfigError
from runtime.noise import STEP_NOISE, NoiseStream, initial_noise
from runtime.picture import read_png_metadata, save_png
from runtime.pipeline import EditOptions, EditSource, GenerationOptions, Pipeline, Stopwatch
from runtime.schedulers import make_scheduler
from runtime.source_picture import latent_mask, load_mask, to_engine_image
from tests.support import psnr

SIZE = 64  # the tiny bundle's picture side (latents 8 x 8)
STEPS = 10
GUIDANCE = 7.5
# Final latents of the runtime (ONNX Runtime) and of diffusers (PyTorch): the same float32 networks with other
# kernels and summation orders, so each UNet call differs by about 1e-6 relative; classifier-free guidance at 7.5
# multiplies the difference of the two halves, and up to 10 steps accumulate it. Measured: 4.6e-6 to 3.4e-5 (SDEdit),
# 6.6e-6 to 3.8e-5 (masked), 5.7e-6 (LCM) on latents of magnitude 2.3 to 21, i.e. under 3e-6 relative. The bound is
# 5x the worst of them, and 1e4 times below the 2.0 that starting one step off (strength 0.7 against 0.6 of 10 steps)
# makes.
LATENT_TOL = 2e-4
DIFFUSERS_SCHEDULERS = {"dpm++2m": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler"}


def source_picture(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """A picture with smooth gradients and a disc: [H, W, 3] uint8."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 255 - (x + y) * 2 % 256], axis=-1)
    rgb = rgb.astype(np.uint8)
    rgb[(x - 0.6 * width) ** 2 + (y - 0.4 * height) ** 2 < (0.2 * min(height, width)) ** 2] = (240, 200, 40)
    return rgb


def rectangle_mask(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """Black (keep) with a white (may change) rectangle whose edges fall between latent pixels: [H, W] uint8."""
    mask = np.zeros((height, width), np.uint8)
    mask[height * 5 // 16 : height * 45 // 64, width * 3 // 16 : width * 50 // 64] = 255
    return mask


@pytest.fixture(scope="module")
def pipeline(tiny_bundle) -> Pipeline:
    return Pipeline.open(tiny_bundle)


@pytest.fixture(scope="module")
def reference(tiny_models):
    from audiotoken.pipeline import AudioTokenPipeline

    return AudioTokenPipeline.from_pretrained(
        tiny_models / "sd", tiny_models / "beats.pt", tiny_models / "embedder.bin"
    )


@pytest.fixture(scope="module")
def prompt_embeds(reference, pipeline, clips):
    """The reference's (cond, uncond) embeddings [1, 77, D] of clip 0 in the bundle's template, as its own __call__
    makes them (an empty negative prompt)."""
    token = reference.encode_audio([clips[0]])  # [1, D]
    return reference.encode_prompt(token, pipeline.bundle.manifest.template), reference.encode_prompt(token, "")


def seeded_noise(seed: int):
    """A stand-in for diffusers' randn_tensor that gives the runtime's initial noise of ``seed``."""

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.from_numpy(initial_noise(seed, tuple(shape))).to(dtype)

    return randn_tensor


def decoded_latents(pipeline: Pipeline, monkeypatch) -> list[np.ndarray]:
    """Spy on ``pipeline.decode_latents``: the latents [1, 4, h, w] it is given, in order."""
    seen: list[np.ndarray] = []
    decode = pipeline.decode_latents
    monkeypatch.setattr(pipeline, "decode_latents", lambda latents: seen.append(latents.copy()) or decode(latents))
    return seen


def engine_calls(pipeline: Pipeline, monkeypatch) -> list[str]:
    """Spy on the backend: the engines run, in order."""
    calls: list[str] = []
    run = pipeline.backend.run
    monkeypatch.setattr(pipeline.backend, "run", lambda engine, feeds: calls.append(engine) or run(engine, feeds))
    return calls


def last_latents(store: dict):
    """A callback_on_step_end keeping the latents after each step (the last one stays)."""

    def callback(pipe, i, t, kwargs):
        store.update({name: value.detach().clone() for name, value in kwargs.items()})
        return kwargs

    return callback


def diffusers_components(reference, scheduler: str) -> dict:
    import diffusers

    components = dict(reference.sd.components)
    components["scheduler"] = getattr(diffusers, scheduler).from_config(reference.sd.scheduler.config)
    return components


# 1. SDEdit = diffusers' img2img


def diffusers_img2img(reference, prompt_embeds, scheduler, latents, strength, seed, monkeypatch):
    """diffusers' StableDiffusionImg2ImgPipeline from ``latents`` (times the scaling factor), given as a 4-channel
    ``image``: its VaeImageProcessor.preprocess returns a tensor with vae_latent_channels (4) channels untouched, and
    its prepare_latents takes an image of 4 channels as init_latents as is (no encoding, no scaling: diffusers 0.42,
    pipeline_stable_diffusion_img2img.py), then add_noise(init_latents, randn_tensor(...), timesteps[0]).
    -> (PIL picture, final latents [1, 4, h, w])."""
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img as img2img
    from diffusers import StableDiffusionImg2ImgPipeline

    monkeypatch.setattr(img2img, "randn_tensor", seeded_noise(seed))
    pipe = StableDiffusionImg2ImgPipeline(
        **diffusers_components(reference, DIFFUSERS_SCHEDULERS[scheduler]), requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.image_processor.config.vae_latent_channels == latents.shape[1] == 4
    cond, uncond = prompt_embeds
    final: dict = {}
    picture = pipe(
        image=torch.from_numpy(latents),
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        strength=strength,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        callback_on_step_end=last_latents(final),
    ).images[0]
    return picture, final["latents"].numpy()


@pytest.mark.parametrize("strength", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("scheduler", ["dpm++2m", "euler"])
def test_sdedit_is_diffusers_img2img(pipeline, reference, prompt_embeds, clips, monkeypatch, scheduler, strength):
    # Euler keeps its latents in sigma scale (x0 + sigma * noise): its add_noise there is part of what is checked.
    seed = 11 + round(strength * 10)
    rgb = source_picture()
    source = pipeline.encode_picture(to_engine_image(rgb))  # [1, 4, 8, 8], times the scaling factor
    seen = decoded_latents(pipeline, monkeypatch)
    options = EditOptions(scheduler=scheduler, steps=STEPS, guidance=GUIDANCE, strength=strength, seed=seed)
    result = pipeline.draw_edit(rgb, clips[0], options)
    assert result.timings.unet_calls == int(STEPS * strength)  # the steps that remain
    expected, expected_latents = diffusers_img2img(
        reference, prompt_embeds, scheduler, source, strength, seed, monkeypatch
    )
    assert result.pictures[0].size == expected.size == (SIZE, SIZE)
    assert psnr(result.pictures[0], expected) >= 40  # measured: 86-89 dB (a few values one level off) or inf
    (latents,) = seen
    assert np.abs(latents - expected_latents).max() <= LATENT_TOL


def test_the_sdedit_comparison_tells_one_step_apart(pipeline, reference, prompt_embeds, clips, monkeypatch):
    """The measures above fail for an edit that starts one step off (strength 0.6 against 0.7 of 10 steps)."""
    rgb = source_picture()
    source = pipeline.encode_picture(to_engine_image(rgb))
    seen = decoded_latents(pipeline, monkeypatch)
    result = pipeline.draw_edit(rgb, clips[0], EditOptions(scheduler="euler", steps=STEPS, strength=0.6, seed=17))
    other, other_latents = diffusers_img2img(reference, prompt_embeds, "euler", source, 0.7, 17, monkeypatch)
    assert psnr(result.pictures[0], other) < 35  # measured 25 dB
    assert np.abs(seen[0] - other_latents).max() > 100 * LATENT_TOL  # measured 2.0


# 2. masked editing = diffusers' inpainting with a plain UNet


@pytest.mark.parametrize("strength", [0.6, 1.0])
@pytest.mark.parametrize("scheduler", ["dpm++2m", "euler"])
def test_masked_edit_is_diffusers_inpainting(
    pipeline, reference, prompt_embeds, clips, monkeypatch, scheduler, strength
):
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint as inpaint
    from diffusers import StableDiffusionInpaintPipeline

    seed = 23
    rgb, white = source_picture(), rectangle_mask()
    options = EditOptions(scheduler=scheduler, steps=STEPS, guidance=GUIDANCE, strength=strength, seed=seed)

    # the runtime: denoise from the encoded picture under the latent mask ...
    source = pipeline.encode_picture(to_engine_image(rgb))  # [1, 4, 8, 8]
    mask = latent_mask(load_mask(white, (SIZE, SIZE)).may_change, (SIZE // 8, SIZE // 8))  # [1, 1, 8, 8]
    assert 0 < mask.sum() < mask.size
    embeddings = pipeline.encode_prompt(
        pipeline.encode_audio(load_audio(clips[0])), pipeline.bundle.manifest.template, ""
    )
    latents = pipeline.denoise(embeddings, seed, options, Stopwatch(), EditSource(source, mask, strength))

    # ... and diffusers: its 4-channel branch blends in the source latents noised to the next step after each step;
    # the runtime's VAE encoder engine gives the posterior's mean, so diffusers takes its mode (= mean) too.
    monkeypatch.setattr(inpaint, "randn_tensor", seeded_noise(seed))
    encoded: list = []

    def posterior_mode(encoder_output, generator=None, sample_mode="sample"):
        encoded.append(encoder_output.latent_dist.mode())
        return encoded[-1]

    monkeypatch.setattr(inpaint, "retrieve_latents", posterior_mode)
    pipe = StableDiffusionInpaintPipeline(
        **diffusers_components(reference, DIFFUSERS_SCHEDULERS[scheduler]), requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.in_channels == 4
    cond, uncond = prompt_embeds
    expected = pipe(
        image=Image.fromarray(rgb),
        mask_image=Image.fromarray(white, mode="L"),
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        strength=strength,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        output_type="latent",
    ).images.numpy()  # [1, 4, 8, 8]

    image_latents = encoded[0].numpy() * reference.sd.vae.config.scaling_factor
    assert np.abs(source - image_latents).max() <= 1e-5  # the encoder engine is the posterior mean (measured 6e-7)
    assert np.abs(latents - expected).max() <= LATENT_TOL
    kept = np.broadcast_to(mask == 0, latents.shape)
    assert np.array_equal(latents[kept], source[kept])  # the last blend puts the source itself back
    assert np.abs(latents - source)[~kept].min() > 0  # and the white region moved

    # draw_edit assembles the same (mask read, fitted, brought to the latents) and keeps every black pixel exactly
    seen = decoded_latents(pipeline, monkeypatch)
    result = pipeline.draw_edit(rgb, clips[0], options, mask=Image.fromarray(white, mode="L"))
    assert np.array_equal(seen[0], latents)
    picture = np.asarray(result.pictures[0])
    assert result.pictures[0].mode == "RGB" and picture.shape == rgb.shape
    assert np.array_equal(picture[white == 0], rgb[white == 0])
    assert np.mean(np.any(picture[white > 0] != rgb[white > 0], axis=-1)) > 0.9  # the edit shows in the white


# 3. the fast recipe = diffusers' LCM img2img


def test_fast_edit_is_diffusers_lcm_img2img(fast_bundle, fast_reference, clips, monkeypatch):
    """LatentConsistencyModelImg2ImgPipeline is written for an LCM-distilled UNet that takes the guidance scale as an
    embedding (unet.config.time_cond_proj_dim); it computes that embedding unconditionally, and with an LCM-LoRA
    UNet (time_cond_proj_dim None) get_guidance_scale_embedding(w, embedding_dim=None) fails (None // 2). At guidance
    1 such a UNet has no guidance input at all, so the embedding is replaced by None (what the UNet takes when there
    is none); everything else is the pipeline's own: LCMScheduler.set_timesteps(4, strength=0.5), the picture encoded
    by diffusers' AutoencoderTiny, add_noise, the LCM steps with their fresh noise, the decoder."""
    import diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_img2img as lcm_img2img
    import diffusers.schedulers.scheduling_lcm as lcm
    from diffusers import LatentConsistencyModelImg2ImgPipeline

    seed, strength = 21, 0.5
    rgb = source_picture()
    pipeline = Pipeline.open(fast_bundle)
    seen = decoded_latents(pipeline, monkeypatch)
    result = pipeline.draw_edit(rgb, clips[0], EditOptions(fast=True, strength=strength, seed=seed))
    assert (result.options.scheduler, result.options.steps, result.options.guidance) == ("lcm", 4, 1.0)
    assert result.timings.unet_calls == 4  # LCM keeps its steps below strength 1, starting lower

    stream = NoiseStream(seed, STEP_NOISE)  # LCM's step noise: the runtime's stream, fed to diffusers too

    def step_noise(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.from_numpy(stream.standard_normal(tuple(shape))).to(dtype)

    monkeypatch.setattr(lcm_img2img, "randn_tensor", seeded_noise(seed))
    monkeypatch.setattr(lcm, "randn_tensor", step_noise)
    pipe = LatentConsistencyModelImg2ImgPipeline(
        **diffusers_components(fast_reference, "LCMScheduler"), requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.time_cond_proj_dim is None  # LCM-LoRA: no guidance embedding

    class NoEmbedding:
        def to(self, *args, **kwargs):
            return None

    monkeypatch.setattr(pipe, "get_guidance_scale_embedding", lambda *args, **kwargs: NoEmbedding())
    cond = fast_reference.encode_prompt(fast_reference.encode_audio([clips[0]]), pipeline.bundle.manifest.template)
    final: dict = {}
    expected = pipe(
        image=Image.fromarray(rgb),
        prompt_embeds=cond,
        strength=strength,
        num_inference_steps=4,
        guidance_scale=1.0,
        callback_on_step_end=last_latents(final),
        callback_on_step_end_tensor_inputs=["latents", "denoised"],
    ).images[0]

    ours = make_scheduler("lcm", pipeline.bundle.manifest.scheduler_config, 4, strength).timesteps
    assert pipe.scheduler.timesteps.tolist() == ours.tolist() == [499, 379, 259, 139]
    assert np.abs(seen[0] - final["denoised"].numpy()).max() <= LATENT_TOL  # measured 5.7e-6
    assert psnr(result.pictures[0], expected) >= 40  # measured: inf
    assert psnr(result.pictures[0], rgb) < 30  # and the edit did move the picture (measured 5 dB)


# 4. known answers


@pytest.mark.parametrize("channels", [3, 4])
def test_strength_0_gives_the_picture_back_exactly(pipeline, clips, channels):
    rgb = source_picture()
    pixels = rgb if channels == 3 else np.dstack([rgb, np.arange(SIZE * SIZE, dtype=np.uint8).reshape(SIZE, SIZE)])
    result = pipeline.draw_edit(pixels, clips[0], EditOptions(strength=0.0, seed=3, num_images=2))
    assert len(result.pictures) == 2 and result.seeds == [3, 4]
    for picture in result.pictures:
        assert picture.mode == ("RGB" if channels == 3 else "RGBA")
        assert np.array_equal(np.asarray(picture), pixels)


def test_an_rgba_picture_keeps_its_alpha(pipeline, clips):
    rgb = source_picture()
    alpha = np.arange(SIZE * SIZE, dtype=np.uint8).reshape(SIZE, SIZE)
    picture = pipeline.edit(np.dstack([rgb, alpha]), clips[0], EditOptions(strength=0.5, seed=3, steps=4))[0]
    assert picture.mode == "RGBA"
    assert np.array_equal(np.asarray(picture)[..., 3], alpha)
    assert not np.array_equal(np.asarray(picture)[..., :3], rgb)


def test_strength_1_without_a_mask_is_draw(pipeline, clips):
    edited = pipeline.draw_edit(source_picture(), clips[0], EditOptions(strength=1.0, seed=5, steps=STEPS))
    drawn = pipeline.draw(clips[0], GenerationOptions(seed=5, steps=STEPS))
    assert edited.timings.unet_calls == drawn.timings.unet_calls == STEPS
    assert np.array_equal(np.asarray(edited.pictures[0]), np.asarray(drawn.pictures[0]))


@pytest.mark.parametrize("size", [(100, 150), (150, 100)])  # (width, height)
def test_a_picture_of_another_shape_comes_back_at_its_own_size(pipeline, clips, size):
    width, height = size
    rgb, white = source_picture(height, width), rectangle_mask(height, width)
    options = EditOptions(strength=0.6, seed=2, steps=4)
    whole = pipeline.edit(rgb, clips[0], options)[0]
    assert whole.size == size and whole.mode == "RGB"
    assert psnr(whole, rgb) < 30  # it was edited, not handed back
    masked = np.asarray(pipeline.edit(rgb, clips[0], options, mask=white)[0])
    assert masked.shape == rgb.shape
    assert np.array_equal(masked[white == 0], rgb[white == 0])


@pytest.mark.parametrize("weights", [(0.7, 0.3), (7.0, 3.0)])  # 7, 3: normalised to the same 0.7, 0.3
def test_a_mix_of_a_clip_with_itself_is_the_clip(pipeline, clips, weights):
    options = EditOptions(strength=0.6, seed=8, steps=STEPS)
    alone = pipeline.draw_edit(source_picture(), clips[0], options)
    mixed = pipeline.draw_edit(source_picture(), [(clips[0], weights[0]), (clips[0], weights[1])], options)
    assert np.array_equal(np.asarray(mixed.pictures[0]), np.asarray(alone.pictures[0]))
    name = clips[0].name
    assert mixed.sounds == f"{name}:{weights[0]:g},{name}:{weights[1]:g}"


BAD_WEIGHTS = {"sum 0": (0.5, -0.5), "negative": (-1.0,), "nan": (float("nan"), 1.0), "inf": (float("inf"), 1.0)}


@pytest.mark.parametrize("strength", [0.6, 0.0])  # at 0 the picture comes back, but the sounds are checked too
@pytest.mark.parametrize("weights", list(BAD_WEIGHTS.values()) + [()], ids=[*BAD_WEIGHTS, "empty"])
def test_bad_mix_weights_are_one_config_error(pipeline, clips, monkeypatch, weights, strength):
    calls = engine_calls(pipeline, monkeypatch)
    mix = [(clips[0], weight) for weight in weights]
    with pytest.raises(ConfigError, match="must be finite and sum to a positive number") as caught:
        pipeline.draw_edit(source_picture(), mix, EditOptions(strength=strength, seed=1, steps=4))
    assert "\n" not in str(caught.value) and "--mix" in caught.value.hint
    assert calls == []  # refused before any engine runs


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), float("inf")])
def test_a_strength_outside_0_1_is_a_config_error(pipeline, clips, monkeypatch, strength):
    calls = engine_calls(pipeline, monkeypatch)
    with pytest.raises(ConfigError, match=r"strength is .*; it must be between 0 .* and 1"):
        pipeline.draw_edit(source_picture(), clips[0], EditOptions(strength=strength, seed=1))
    with pytest.raises(ConfigError, match="strength is"):
        EditOptions(strength=strength).check()
    assert calls == []


@pytest.mark.parametrize("strength", [0.0, 0.6])
def test_the_metadata_records_the_source_strength_and_mask(pipeline, clips, tmp_path, strength):
    picture_file, mask_file = tmp_path / "photo.png", tmp_path / "where.png"
    Image.fromarray(source_picture()).save(picture_file)
    Image.fromarray(rectangle_mask(), mode="L").save(mask_file)
    digest = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (picture_file, mask_file)}
    options = EditOptions(strength=strength, feather=3, seed=9, steps=4)

    masked = pipeline.draw_edit(picture_file, clips[0], options, mask=mask_file)
    metadata = masked.metadata(0)
    recorded = ("source", "source_sha256", "strength", "mask", "mask_sha256", "feather")
    assert {key: metadata[key] for key in recorded} == {
        "source": "photo.png",
        "source_sha256": digest[picture_file],
        "strength": strength,
        "mask": "where.png",
        "mask_sha256": digest[mask_file],
        "feather": 3,
    }
    assert (metadata["clip"], metadata["seed"], metadata["steps"]) == (clips[0].name, 9, 4)
    out = save_png(masked.pictures[0], tmp_path / "out.png", metadata)
    assert read_png_metadata(out) == {key: str(value) for key, value in metadata.items()}  # PNG-ready

    whole = pipeline.draw_edit(picture_file, clips[0], options).metadata(0)
    assert (whole["source"], whole["source_sha256"], whole["strength"]) == ("photo.png", digest[picture_file], strength)
    assert not {"mask", "mask_sha256", "feather"} & set(whole)
