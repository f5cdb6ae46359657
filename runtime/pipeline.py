"""The lean, torch-free generation pipeline: clip -> picture by chaining a bundle's engines.

Data flow (DESIGN.md), one stage method each, in this order:
1. ``load_audio``      any clip -> [160000] float32 (runtime.audio; a chosen 10 s window, loop-tiled)
2. ``encode_audio``    waveform [1, 160000] -> audio token [1, D]          (audio_encoder engine)
3. ``encode_prompt``   template ids + token -> [2, 77, D] (uncond, cond)   (text_encoder engine; uncond cached)
4. ``denoise``         seeded noise -> latents [1, 4, h, w]                 (unet engine, numpy scheduler step)
5. ``decode_latents``  latents / scaling factor -> [1, 3, 8h, 8w]          (vae_decoder engine)
6. ``to_pictures`` / ``save_png`` (runtime.picture)

Engines have static shapes (batch 1, classifier-free guidance batched as 2 in the UNet), so several pictures
are drawn one after another; their feeds are built from the engine contract (``runtime.contract``). Picture k
of a run has seed ``seed + k`` and draws all its noise from streams of that seed (``runtime.noise``), so it
is the same picture whether drawn alone or k-th. ``Pipeline`` is safe to call from several threads: it holds
no per-call state (the unconditional-embedding cache is locked), ONNX Runtime sessions run concurrently, and
the TensorRT backend serialises its calls on its own lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from runtime.audio import DOWNMIX_MODES, load_audio, prepare_waveform
from runtime.backends import Backend, open_backend
from runtime.bundle import Bundle, Recipe
from runtime.contract import GUIDED_BATCH, PLACEHOLDER, SAMPLE_RATE, SINGLE_BATCH, engine_contracts
from runtime.errors import ConfigError
from runtime.noise import RANDOM_SEED, STEP_NOISE, NoiseStream, check_seed, draw_seed, initial_noise
from runtime.picture import to_pictures
from runtime.schedulers import SCHEDULER_NAMES, make_scheduler
from runtime.tokenizer import PromptTokenizer

Progress = Callable[[str, int, int], None]  # (stage, done, total)


FAST_RECIPE = {"scheduler": "lcm", "steps": 4, "guidance": 1.0}  # LCM-LoRA's: 4 steps, no classifier-free guidance
FAST_EXPORT_FLAGS = "--lcm-lora latent-consistency/lcm-lora-sdv1-5 --tiny-vae madebyollin/taesd --unet-batch 1"


@dataclass(frozen=True)
class GenerationOptions:
    """How to draw. Steps, guidance and scheduler left unset come from the bundle's recipe (DPM-Solver++ 2M,
    25 steps, guidance 7.5 for a plain bundle; LCM, 4 steps, guidance 1 for a fast one), or from the fast recipe
    with ``fast``; ``official()`` gives the paper's inference.

    The ``help`` of each field is also the ``audiotoken-rt generate`` option's help.
    """

    prompt: str | None = field(
        default=None, metadata={"help": "Prompt template holding <*> once, where the sound goes."}
    )
    negative_prompt: str = field(default="", metadata={"help": "Negative prompt (the unconditional branch)."})
    steps: int | None = field(
        default=None, metadata={"help": "Denoising steps (default: the bundle's recipe, 25; 4 for a fast bundle)."}
    )
    guidance: float | None = field(
        default=None,
        metadata={"help": "Classifier-free guidance scale, 1 or more (default: the bundle's, 7.5; 1 for a fast one)."},
    )
    scheduler: str | None = field(
        default=None,
        metadata={
            "help": "dpm++2m; pndm (the official inference, with 50 steps); ddim; euler; euler-a; "
            "lcm (1-8 steps, for bundles with LCM-LoRA fused). Default: the bundle's recipe."
        },
    )
    seed: int | None = field(
        default=None,
        metadata={
            "help": f"Seed of the first picture; picture k gets SEED+k. {RANDOM_SEED} or unset: a random seed (printed and recorded in the PNG)."
        },
    )
    num_images: int = field(default=1, metadata={"help": "Pictures per clip."})
    start: float = field(
        default=0.0,
        metadata={"help": "Where the 10 s window of each clip starts, in seconds (shorter rests are loop-tiled)."},
    )
    downmix: str = field(
        default="first",
        metadata={"help": "Several channels: 'first' keeps channel 0 (the official inference), 'mean' averages them."},
    )
    fast: bool = field(
        default=False,
        metadata={
            "help": "The fast recipe: LCM, 4 steps, guidance 1, the tiny decoder; needs a bundle exported with "
            "--lcm-lora and --tiny-vae (just export-fast)."
        },
    )

    @classmethod
    def official(cls, **overrides) -> GenerationOptions:
        """The official AudioToken inference: PNDM, 50 steps, guidance 7.5."""
        return replace(cls(scheduler="pndm", steps=50, guidance=7.5), **overrides)

    def resolved(self, recipe: Recipe) -> GenerationOptions:
        """These options, with steps, guidance and scheduler left unset taken from the fast recipe or ``recipe``."""
        defaults = (
            FAST_RECIPE
            if self.fast
            else {"scheduler": recipe.scheduler, "steps": recipe.steps, "guidance": recipe.guidance}
        )
        return replace(self, **{name: value for name, value in defaults.items() if getattr(self, name) is None})

    def check(self) -> None:
        """Refuse impossible options before any work, each with the value received (unset ones pass)."""
        if self.scheduler is not None and self.scheduler not in SCHEDULER_NAMES:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps is {self.steps}; it must be at least 1")
        if self.num_images < 1:
            raise ConfigError(f"num_images is {self.num_images}; it must be at least 1")
        if self.guidance is not None and not self.guidance >= 1.0:
            raise ConfigError(
                f"guidance {self.guidance} is below 1; classifier-free guidance needs >= 1 (7.5 is usual)"
            )
        if self.seed is not None and self.seed != RANDOM_SEED:
            check_seed(self.seed)
        if not (self.start >= 0 and np.isfinite(self.start)):
            raise ConfigError(f"start is {self.start} s; it must be a finite number of seconds, 0 or more")
        if self.downmix not in DOWNMIX_MODES:
            raise ConfigError(f"downmix {self.downmix!r}: expected one of {', '.join(DOWNMIX_MODES)}")

    def first_seed(self) -> int:
        """The seed of the first picture: the one asked for, or a fresh random one."""
        return draw_seed() if self.seed in (None, RANDOM_SEED) else self.seed


@dataclass
class Timings:
    """Wall time per stage in milliseconds, summed over repeats; ``unet`` (inside ``denoise``) counts the engine
    calls alone, ``unet_calls`` of them."""

    stages: dict[str, float] = field(default_factory=dict)
    unet_calls: int = 0

    def add(self, stage: str, started: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + (time.perf_counter() - started) * 1000


@dataclass
class Generation:
    """Pictures drawn from one clip, with what it takes to reproduce them."""

    pictures: list  # PIL images
    seeds: list[int]
    prompt: str
    options: GenerationOptions
    timings: Timings

    def metadata(self, index: int, clip: str) -> dict[str, object]:
        """PNG text chunks for picture ``index``."""
        o = self.options
        return {
            "clip": clip,
            "prompt": self.prompt,
            "negative_prompt": o.negative_prompt,
            "seed": self.seeds[index],
            "steps": o.steps,
            "scheduler": o.scheduler,
            "guidance": o.guidance,
            "start": o.start,
            "downmix": o.downmix,
        }


class Pipeline:
    """A bundle's engines behind a backend, chained as in the module docstring."""

    def __init__(self, bundle: Bundle, backend: Backend):
        self.bundle = bundle
        self.backend = backend
        self.contracts = engine_contracts(bundle.manifest.dims)
        self.tokenizer = PromptTokenizer.from_folder(bundle.tokenizer_dir)
        if self.tokenizer.placeholder_id != bundle.manifest.placeholder_id:
            raise ConfigError(
                f"{bundle.root}: tokenizer puts {PLACEHOLDER} at id {self.tokenizer.placeholder_id}, manifest says {bundle.manifest.placeholder_id}"
            )
        self.uncond_cache: dict[str, np.ndarray] = {}
        self.cache_lock = threading.Lock()

    @classmethod
    def open(cls, bundle: str | Path, backend: str = "onnxruntime", device: str = "cpu") -> Pipeline:
        """Open and verify a bundle, then a backend over it (``onnxruntime`` on ``cpu`` by default)."""
        opened = Bundle.open(bundle)
        return cls(opened, open_backend(opened, backend, device))

    def run(self, engine: str, *inputs: np.ndarray) -> np.ndarray:
        """One engine on its contract's inputs, in order; its one output."""
        contract = self.contracts[engine]
        return contract.output(self.backend.run(engine, contract.feeds(*inputs)))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """[1, 4, h, w]: the VAE decoder's input in the contract at the bundle's size."""
        return self.contracts["vae_decoder"].inputs[0].shape

    def prepare(self, options: GenerationOptions) -> tuple[GenerationOptions, str]:
        """``options`` completed from the bundle's recipe and checked against what the bundle holds, and the
        prompt they draw with (the bundle's template by default), checked with the negative prompt."""
        recipe, root = self.bundle.manifest.recipe, self.bundle.root
        if options.fast and not recipe.fast:
            raise ConfigError(
                f"{root}: --fast needs a bundle with LCM-LoRA fused, the tiny decoder and a UNet of batch 1; this one has "
                f"{'LCM-LoRA' if recipe.lora else 'no LoRA'}, the {recipe.decoder} decoder, "
                f"UNet batch {','.join(map(str, recipe.unet_batches))}",
                hint=f"export one with: audiotoken-rt export ... {FAST_EXPORT_FLAGS} (or: just export-fast)",
            )
        options = options.resolved(recipe)
        options.check()
        if options.guidance > 1 and GUIDED_BATCH not in recipe.unet_batches:
            raise ConfigError(
                f"{root}: guidance {options.guidance:g} needs the UNet at batch 2 (unconditional and conditional); "
                "this bundle holds batch 1 only",
                hint="use --guidance 1 (the fast recipe), or export the bundle with --unet-batch 1,2",
            )
        prompt = options.prompt or self.bundle.manifest.template
        self.tokenizer.encode(prompt, require_placeholder=True)
        self.tokenizer.encode(options.negative_prompt, require_placeholder=False)
        return options, prompt

    def guided(self, options: GenerationOptions) -> bool:
        """Whether the UNet runs both halves (classifier-free guidance), or the conditional one alone (guidance 1
        on a bundle that holds batch 1)."""
        return not (options.guidance == 1 and SINGLE_BATCH in self.bundle.manifest.recipe.unet_batches)

    # 2. audio -> token
    def encode_audio(self, waveform: np.ndarray) -> np.ndarray:
        """Waveform [160000] -> audio token [1, D]."""
        return self.run("audio_encoder", waveform[None])  # [1, D]

    # 3. prompt -> embeddings
    def embed(self, prompt: str, token: np.ndarray, require_placeholder: bool) -> np.ndarray:
        ids = self.tokenizer.encode(prompt, require_placeholder=require_placeholder)[None]  # [1, 77]
        return self.run("text_encoder", ids, token)  # [1, 77, D]

    def encode_prompt(self, token: np.ndarray, prompt: str, negative_prompt: str, guided: bool = True) -> np.ndarray:
        """Token [1, D] -> (uncond, cond) embeddings [2, 77, D], or cond alone [1, 77, D] when not ``guided``;
        a negative prompt without ``<*>`` is cached."""
        cond = self.embed(prompt, token, require_placeholder=True)  # [1, 77, D]
        if not guided:
            return cond.astype(np.float32)  # [1, 77, D]
        if PLACEHOLDER in negative_prompt:  # the negative prompt hears the clip too: nothing to cache
            uncond = self.embed(negative_prompt, token, require_placeholder=False)
        else:
            with self.cache_lock:
                uncond = self.uncond_cache.get(negative_prompt)
            if uncond is None:
                uncond = self.embed(negative_prompt, np.zeros_like(token), require_placeholder=False)
                with self.cache_lock:
                    self.uncond_cache[negative_prompt] = uncond
        return np.concatenate([uncond, cond]).astype(np.float32)  # [2, 77, D]

    # 4. noise -> latents
    def denoise(
        self,
        embeddings: np.ndarray,
        seed: int,
        options: GenerationOptions,
        progress: Progress | None = None,
        timings: Timings | None = None,
    ) -> np.ndarray:
        """Denoising of the seed's initial noise, classifier-free guided when ``embeddings`` hold both halves
        ([2, 77, D]; the conditional one alone, [1, 77, D], at guidance 1): -> latents [1, 4, h, w]."""
        m = self.bundle.manifest
        scheduler = make_scheduler(options.scheduler, m.scheduler_config, options.steps)
        latents = initial_noise(seed, self.latent_shape) * np.float32(scheduler.init_noise_sigma)  # [1, 4, h, w]
        history = None
        step_noise = NoiseStream(seed, STEP_NOISE)  # the fresh noise of stochastic steps (euler-a, lcm)
        halves = len(embeddings)  # 2: guided, 1: the conditional half alone
        total = len(scheduler.timesteps)
        for i, t in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(latents, i)  # [1, 4, h, w]
            started = time.perf_counter()
            noise = self.run(
                "unet", np.concatenate([model_input] * halves), np.array([t]), embeddings
            )  # [halves, 4, h, w]
            if timings is not None:
                timings.add("unet", started)
                timings.unet_calls += 1
            guided = noise  # [1, 4, h, w]
            if halves == 2:
                uncond, cond = noise[:1], noise[1:]
                guided = uncond + np.float32(options.guidance) * (cond - uncond)  # [1, 4, h, w]
            latents, history = scheduler.step(guided, i, latents, history, rng=step_noise)
            if progress:
                progress("denoise", i + 1, total)
        return latents

    # 5. latents -> image
    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        """Latents [1, 4, h, w] -> image [1, 3, 8h, 8w] in [-1, 1]."""
        return self.run("vae_decoder", latents / np.float32(self.bundle.manifest.vae_scaling_factor))  # [1, 3, H, W]

    def generate(
        self,
        clip: str | Path | np.ndarray,
        options: GenerationOptions = GenerationOptions(),
        *,
        sample_rate: int = SAMPLE_RATE,
    ) -> list:
        """``options.num_images`` PIL pictures for one clip (a file, or samples at ``sample_rate``)."""
        return self.draw(clip, options, sample_rate=sample_rate).pictures

    def draw(
        self,
        clip: str | Path | np.ndarray,
        options: GenerationOptions = GenerationOptions(),
        *,
        sample_rate: int = SAMPLE_RATE,
        progress: Progress | None = None,
    ) -> Generation:
        """``generate`` with what reproduces it: the seeds, the prompt, the options as completed from the bundle's
        recipe, stage timings; ``progress`` sees each stage."""
        options, prompt = self.prepare(options)
        report = progress or (lambda stage, done, total: None)
        timings = Timings()

        report("load_audio", 0, 1)
        started = time.perf_counter()
        if isinstance(clip, np.ndarray):
            waveform = prepare_waveform(clip, sample_rate, downmix=options.downmix, start=options.start)  # [160000]
        else:
            waveform = load_audio(clip, downmix=options.downmix, start=options.start)  # [160000]
        timings.add("load_audio", started)
        report("encode_audio", 0, 1)
        started = time.perf_counter()
        token = self.encode_audio(waveform)  # [1, D]
        timings.add("encode_audio", started)
        report("encode_prompt", 0, 1)
        started = time.perf_counter()
        embeddings = self.encode_prompt(token, prompt, options.negative_prompt, self.guided(options))  # [2 or 1, 77, D]
        timings.add("encode_prompt", started)

        first = options.first_seed()
        seeds = [first + k for k in range(options.num_images)]
        pictures = []
        for seed in seeds:
            started = time.perf_counter()
            latents = self.denoise(embeddings, seed, options, report, timings)  # [1, 4, h, w]
            timings.add("denoise", started)
            report("decode_latents", 0, 1)
            started = time.perf_counter()
            pictures += to_pictures(self.decode_latents(latents))
            timings.add("decode_latents", started)
        return Generation(pictures, seeds, prompt, options, timings)
