"""The PyTorch reference pipeline: sound clips -> pictures through diffusers' Stable Diffusion.

This is the faithful AudioToken inference (docs/method.md#the-official-recipe) that every exported engine and the
lean runtime are compared against. Data flow, as in the runtime:
1. ``load_audio``: any clip -> 10 s of 16 kHz mono (runtime.audio);
2. ``encode_audio``: ``AudioEncoder`` -> token [B, D];
3. ``encode_prompt``: template ids with ``<*>`` spliced -> [B, 77, D], and the negative prompt likewise;
4. initial latents: given by the caller (for A/B checks) or seeded numpy noise (runtime.noise);
5. diffusers' ``StableDiffusionPipeline`` denoises (any diffusers scheduler) and decodes to PIL images.

Defaults are the official inference: PNDM, 50 steps, guidance 7.5, ``a photo of <*>, 4k, high resolution``,
512x512 (``unet.sample_size * 8``). The official safety checker (which blacks out flagged pictures) is not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audiotoken.encoder import AudioEncoder
from audiotoken.stable_diffusion import StableDiffusion, resolve_tiny_autoencoder, tiny_autoencoder
from audiotoken.text import TextConditioner, tokenize
from runtime.audio import load_audio
from runtime.contract import DEFAULT_TEMPLATE, PLACEHOLDER
from runtime.errors import CheckpointError, ConfigError
from runtime.noise import draw_seed, initial_noise
from runtime.tokenizer import check_template

Clip = str | Path | np.ndarray  # a file, or a prepared [160000] waveform (runtime.audio.prepare_waveform)


@dataclass
class AudioTokenPipeline:
    """diffusers Stable Diffusion + the AudioToken audio encoder and text splice."""

    sd: object  # diffusers.StableDiffusionPipeline (its tokenizer knows <*>)
    audio_encoder: AudioEncoder
    text: TextConditioner

    @classmethod
    def from_pretrained(
        cls,
        sd: str | Path,
        beats: str | Path,
        embedder: str | Path,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        stochastic: bool = False,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
        tiny_vae: str | Path | None = None,
    ) -> AudioTokenPipeline:
        """Load Stable Diffusion (hub id or local diffusers folder), BEATs ``.pt`` and ``embedder_learned_embeds.bin``.

        ``stochastic=True`` reproduces the official always-on embedder dropout (docs/method.md#quirks, Q1); off by
        default.
        The audio encoder always runs in fp32 (its fbank needs it); ``dtype`` applies to Stable Diffusion.
        The fast recipe's parts, the diffusers way: ``lora`` (a distillation LoRA: hub id, folder or file) is loaded
        with ``load_lora_weights`` and fused at ``lora_scale``; ``tiny_vae`` (TAESD) replaces the VAE. Draw with its
        model card's recipe, e.g. LCM-LoRA's ``scheduler="LCMScheduler"``, 4 steps and ``guidance_scale=1``.
        """
        pipe = StableDiffusion.open(sd).pipeline()  # its tokenizer knows <*>
        if lora is not None:
            path = Path(lora)
            weights = {"weight_name": path.name} if path.is_file() else {}
            pipe.load_lora_weights(path.parent if path.is_file() else lora, **weights)
            pipe.fuse_lora(lora_scale=lora_scale)
            pipe.unload_lora_weights()
        if tiny_vae is not None:
            pipe.register_modules(vae=tiny_autoencoder(resolve_tiny_autoencoder(tiny_vae)))
        encoder = AudioEncoder.from_checkpoints(beats, embedder, stochastic=stochastic)
        text = TextConditioner(pipe.text_encoder, pipe.tokenizer.convert_tokens_to_ids(PLACEHOLDER))
        if encoder.token_dim != text.token_dim:
            raise CheckpointError(
                f"{embedder}: the embedder makes {encoder.token_dim}-d tokens but {sd}'s text encoder is {text.token_dim}-d",
                hint="use the embedder trained for this Stable Diffusion (768 for SD 1.x, 1024 for SD 2.x)",
            )
        pipe = pipe.to(device, dtype)
        return cls(pipe, encoder.to(device), text)

    @property
    def device(self) -> torch.device:
        return self.sd.unet.device

    @property
    def placeholder_id(self) -> int:
        return self.text.placeholder_id

    def default_size(self) -> tuple[int, int]:
        """(height, width) the model was trained at: ``unet.sample_size * vae_scale_factor`` (512x512 for SD 1.x)."""
        side = self.sd.unet.config.sample_size * self.sd.vae_scale_factor
        return side, side

    @torch.no_grad()
    def encode_audio(self, clips: list[Clip]) -> torch.Tensor:
        """Clips -> audio tokens [B, D] (fp32)."""
        waves = [clip if isinstance(clip, np.ndarray) else load_audio(clip) for clip in clips]
        waveform = torch.from_numpy(np.stack(waves)).to(self.device, torch.float32)  # [B, 160000]
        return self.audio_encoder(waveform)  # [B, D]

    @torch.no_grad()
    def encode_prompt(self, tokens: torch.Tensor, prompt: str) -> torch.Tensor:
        """Tokens [B, D] and a prompt (``<*>`` optional here) -> CLIP embeddings [B, 77, D]."""
        ids = tokenize(self.sd.tokenizer, [prompt] * tokens.shape[0]).to(self.device)  # [B, 77]
        return self.text(ids, tokens.to(self.sd.text_encoder.dtype))  # [B, 77, D]

    @torch.no_grad()
    def __call__(
        self,
        clips: list[Clip],
        *,
        prompt: str = DEFAULT_TEMPLATE,
        negative_prompt: str = "",
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        eta: float = 0.0,
        height: int | None = None,
        width: int | None = None,
        num_images_per_clip: int = 1,
        seed: int | None = None,
        latents: np.ndarray | torch.Tensor | None = None,
        scheduler=None,
        progress: bool = True,
    ) -> list:
        """Draw ``num_images_per_clip`` PIL images per clip, clip-major.

        ``latents`` [B * k, 4, H/8, W/8] are N(0, 1) noise (diffusers scales them by ``init_noise_sigma``);
        without them they come from ``runtime.noise.initial_noise(seed)``, as in the lean runtime.
        ``scheduler``: a diffusers scheduler instance or class name (e.g. ``"DPMSolverMultistepScheduler"``),
        built from the model's scheduler config; the model's own (PNDM for SD 1.x) by default. ``eta``: the
        scheduler's, where its ``step`` takes one (DDIM's, TCD's gamma); diffusers draws its noise.
        """
        from diffusers import StableDiffusionPipeline

        check_template(prompt)
        default_h, default_w = self.default_size()
        height, width = height or default_h, width or default_w
        factor = self.sd.vae_scale_factor
        if height % factor or width % factor:
            raise ConfigError(f"image size {height}x{width} must be a multiple of {factor} (the VAE's scale factor)")

        tokens = self.encode_audio(clips).repeat_interleave(num_images_per_clip, dim=0)  # [B * k, D]
        cond = self.encode_prompt(tokens, prompt)  # [B * k, 77, D]
        uncond = self.encode_prompt(tokens, negative_prompt)  # [B * k, 77, D]
        shape = (tokens.shape[0], self.sd.unet.config.in_channels, height // factor, width // factor)
        if latents is None:
            latents = initial_noise(draw_seed() if seed is None else seed, shape)
        latents = torch.as_tensor(latents)
        if tuple(latents.shape) != shape:
            raise ConfigError(
                f"latents have shape {tuple(latents.shape)}; expected {shape} for {len(clips)} clip(s) at {height}x{width}"
            )

        components = dict(self.sd.components)  # a per-call pipeline: the scheduler swap never leaks across calls
        if scheduler is not None:
            components["scheduler"] = resolve_scheduler(scheduler, self.sd.scheduler.config)
        pipe = StableDiffusionPipeline(**components, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=not progress)
        result = pipe(
            prompt_embeds=cond,
            negative_prompt_embeds=uncond,
            latents=latents.to(self.device, cond.dtype),
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            eta=eta,
            output_type="pil",
        )
        return result.images


def resolve_scheduler(scheduler, config):
    """A diffusers scheduler instance as is, or one built by class name from the model's scheduler config."""
    if not isinstance(scheduler, str):
        return scheduler
    import diffusers

    cls = getattr(diffusers, scheduler, None)
    if cls is None or not scheduler.endswith("Scheduler"):
        raise ConfigError(
            f"unknown diffusers scheduler {scheduler!r}",
            hint="e.g. PNDMScheduler, DPMSolverMultistepScheduler, DDIMScheduler",
        )
    return cls.from_config(config)
