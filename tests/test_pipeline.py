"""The diffusers reference pipeline on tiny random models and a real clip: its picture is the one stock diffusers
and the stock CLIP draw, the seed and the given latents reproduce it, the clip changes it, and bad options fail
with clear errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from audiotoken.embedder import Embedder
from audiotoken.pipeline import AudioTokenPipeline
from runtime.errors import CheckpointError, ConfigError
from runtime.noise import initial_noise
from tests.support import psnr

STEPS = 4


@pytest.fixture(scope="module")
def pipe(tiny_models):
    return AudioTokenPipeline.from_pretrained(
        tiny_models / "sd", tiny_models / "beats.pt", tiny_models / "embedder.bin"
    )


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def test_official_defaults(pipe):
    assert pipe.placeholder_id == 49408
    assert pipe.default_size() == (64, 64)  # unet.sample_size 8 x vae scale factor 8
    assert type(pipe.sd.scheduler).__name__ == "PNDMScheduler"


def stock_diffusers_picture(models: Path, clip: Path, latents: np.ndarray):
    """The official recipe (docs/method.md#the-official-recipe: PNDM, guidance 7.5, the template, an empty negative
    prompt) assembled from stock parts: diffusers' StableDiffusionPipeline, the audio encoder from its checkpoints, and
    the stock CLIP whose resized token table holds the audio token at the placeholder's row
    (docs/method.md#the-token-and-the-prompt) for the prompt embeddings."""
    from diffusers import StableDiffusionPipeline

    from audiotoken.encoder import AudioEncoder
    from audiotoken.text import add_placeholder, tokenize
    from runtime.audio import load_audio

    sd = StableDiffusionPipeline.from_pretrained(models / "sd", safety_checker=None, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    placeholder = add_placeholder(sd.tokenizer)
    with torch.no_grad():
        encoder = AudioEncoder.from_checkpoints(models / "beats.pt", models / "embedder.bin")
        token = encoder(torch.from_numpy(load_audio(clip))[None])[0]  # [D]
        stock = copy.deepcopy(sd.text_encoder)
        stock.resize_token_embeddings(placeholder + 1, mean_resizing=False)
        stock.get_input_embeddings().weight[placeholder] = token
        cond = stock(tokenize(sd.tokenizer, ["a photo of <*>, 4k, high resolution"])).last_hidden_state  # [1, 77, D]
        uncond = sd.text_encoder(tokenize(sd.tokenizer, [""])).last_hidden_state  # [1, 77, D]
        return sd(
            prompt_embeds=cond,
            negative_prompt_embeds=uncond,
            latents=torch.from_numpy(latents),
            num_inference_steps=STEPS,
            guidance_scale=7.5,
            height=64,
            width=64,
            output_type="pil",
        ).images[0]


def test_a_real_clip_gives_a_picture_and_the_seed_reproduces_it(pipe, clips, tiny_models):
    first = pipe([clips[0]], seed=7, num_inference_steps=STEPS, progress=False)
    assert len(first) == 1 and first[0].size == (64, 64) and first[0].mode == "RGB"
    # the picture the stock parts draw from the same seeded latents: equal here (inf dB); 60 dB leaves room for a few
    # pixels one level off, while the other clip (50 dB), guidance 7 (52 dB) or a token of 0 (34 dB) fall below it
    expected = stock_diffusers_picture(tiny_models, clips[0], initial_noise(7, (1, 4, 8, 8)))
    assert psnr(first[0], expected) >= 60
    again = pipe([clips[0]], seed=7, num_inference_steps=STEPS, progress=False)
    assert np.array_equal(pixels(first[0]), pixels(again[0]))
    given = pipe([clips[0]], latents=initial_noise(7, (1, 4, 8, 8)), num_inference_steps=STEPS, progress=False)
    assert np.array_equal(pixels(first[0]), pixels(given[0]))  # seeded numpy noise is the latents the runtime uses


def test_the_clip_conditions_the_picture(pipe, clips):
    latents = initial_noise(3, (2, 4, 8, 8))
    latents[1] = latents[0]
    images = pipe(clips, latents=latents, num_inference_steps=STEPS, progress=False)
    # same noise, different sound: the tiny random UNet listens weakly to its context, but it does listen
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))
    tokens = pipe.encode_audio(clips)
    assert (tokens[0] - tokens[1]).norm() > 0.1 * tokens.norm(dim=1).min()


def test_several_images_per_clip_and_another_scheduler(pipe, clips):
    images = pipe(
        [clips[1]],
        num_images_per_clip=2,
        seed=1,
        num_inference_steps=STEPS,
        scheduler="DPMSolverMultistepScheduler",
        progress=False,
    )
    assert len(images) == 2 and not np.array_equal(pixels(images[0]), pixels(images[1]))


def test_audio_tokens_are_batched_like_single_clips(pipe, clips):
    both = pipe.encode_audio(clips)
    assert both.shape == (2, 32)
    assert torch.allclose(both[1], pipe.encode_audio([clips[1]])[0], atol=1e-5)


def test_bad_options_are_refused(pipe, clips):
    with pytest.raises(ConfigError, match="latents have shape"):
        pipe([clips[0]], latents=np.zeros((1, 4, 16, 16), np.float32), num_inference_steps=STEPS, progress=False)
    with pytest.raises(ConfigError, match="unknown diffusers scheduler 'Nope'"):
        pipe([clips[0]], scheduler="Nope", num_inference_steps=STEPS, progress=False)
    with pytest.raises(ConfigError, match="multiple of 8"):
        pipe([clips[0]], height=60, num_inference_steps=STEPS, progress=False)
    with pytest.raises(ConfigError, match="holds <\\*> 0 times"):
        pipe([clips[0]], prompt="a photo", num_inference_steps=STEPS, progress=False)


def test_an_embedder_for_another_text_encoder_width_is_refused(tiny_models, tmp_path):
    torch.save(Embedder(96, 48).state_dict(), tmp_path / "wide.bin")
    with pytest.raises(CheckpointError, match="wide.bin: the embedder makes 48-d tokens but .* text encoder is 32-d"):
        AudioTokenPipeline.from_pretrained(tiny_models / "sd", tiny_models / "beats.pt", tmp_path / "wide.bin")


def test_a_folder_that_is_not_stable_diffusion_is_refused(tiny_models, tmp_path):
    with pytest.raises(CheckpointError, match="not a Stable Diffusion folder"):
        AudioTokenPipeline.from_pretrained(tmp_path, tiny_models / "beats.pt", tiny_models / "embedder.bin")


def test_audio_encoder_from_checkpoints(tiny_models, clips):
    from audiotoken.encoder import AudioEncoder
    from runtime.audio import load_audio

    encoder = AudioEncoder.from_checkpoints(tiny_models / "beats.pt", tiny_models / "embedder.bin")
    waveform = torch.from_numpy(np.stack([load_audio(c) for c in clips]))  # [2, 160000]
    features = encoder.features(waveform)
    assert features.shape == (2, 496, 3 * 32)  # layers 4, 8, 12 of the tiny BEATs side by side
    final, _ = encoder.beats.encoder(encoder.beats.patches(encoder.fbank(waveform)))  # [2, 496, 32]
    # the last block is the BEATs output itself (docs/method.md#the-features-the-embedder-reads)
    assert torch.equal(features[..., 64:], final)
    tokens = encoder(waveform)
    assert tokens.shape == (2, 32) and encoder.token_dim == 32
    assert torch.allclose(tokens, encoder.embedder(features), atol=1e-6)
