"""The lean, torch-free generation pipeline: sounds -> pictures by chaining a bundle's engines.

Data flow (docs/architecture.md), one stage method each, in this order:
1. ``load_audio``      any clip -> [160000] float32 (runtime.audio; a chosen 10 s window, loop-tiled)
2. ``encode_audio``    waveform [1, 160000] -> audio token [1, D]          (audio_encoder engine); a mix of
                       sounds is the weighted mean of their tokens (``listen``)
3. ``encode_prompt``   template ids + tokens -> [2, 77, D] (uncond, cond)  (text_encoder engine; uncond cached);
                       several sounds fill the placeholders <1>..<4> (token slots)
4. ``denoise``         seeded noise -> latents [1, 4, h, w]                 (unet engine, numpy scheduler step);
                       regions blend per-region predictions (``runtime.regions``), an edit starts from a
                       picture's noised latents and keeps its masked-out latents on the picture's trajectory
5. ``decode_latents``  latents / scaling factor -> [1, 3, 8h, 8w]          (vae_decoder engine)
6. ``to_pictures`` / ``save_png`` (runtime.picture); an edit is brought back to its picture's size and composited
   under the mask (runtime.source_picture)

Entry points: ``draw`` / ``generate`` (a sound, a mix, or ``stereo`` sides), ``draw_edit`` / ``edit`` (a picture
and a sound: ``EditOptions``), ``draw_compose`` / ``compose`` (several sounds: ``ComposeOptions``). Engines have
static shapes (batch 1, classifier-free guidance batched as 2 in the UNet; ``predict`` packs more rows into the
batches a bundle holds), so several pictures are drawn one after another; their feeds are built from the engine
contract (``runtime.contract``). Picture k of a run has seed ``seed + k`` and draws all its noise from streams of
that seed (``runtime.noise``), so it is the same picture whether drawn alone or k-th.

One value per call: a ``Stopwatch`` (the twin of the C++ one) goes down the stages of a call with its progress
callback; each stage runs in ``with watch.stage(name):``, which shows the stage to the progress as it starts and adds
its wall time to the stage's total as it ends; the denoising steps, the UNet calls and their time are counted on it,
and it comes back as the result's ``timings``. An entry point given none makes one without progress. ``Pipeline`` is
safe to call from several threads: the per-call state is the stopwatch, it holds none itself (the
unconditional-embedding cache, the last UNCOND_CACHE_SIZE negative prompts, is locked), ONNX Runtime sessions run
concurrently, and the TensorRT backend serialises its calls on its own lock.

Recipe: the options' scheduler, steps, guidance, eta and timestep spacing are laid over the bundle's recipe (with
``fast``, which only a bundle holding a distillation preset takes: ``Recipe.require_fast``, that preset's) as one
``runtime.sampling.Sampling`` (``GenerationOptions.sampling``); ``denoise`` builds its scheduler from it.

Bounds and numbers: the options are checked before any work (``GenerationOptions.check``: prompts of at most
MAX_PROMPT_BYTES, the recipe's values within ``runtime.sampling``'s bounds, ...; ``Pipeline.resolve`` builds the
schedule up front, so steps beyond the scheduler's most, ``runtime.schedulers.max_steps``, or a strength that leaves
no step are refused before any work; ``denoise`` builds it again for the loop, which costs little: the bound is
cached per config). Every stage's output is checked for NaN and Inf (``Pipeline.require_finite``: the token, the
text embeddings, an edit's picture latents, the latents after every denoising step, the decoded picture); one is a
NumericsError naming the stage, so a bundle whose weights went bad behind an unchanged file date never gives a
black picture.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from runtime.audio import DOWNMIX_MODES, load_audio, prepare_waveform
from runtime.backends import Backend, backend_ready, open_backend
from runtime.bundle import Bundle, Recipe
from runtime.contract import (
    AUDIO_ENCODER,
    GUIDED_BATCH,
    PLACEHOLDER,
    SAMPLE_RATE,
    SINGLE_BATCH,
    TEXT_ENCODER,
    UNET,
    VAE_DECODER,
    VAE_ENCODER,
    engine_contracts,
)
from runtime.errors import ConfigError, NumericsError, is_real, is_whole, shown
from runtime.noise import MAX_SEED, RANDOM_SEED, STEP_NOISE, NoiseStream, check_seed, draw_seed, initial_noise
from runtime.picture import to_pictures
from runtime.regions import DEFAULT_BLEND, LAYOUT_HELP, Box, parse_layout, region_weights, stereo_boxes
from runtime.sampling import DEFAULT, FAST, MAX_GUIDANCE, OFFICIAL, Sampling
from runtime.schedulers import ETA_SCHEDULERS, MAX_ETA, SCHEDULER_NAMES, SPACED_SCHEDULERS
from runtime.source_picture import (
    Framing,
    Mask,
    PictureSource,
    SourcePicture,
    composite,
    latent_mask,
    load_mask,
    load_picture,
    to_engine_image,
)
from runtime.tokenizer import SLOT, PromptTokenizer, check_slots

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Sound = str | Path | np.ndarray  # a clip file, or samples (at the call's sample_rate)
Sounds = Sound | Sequence[tuple[Sound, float]]  # one sound, or a mix: (sound, weight) pairs


# Bounds on the options, checked before any work (the steps' bound is the scheduler's: runtime.schedulers.max_steps).
MAX_PROMPT_BYTES = 1_000  # UTF-8 bytes of a prompt, before tokenizing; CLIP reads 77 tokens, ~300-400 bytes of English
MAX_NUM_IMAGES = 100  # pictures per sound: they are all held in memory until written
MAX_FEATHER = 256  # pixels of an edit's soft mask edge; the edge is grown one pixel per step
UNCOND_CACHE_SIZE = 64  # negative prompts whose embeddings [1, 77, D] are kept (least recently used dropped first)


@dataclass(frozen=True)
class GenerationOptions:
    """How to draw. The recipe's fields (scheduler, steps, guidance, eta, timestep spacing: those of
    ``runtime.sampling.Sampling``, by name) left unset come from the bundle's recipe (DPM-Solver++ 2M, 25 steps,
    guidance 7.5 for a plain bundle; its distillation preset's for a fast one, e.g. LCM, 4 steps, guidance 1), which
    ``fast`` asks to be a distillation preset's (``sampling``); ``official()`` gives the paper's inference.

    The ``help`` of each field is also the ``audiotoken-rt generate`` option's help.
    """

    prompt: str | None = field(
        default=None,
        metadata={
            "help": f"Prompt template holding <*> once, where the sound goes (at most {MAX_PROMPT_BYTES} bytes)."
        },
    )
    negative_prompt: str = field(
        default="",
        metadata={"help": f"Negative prompt (the unconditional branch; at most {MAX_PROMPT_BYTES} bytes)."},
    )
    steps: int | None = field(
        default=None,
        metadata={
            "help": f"Denoising steps (default: the bundle's recipe, {DEFAULT.steps}; {FAST.sampling.steps} for a fast "
            "bundle): at most one per training timestep (1000; one or two fewer on some schedules, and the error says "
            "so; lcm, tcd: 50)."
        },
    )
    guidance: float | None = field(
        default=None,
        metadata={
            "help": f"Classifier-free guidance scale, 1 to {MAX_GUIDANCE:g} (default: the bundle's, {DEFAULT.guidance:g}; "
            f"{FAST.sampling.guidance:g} for a fast one)."
        },
    )
    scheduler: str | None = field(
        default=None,
        metadata={
            "help": "dpm++2m; pndm (the official inference, with 50 steps); ddim; euler; euler-a; "
            "lcm (1-8 steps, for bundles with LCM-LoRA fused); tcd (1-8 steps, --eta its gamma, for bundles with "
            "a TCD or Hyper-SD LoRA fused). Default: the bundle's recipe."
        },
    )
    eta: float | None = field(
        default=None,
        metadata={
            "help": f"{' and '.join(ETA_SCHEDULERS)} only: fresh noise per step, 0 (deterministic) to {MAX_ETA:g} "
            "(DDIM: DDPM's variance; TCD: its gamma, 0.3 usual). Default: the recipe's when drawing with its "
            "scheduler, else 0."
        },
    )
    timestep_spacing: str | None = field(
        default=None,
        metadata={
            "help": "Where the steps fall among the training timesteps: leading, trailing (the first at the last "
            "one: for few steps) or linspace; not for "
            f"{', '.join(name for name in SCHEDULER_NAMES if name not in SPACED_SCHEDULERS)}. Default: the recipe's "
            "when drawing with its scheduler, else the bundle's scheduler config's."
        },
    )
    seed: int | None = field(
        default=None,
        metadata={
            "help": f"Seed of the first picture; picture k gets SEED+k. {RANDOM_SEED} or unset: a random seed (printed and recorded in the PNG)."
        },
    )
    num_images: int = field(default=1, metadata={"help": f"Pictures per clip (1 to {MAX_NUM_IMAGES})."})
    start: float = field(
        default=0.0,
        metadata={"help": "Where the 10 s window of each clip starts, in seconds (shorter rests are loop-tiled)."},
    )
    downmix: str = field(
        default="first",
        metadata={
            "help": "Several channels: 'first' keeps channel 0 (the official inference), 'mean' averages them, "
            "'second' keeps channel 1."
        },
    )
    fast: bool = field(
        default=False,
        metadata={
            "help": "The bundle's distillation preset: the recipe of the LoRA fused into it (e.g. "
            f"{FAST.sampling.describe()}), the tiny decoder. It needs a bundle exported for it: audiotoken-rt "
            f"export ... {FAST.export_flags} [--preset NAME]"
        },
    )
    stereo: bool = field(
        default=False,
        metadata={
            "help": "Place a stereo clip's sides: the left and right channels each give a token, drawn on their side "
            "of the picture, widths following the channels' energies over the 10 s window; equal channels (or mono) "
            "give the plain picture."
        },
    )

    @classmethod
    def official(cls, **overrides) -> GenerationOptions:
        """The official AudioToken inference: PNDM, 50 steps, guidance 7.5 (``runtime.sampling.OFFICIAL``)."""
        return replace(cls(**asdict(OFFICIAL)), **overrides)

    def sampling(self, recipe: Recipe) -> Sampling:
        """The recipe these options draw with: the values they set laid over ``recipe``'s sampling
        (``Sampling.over``), which is its distillation preset's in a bundle ``fast`` draws (``Pipeline.resolve``
        refuses ``fast`` for any other)."""
        return recipe.sampling.over(self)

    def resolved(self, recipe: Recipe) -> GenerationOptions:
        """These options with every field of the recipe they draw with set (``sampling``; the timestep spacing None
        where it is the bundle's scheduler config's)."""
        return replace(self, **asdict(self.sampling(recipe)))

    def check(self) -> None:
        """Refuse impossible options before any work, each by its option's name with the value received (unset ones
        pass): the recipe's by ``Sampling.check_given``. The most steps depend on the scheduler and the bundle:
        ``Pipeline.resolve`` checks them."""
        Sampling.check_given(self)
        check_text("--prompt", self.prompt)
        check_text("--negative-prompt", self.negative_prompt)
        if not is_whole(self.num_images, 1, MAX_NUM_IMAGES):
            raise ConfigError(
                f"--num-images is {shown(self.num_images)}; it must be a whole number from 1 to {MAX_NUM_IMAGES}"
            )
        if self.seed is not None and self.seed != RANDOM_SEED:
            check_seed(self.seed)
            if self.seed > MAX_SEED - self.num_images + 1:
                raise ConfigError(
                    f"--seed {self.seed} with --num-images {self.num_images}: picture k takes seed {self.seed}+k, "
                    f"past the largest seed {MAX_SEED}"
                )
        if not (is_real(self.start, 0.0, np.inf) and np.isfinite(self.start)):
            raise ConfigError(f"--start is {shown(self.start)} s; it must be a finite number of seconds, 0 or more")
        if self.downmix not in DOWNMIX_MODES:
            raise ConfigError(f"--downmix {self.downmix!r}: expected one of {', '.join(DOWNMIX_MODES)}")

    def first_seed(self) -> int:
        """The seed of the first picture: the one asked for, or a fresh random one."""
        return draw_seed() if self.seed in (None, RANDOM_SEED) else self.seed

    def schedule_strength(self) -> float:
        """The img2img strength the schedule is built for: 1, a drawing from noise."""
        return 1.0


@dataclass(frozen=True)
class EditOptions(GenerationOptions):
    """How to edit a picture with a sound (SDEdit, optionally masked): the drawing options and how far to move.

    ``strength`` 0 gives the picture back unchanged, 1 draws from pure noise (as ``generate``); in between the
    scheduler starts that fraction of the way into its schedule from the picture's noised latents (diffusers'
    img2img; LCM and TCD keep their step count and start lower). The ``help`` of each field is the ``edit``
    option's help.
    """

    strength: float = field(
        default=0.6,
        metadata={"help": "How far the picture may move, 0-1: 0 returns it unchanged, 1 draws anew from noise."},
    )
    feather: int = field(
        default=8,
        metadata={
            "help": f"With --mask: the soft edge, in pixels of the picture (0 to {MAX_FEATHER}), inside the mask's "
            "white region."
        },
    )

    def schedule_strength(self) -> float:
        """The edit's strength (0 counts as 1: an edit of strength 0 runs no step at all)."""
        return self.strength or 1.0

    def check(self) -> None:
        super().check()
        if not is_real(self.strength, 0.0, 1.0):
            raise ConfigError(
                f"--strength is {shown(self.strength)}; it must be between 0 (keep the picture) and 1 (draw anew)",
                hint="0.4-0.7 changes a picture while keeping its layout",
            )
        if not is_whole(self.feather, 0, MAX_FEATHER):
            raise ConfigError(
                f"--feather is {shown(self.feather)} pixels; it must be a whole number from 0 (a hard edge) to {MAX_FEATHER}"
            )


@dataclass(frozen=True)
class ComposeOptions(GenerationOptions):
    """How to draw several sounds in one picture. Without ``layout``, one prompt holds them all at ``<1>``..``<K>``
    (default: the bundle's template with ``<*>`` read as ``<1> and <2> ...``). With ``layout``, sound k gets box k
    of the picture and the one-sound prompt (``<*>``) there, ``background`` (a prompt, no sound) what the boxes
    leave; the regions' noise predictions are blended under soft masks (``runtime.regions``)."""

    layout: str | None = field(default=None, metadata={"help": f"Give each sound a region: {LAYOUT_HELP}."})
    background: str | None = field(
        default=None,
        metadata={"help": "With --layout: the prompt (no sound) for what the regions leave, e.g. 'a park at dusk'."},
    )
    blend: float = field(
        default=DEFAULT_BLEND,
        metadata={"help": "With --layout: the soft edge between regions, a fraction of the picture's shorter side."},
    )

    def check(self) -> None:
        super().check()
        if not (is_real(self.blend, 0.0, 1.0) and self.blend > 0):
            raise ConfigError(
                f"--blend is {shown(self.blend)}; it must be in (0, 1] (a fraction of the picture's side)"
            )
        check_text("--background", self.background)
        if self.background is not None and self.layout is None:
            raise ConfigError("--background needs --layout (the regions it surrounds)")
        if self.layout is not None:
            parse_layout(self.layout)


def check_text(flag: str, text: str | None) -> None:
    """A prompt-like option (unset passes): text that UTF-8 can write, of at most MAX_PROMPT_BYTES, refused before
    the tokenizer sees it."""
    if text is None:
        return
    if not isinstance(text, str):
        raise ConfigError(f"{flag} is {type(text).__name__}; it must be text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # a lone surrogate: undecodable bytes on the command line
        raise ConfigError(
            f"{flag} is not valid text: character {e.start} is not Unicode ({text[e.start]!r})",
            hint="pass the prompt as UTF-8",
        ) from e
    if size > MAX_PROMPT_BYTES:
        raise ConfigError(
            f"{flag} is {size} bytes long; it may hold at most {MAX_PROMPT_BYTES} bytes",
            hint="CLIP reads at most 77 tokens (about 300-400 bytes of English): shorten it",
        )


@dataclass(frozen=True)
class EditSource:
    """What an edit starts from and keeps: the picture's latents (times the scaling factor), the latent mask
    (1 = may change; None: everything may), and the strength."""

    latents: np.ndarray  # [1, 4, h, w]
    mask: np.ndarray | None  # [1, 1, h, w] in {0, 1}
    strength: float


def sound_label(sounds: Sounds) -> str:
    """A sound, or a mix, as PNG metadata and file names write it: 'dog.wav' or 'dog.wav:0.7,rain.wav:0.3'."""

    def name(sound: Sound) -> str:
        return "samples" if isinstance(sound, np.ndarray) else Path(sound).name

    if is_mix(sounds):
        return ",".join(f"{name(sound)}:{weight:g}" for sound, weight in sounds)
    return name(sounds)


def is_mix(sounds: Sounds) -> bool:
    return not isinstance(sounds, (str, Path, np.ndarray))


def mix_weights(weights: Sequence[float]) -> np.ndarray:
    """A mix's weights, normalised to sum 1; refused when they are not finite or do not sum to a positive number
    (single weights may be negative: a sound taken away)."""
    values = np.asarray(weights, dtype=np.float64)  # [K]
    if len(values) == 0 or not np.all(np.isfinite(values)) or not values.sum() > 0:
        raise ConfigError(
            f"mix weights {', '.join(f'{w:g}' for w in values) or '(none)'} must be finite and sum to a positive number",
            hint="e.g. --mix dog.wav:0.7,rain.wav:0.3",
        )
    return values / values.sum()


@dataclass
class Stopwatch:
    """One call's progress and what it reports: wall time per stage in milliseconds (summed over repeats), the UNet
    calls and the denoising steps. Every entry point (``draw``, ``draw_edit``, ``draw_compose``) takes one, or makes
    one without progress, passes it down its stages and returns it as the result's ``timings``.

    It is the Python twin of the C++ ``Stopwatch`` (runtime/cpp/src/pipeline.cpp), hence the name: where C++ opens a
    scope with ``Stopwatch watch(stage_ms, "decode_latents");``, Python writes ``with watch.stage("decode_latents"):``,
    and either adds the scope's wall time to the stage's total as it ends, also when it ends by an exception. Python's
    also shows the stage to ``progress`` as it starts (the denoising steps as they finish, ``step``). ``unet`` (inside
    ``denoise``, timed alone and not shown) counts the engine calls, ``unet_calls`` of them over ``steps`` denoising
    steps (several calls per step for regions). A stopwatch belongs to one call: two threads must not share one."""

    progress: Progress | None = field(default=None, repr=False, compare=False)  # (stage, done, total)
    stages: dict[str, float] = field(default_factory=dict)
    unet_calls: int = 0
    steps: int = 0

    @contextmanager
    def stage(self, name: str, total: int = 1) -> Iterator[None]:
        """Stage ``name`` of the call: ``progress`` sees (name, 0, total) as it starts, and its wall time is added to
        ``stages[name]`` as it ends."""
        self.report(name, 0, total)
        with self.timed(name):
            yield

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """The body's wall time added to ``stages[name]`` as it ends, also when it raises; nothing is shown (a part of
        a stage, as the UNet calls of ``denoise``). ``stages`` lists the stages in the order they first started."""
        self.stages.setdefault(name, 0.0)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + (time.perf_counter() - started) * 1000

    def step(self, done: int, total: int) -> None:
        """Denoising step ``done`` of ``total`` finished: counted, and shown as ("denoise", done, total)."""
        self.steps += 1
        self.report("denoise", done, total)

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


@dataclass
class Generation:
    """Pictures drawn from one clip, with what it takes to reproduce them."""

    pictures: list  # PIL images
    seeds: list[int]
    prompt: str
    options: GenerationOptions
    timings: Stopwatch
    sounds: str = ""  # sound_label: the clip, or the mix with its weights
    edited: dict[str, object] = field(default_factory=dict)  # an edit's source picture, strength and mask

    def metadata(self, index: int, clip: str | None = None) -> dict[str, object]:
        """PNG text chunks for picture ``index`` (``clip`` overrides the recorded sound label)."""
        o = self.options
        return {
            "clip": clip or self.sounds,
            "prompt": self.prompt,
            "negative_prompt": o.negative_prompt,
            "seed": self.seeds[index],
            "steps": o.steps,
            "scheduler": o.scheduler,
            "guidance": o.guidance,
            "eta": o.eta,
            **({"timestep_spacing": o.timestep_spacing} if o.timestep_spacing is not None else {}),
            "start": o.start,
            "downmix": o.downmix,
            **self.edited,
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
        if len(self.tokenizer.slot_ids) < bundle.manifest.token_slots:
            raise ConfigError(
                f"{bundle.root}: the manifest says {bundle.manifest.token_slots} token slots, the tokenizer holds "
                f"{len(self.tokenizer.slot_ids)} placeholders",
                hint=f"rebuild it: {bundle.manifest.rebuild_command(bundle.root)}",
            )
        self.uncond_cache: OrderedDict[str, np.ndarray] = OrderedDict()  # least recently used first
        self.cache_lock = threading.Lock()

    def require_finite(self, values: np.ndarray, stage: str, what: str) -> np.ndarray:
        """``values`` when every one is finite; else the NumericsError naming the stage and the full check of the
        bundle's files (``info --verify full``: the open-time check trusts a file whose size and date are unchanged),
        so that NaN or Inf is never drawn on."""
        if np.isfinite(values).all():
            return values
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        raise NumericsError(
            f"{stage}: {bad} of {values.size} values of {what} are NaN or Inf, so no picture is made; the bundle's "
            f"weights may be damaged: check them with `audiotoken-rt info {shlex.quote(str(self.bundle.root))} "
            "--verify full`",
            hint="if every file verifies, the numbers overflowed: try fewer --steps or a lower --guidance",
        )

    @classmethod
    def open(cls, bundle: str | Path, backend: str = "onnxruntime", device: str = "cpu") -> Pipeline:
        """Open and verify a bundle, then a backend over it (``onnxruntime`` on ``cpu`` by default); a backend that
        cannot start here is refused first, before the bundle's files are hashed."""
        backend_ready(backend, device)
        opened = Bundle.open(bundle)
        return cls(opened, open_backend(opened, backend, device))

    def run(self, engine: str, *inputs: np.ndarray) -> np.ndarray:
        """One engine on its contract's inputs, in order; its one output."""
        contract = self.contracts[engine]
        return contract.output(self.backend.run(engine, contract.feeds(*inputs)))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """[1, 4, h, w]: the VAE decoder's input in the contract at the bundle's size."""
        return self.contracts[VAE_DECODER].inputs[0].shape

    def resolve(self, options: GenerationOptions) -> GenerationOptions:
        """``options`` completed from the bundle's recipe and checked against what the bundle holds."""
        recipe, root = self.bundle.manifest.recipe, self.bundle.root
        if options.fast:
            recipe.require_fast(root)
        options = options.resolved(recipe)
        options.check()
        if options.guidance > 1 and GUIDED_BATCH not in recipe.unet_batches:
            raise ConfigError(
                f"{root}: --guidance {options.guidance:g} needs the UNet at batch 2 (unconditional and conditional); "
                "this bundle holds batch 1 only",
                hint="use --guidance 1 (the fast recipe), or export the bundle with --unet-batch 1,2",
            )
        # Built here first, so steps beyond the scheduler's most or a strength that leaves no step fail before any work
        # (strength 0 runs no scheduler: the picture comes back as it is).
        options.sampling(recipe).make_scheduler(self.bundle.manifest.scheduler_config, options.schedule_strength())
        self.check_prompt("--negative-prompt", options.negative_prompt)
        return options

    def check_prompt(self, flag: str, text: str) -> None:
        """A prompt with no sound of its own (``--negative-prompt``, ``--background``) tokenized up front; a prompt
        CLIP cannot take is refused by that option's name."""
        try:
            self.tokenizer.encode(text, require_placeholder=False)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}", hint=exc.hint) from exc

    def prepare(self, options: GenerationOptions) -> tuple[GenerationOptions, str]:
        """``resolve``d options and the one-sound prompt they draw with (the bundle's template by default), checked."""
        options = self.resolve(options)
        prompt = options.prompt or self.bundle.manifest.template
        self.tokenizer.encode(prompt, require_placeholder=True)
        return options, prompt

    def prepare_compose(self, options: ComposeOptions, sounds: int) -> tuple[ComposeOptions, str]:
        """``resolve``d options and the prompt of a composition of ``sounds`` sounds, checked: without a layout, one
        prompt holding <1>..<sounds> (default: the bundle's template, ``<*>`` read as '<1> and <2> ...'); with one,
        the one-sound prompt of every region, as many boxes as sounds, and boxes that cover the picture unless a
        background takes the rest."""
        options = self.resolve(options)
        template = self.bundle.manifest.template
        if options.layout is None:
            together = " and ".join(f"<{k}>" for k in range(1, sounds + 1))
            prompt = options.prompt or template.replace(PLACEHOLDER, together)
            check_slots(prompt, sounds, self.bundle.manifest.token_slots)
            self.tokenizer.encode(prompt, require_placeholder=False)
            return options, prompt
        boxes = parse_layout(options.layout)
        if len(boxes) != sounds:
            raise ConfigError(
                f"--layout {options.layout!r} has {len(boxes)} region{'s' * (len(boxes) != 1)} for {sounds} sound{'s' * (sounds != 1)}",
                hint="give one region per clip, in the clips' order",
            )
        prompt = options.prompt or template
        self.tokenizer.encode(prompt, require_placeholder=True)
        if options.background is not None:
            self.check_prompt("--background", options.background)
        h, w = self.latent_shape[2:]  # a layout leaving part of the picture to no sound is refused before any sound
        region_weights(boxes, (h, w), background=options.background is not None, blend=options.blend)
        return options, prompt

    def guided(self, options: GenerationOptions) -> bool:
        """Whether the UNet runs both halves (classifier-free guidance), or the conditional one alone (guidance 1
        on a bundle that holds batch 1)."""
        return not (options.guidance == 1 and SINGLE_BATCH in self.bundle.manifest.recipe.unet_batches)

    # 2. audio -> token
    def encode_audio(self, waveform: np.ndarray) -> np.ndarray:
        """Waveform [160000] -> audio token [1, D]."""
        return self.require_finite(self.run(AUDIO_ENCODER, waveform[None]), "encode_audio", "the audio token")  # [1, D]

    # 3. prompt -> embeddings
    def slot_feed(self, tokens: np.ndarray) -> np.ndarray:
        """Sound tokens [K, D] -> the text engine's token input: [1, S, D] with unused slots zero, or [1, D] for a
        bundle of one slot (from before multi-sound prompts)."""
        slots = self.bundle.manifest.token_slots
        if len(tokens) > slots:
            check_slots("", len(tokens), slots)  # the one-line refusal, naming the re-export
        if slots == 1:
            return tokens[:1]  # [1, D]
        feed = np.zeros((1, slots, tokens.shape[1]), np.float32)  # [1, S, D]
        feed[0, : len(tokens)] = tokens
        return feed

    def embed(self, prompt: str, tokens: np.ndarray, require_placeholder: bool) -> np.ndarray:
        """A prompt with its sounds' tokens [K, D] at <1>..<K> (``<*>`` is <1>) -> embeddings [1, 77, D]."""
        ids = self.tokenizer.encode(prompt, require_placeholder=require_placeholder)[None]  # [1, 77]
        embeddings = self.run(TEXT_ENCODER, ids, self.slot_feed(tokens))  # [1, 77, D]
        return self.require_finite(embeddings, "encode_prompt", "the text embeddings")

    def unconditional(self, negative_prompt: str, tokens: np.ndarray) -> np.ndarray:
        """The negative prompt's embeddings [1, 77, D]; cached unless it holds a sound (a placeholder). The cache keeps
        the UNCOND_CACHE_SIZE negative prompts used last."""
        if SLOT.search(negative_prompt):  # the negative prompt hears the sounds too: nothing to cache
            return self.embed(negative_prompt, tokens, require_placeholder=False)
        with self.cache_lock:
            uncond = self.uncond_cache.get(negative_prompt)
            if uncond is not None:
                self.uncond_cache.move_to_end(negative_prompt)
        if uncond is None:
            uncond = self.embed(negative_prompt, np.zeros_like(tokens[:1]), require_placeholder=False)
            with self.cache_lock:
                self.uncond_cache[negative_prompt] = uncond
                self.uncond_cache.move_to_end(negative_prompt)
                while len(self.uncond_cache) > UNCOND_CACHE_SIZE:
                    self.uncond_cache.popitem(last=False)
        return uncond

    def encode_prompt(self, token: np.ndarray, prompt: str, negative_prompt: str, guided: bool = True) -> np.ndarray:
        """Tokens [K, D] (one per sound; [1, D] for one) -> (uncond, cond) embeddings [2, 77, D], or cond alone
        [1, 77, D] when not ``guided``."""
        cond = self.embed(prompt, token, require_placeholder=len(token) == 1)  # [1, 77, D]
        if not guided:
            return cond.astype(np.float32)  # [1, 77, D]
        return np.concatenate([self.unconditional(negative_prompt, token), cond]).astype(np.float32)  # [2, 77, D]

    # 4. noise -> latents
    def denoise(
        self,
        embeddings: np.ndarray,
        seed: int,
        options: GenerationOptions,
        watch: Stopwatch,
        source: EditSource | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stage 4, timed: denoising of the seed's initial noise, classifier-free guided when
        ``self.guided(options)`` (``embeddings`` [1 + C, 77, D]: the unconditional row, then the conditional ones;
        [C, 77, D] at guidance 1 on a bundle holding batch 1) -> latents [1, 4, h, w]. With C > 1 conditional rows
        (regions), their noise predictions are blended under ``weights`` [C, 1, h, w] (summing to one) before
        guidance, the unconditional prediction shared (MultiDiffusion-style; ``runtime.regions``).

        With a ``source`` (an edit), below strength 1 the loop starts from the source's latents noised (by the same
        initial noise) to the first remaining step; with a mask, after every step the kept region takes the source's
        latents noised to the next step (the source itself after the last), as diffusers' inpainting does with a
        plain UNet (blended latent diffusion). Latents holding NaN or Inf after a step are a NumericsError."""
        m = self.bundle.manifest
        strength = 1.0 if source is None else source.strength
        scheduler = options.sampling(m.recipe).make_scheduler(m.scheduler_config, strength)
        total = len(scheduler.timesteps)
        with watch.stage("denoise", total):
            noise = initial_noise(seed, self.latent_shape)  # [1, 4, h, w]
            if strength < 1.0:
                latents = scheduler.add_noise(source.latents, noise, 0)  # [1, 4, h, w]
            else:
                latents = noise * np.float32(scheduler.init_noise_sigma)  # [1, 4, h, w]
            history = None
            step_noise = NoiseStream(seed, STEP_NOISE)  # the fresh noise of stochastic steps (euler-a, lcm, ddim's eta)
            guided = self.guided(options)
            for i, t in enumerate(scheduler.timesteps):
                model_input = scheduler.scale_model_input(latents, i)  # [1, 4, h, w]
                noise_pred = self.predict(model_input, t, embeddings, watch)  # [1 + C or C, 4, h, w]
                conds = noise_pred[1:] if guided else noise_pred  # [C, 4, h, w]
                cond = conds[-1:]  # [1, 4, h, w]; the blend below is exact when every region predicts the same
                for region in range(len(conds) - 1):
                    cond = cond + weights[region] * (conds[region : region + 1] - conds[-1:])  # [1, 4, h, w]
                if guided:
                    uncond = noise_pred[:1]  # [1, 4, h, w]
                    cond = uncond + np.float32(options.guidance) * (cond - uncond)  # [1, 4, h, w]
                latents, history = scheduler.step(cond, i, latents, history, rng=step_noise)
                if source is not None and source.mask is not None:
                    kept = scheduler.add_noise(source.latents, noise, i + 1) if i + 1 < total else source.latents
                    latents = (1 - source.mask) * kept + source.mask * latents  # [1, 4, h, w]
                self.require_finite(latents, "denoise", f"the latents after step {i + 1} of {total}")
                watch.step(i + 1, total)
        return latents

    def predict(self, model_input: np.ndarray, t, embeddings: np.ndarray, watch: Stopwatch) -> np.ndarray:
        """The UNet's noise prediction for each row of ``embeddings`` [N, 77, D] at ``model_input`` [1, 4, h, w]:
        -> [N, 4, h, w], in as few calls as the batches the bundle holds allow (the last call padded by repeating
        its last row where the bundle lacks a smaller batch); each call timed and counted on ``watch``."""
        held = self.bundle.manifest.recipe.unet_batches
        predictions = []
        for first in range(0, len(embeddings), max(held)):
            rows = embeddings[first : first + max(held)]  # [n, 77, D]
            batch = min((b for b in held if b >= len(rows)), default=max(held))
            padded = np.concatenate([rows, np.repeat(rows[-1:], batch - len(rows), axis=0)])  # [batch, 77, D]
            batched = np.repeat(model_input, batch, axis=0)  # [batch, 4, h, w]
            with watch.timed(UNET):
                noise = self.run(UNET, batched, np.array([t]), padded)  # [batch, 4, h, w]
            watch.unet_calls += 1
            predictions.append(noise[: len(rows)])
        return np.concatenate(predictions)  # [N, 4, h, w]

    # 5. latents -> image
    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        """Latents [1, 4, h, w] -> image [1, 3, 8h, 8w] in [-1, 1]."""
        image = self.run(VAE_DECODER, latents / np.float32(self.bundle.manifest.vae_scaling_factor))  # [1, 3, H, W]
        return self.require_finite(image, "decode_latents", "the picture")

    # edit: picture -> latents
    def encode_picture(self, image: np.ndarray) -> np.ndarray:
        """Image [1, 3, 8h, 8w] in [-1, 1] -> latents [1, 4, h, w], times the scaling factor (the VAE's posterior
        mean, or the tiny autoencoder's latents), as diffusers' img2img starts from."""
        latents = self.run(VAE_ENCODER, image) * np.float32(self.bundle.manifest.vae_scaling_factor)  # [1, 4, h, w]
        return self.require_finite(latents, "encode_picture", "the picture's latents")

    def listen(self, sounds: Sounds, options: GenerationOptions, sample_rate: int, watch: Stopwatch) -> np.ndarray:
        """Stages 1-2: a sound, or a mix of (sound, weight) pairs, -> audio token [1, D]: a mix is the weighted mean
        of its sounds' tokens (weights normalised to sum 1)."""
        pairs = list(sounds) if is_mix(sounds) else [(sounds, 1.0)]
        weights = mix_weights([weight for _, weight in pairs])  # [K]
        tokens = []
        for sound, _ in pairs:
            waveform = self.hear(sound, options.downmix, options.start, sample_rate, watch)  # [160000]
            with watch.stage("encode_audio"):
                tokens.append(self.encode_audio(waveform))  # [1, D]
        return np.tensordot(weights.astype(np.float32), np.stack(tokens), axes=1)  # [1, D]

    def hear(self, sound: Sound, downmix: str, start: float, sample_rate: int, watch: Stopwatch) -> np.ndarray:
        """Stage 1, timed: a clip file, or samples at ``sample_rate``, -> waveform [160000]."""
        with watch.stage("load_audio"):
            if isinstance(sound, np.ndarray):
                return prepare_waveform(sound, sample_rate, downmix=downmix, start=start)  # [160000]
            return load_audio(sound, downmix=downmix, start=start)  # [160000]

    def generate(
        self,
        sounds: Sounds,
        options: GenerationOptions = GenerationOptions(),
        *,
        sample_rate: int = SAMPLE_RATE,
    ) -> list:
        """``options.num_images`` PIL pictures for a sound (a file, or samples at ``sample_rate``) or a mix of
        (sound, weight) pairs."""
        return self.draw(sounds, options, sample_rate=sample_rate).pictures

    def draw(
        self,
        sounds: Sounds,
        options: GenerationOptions = GenerationOptions(),
        *,
        sample_rate: int = SAMPLE_RATE,
        watch: Stopwatch | None = None,
    ) -> Generation:
        """``generate`` with what reproduces it: the seeds, the prompt, the options as completed from the bundle's
        recipe, and the call's ``watch`` (its progress sees each stage; a fresh one, without progress, if None)
        holding the stage timings."""
        options, prompt = self.prepare(options)
        watch = Stopwatch() if watch is None else watch
        if options.stereo:
            return self.draw_stereo(sounds, options, prompt, sample_rate, watch)
        embeddings = self.conditioning(sounds, options, prompt, sample_rate, watch)  # [2 or 1, 77, D]
        return self.draw_seeds(embeddings, options, prompt, watch, sound_label(sounds))

    def edit(
        self,
        picture: PictureSource,
        sounds: Sounds,
        options: EditOptions = EditOptions(),
        *,
        mask: PictureSource | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> list:
        """``options.num_images`` edits of ``picture`` (a path, a PIL image or an array) by a sound or a mix, at the
        picture's own size; with a ``mask`` (white = may change, black = keep) the kept pixels stay the picture's."""
        return self.draw_edit(picture, sounds, options, mask=mask, sample_rate=sample_rate).pictures

    def draw_edit(
        self,
        picture: PictureSource | SourcePicture,
        sounds: Sounds,
        options: EditOptions = EditOptions(),
        *,
        mask: PictureSource | Mask | None = None,
        sample_rate: int = SAMPLE_RATE,
        watch: Stopwatch | None = None,
    ) -> Generation:
        """``edit`` with what reproduces it (as ``draw``), the source picture, strength and mask recorded.

        The picture is fitted to the bundle's size (``runtime.source_picture.Framing``: scaled to fit, margins
        mirrored), encoded, noised to the strength and denoised with the sound's prompt; the result is brought back
        to the picture's size and framing and composited with it under the mask (feathered by ``options.feather``)."""
        options, prompt = self.prepare(options)
        source = picture if isinstance(picture, SourcePicture) else load_picture(picture)
        if mask is not None and not isinstance(mask, Mask):
            mask = load_mask(mask, source.size)
        watch = Stopwatch() if watch is None else watch
        edited: dict[str, object] = {
            "source": source.name,
            "source_sha256": source.sha256,
            "strength": options.strength,
            **({"mask": mask.name, "mask_sha256": mask.sha256, "feather": options.feather} if mask else {}),
        }
        seeds = self.seeds(options)
        embeddings = self.conditioning(sounds, options, prompt, sample_rate, watch)  # [2 or 1, 77, D]
        if options.strength == 0:  # nothing may move: the picture itself, exactly (its sounds checked all the same)
            kept = composite(source.rgb, source)
            return Generation([kept.copy() for _ in seeds], seeds, prompt, options, watch, sound_label(sounds), edited)
        height, width = self.latent_shape[2:]
        framing = Framing.fit(source.size, (width * self.vae_factor, height * self.vae_factor))
        with watch.stage("encode_picture"):
            start = EditSource(
                self.encode_picture(to_engine_image(framing.to_engine(source.rgb))),  # [1, 4, h, w]
                latent_mask(framing.mask_to_engine(mask.may_change), (height, width)) if mask else None,  # [1, 1, h, w]
                options.strength,
            )
        pictures = []
        for seed in seeds:
            latents = self.denoise(embeddings, seed, options, watch, start)  # [1, 4, h, w]
            with watch.stage("decode_latents"):
                image = self.decode_latents(latents)  # [1, 3, H, W]
            (drawn,) = to_pictures(image)
            back = framing.from_engine(np.asarray(drawn))  # [H, W, 3] uint8 at the picture's size
            pictures.append(composite(back, source, mask.may_change if mask else None, options.feather))
        return Generation(pictures, seeds, prompt, options, watch, sound_label(sounds), edited)

    def compose(
        self, sounds: Sequence[Sounds], options: ComposeOptions = ComposeOptions(), *, sample_rate: int = SAMPLE_RATE
    ) -> list:
        """``options.num_images`` pictures holding several sounds (each a clip, samples, or a mix): in one prompt at
        <1>..<K>, or each in its region of ``options.layout``."""
        return self.draw_compose(sounds, options, sample_rate=sample_rate).pictures

    def draw_compose(
        self,
        sounds: Sequence[Sounds],
        options: ComposeOptions = ComposeOptions(),
        *,
        sample_rate: int = SAMPLE_RATE,
        watch: Stopwatch | None = None,
    ) -> Generation:
        """``compose`` with what reproduces it (as ``draw``); the metadata names every sound and region."""
        sounds = list(sounds)
        if not sounds:
            raise ConfigError("compose needs at least one sound", hint="name the clips, one per placeholder or region")
        options, prompt = self.prepare_compose(options, len(sounds))
        watch = Stopwatch() if watch is None else watch
        tokens = np.concatenate([self.listen(sound, options, sample_rate, watch) for sound in sounds])  # [K, D]
        label = " | ".join(sound_label(sound) for sound in sounds)
        if options.layout is None:
            with watch.stage("encode_prompt"):
                embeddings = self.encode_prompt(tokens, prompt, options.negative_prompt, self.guided(options))
            return self.draw_seeds(embeddings, options, prompt, watch, label)  # embeddings [2 or 1, 77, D]
        boxes = parse_layout(options.layout)
        return self.draw_regions(
            tokens, boxes, prompt, options, watch, label, background=options.background, blend=options.blend
        )

    def draw_regions(
        self,
        tokens: np.ndarray,
        boxes: tuple[Box, ...],
        prompt: str,
        options: GenerationOptions,
        watch: Stopwatch,
        label: str,
        extra: dict[str, object] | None = None,
        *,
        background: str | None = None,
        blend: float = DEFAULT_BLEND,
    ) -> Generation:
        """Token k [K, D] drawn in box k with the one-sound ``prompt``, the ``background`` prompt (if any) around them,
        the regions' edges softened over ``blend`` of the picture's side."""
        h, w = self.latent_shape[2:]
        weights = region_weights(boxes, (h, w), background=background is not None, blend=blend)  # [C, 1, h, w]
        with watch.stage("encode_prompt"):
            rows = [self.embed(prompt, token[None], require_placeholder=True) for token in tokens]  # K x [1, 77, D]
            if background is not None:
                rows.append(self.embed(background, np.zeros_like(tokens[:1]), require_placeholder=False))
            if self.guided(options):
                rows.insert(0, self.unconditional(options.negative_prompt, tokens))
            embeddings = np.concatenate(rows).astype(np.float32)  # [1 + C or C, 77, D]
        regions = {
            "layout": "; ".join(f"{box.describe()}" for box in boxes),
            **({"background": background} if background is not None else {}),
            **(extra or {}),
        }
        return self.draw_seeds(embeddings, options, prompt, watch, label, regions, weights)

    def draw_seeds(
        self,
        embeddings: np.ndarray,
        options: GenerationOptions,
        prompt: str,
        watch: Stopwatch,
        label: str,
        recorded: dict[str, object] | None = None,
        weights: np.ndarray | None = None,
    ) -> Generation:
        """Stages 4-5 for every seed of ``options``: the pictures, as a ``Generation``."""
        seeds = self.seeds(options)
        pictures = []
        for seed in seeds:
            latents = self.denoise(embeddings, seed, options, watch, weights=weights)  # [1, 4, h, w]
            with watch.stage("decode_latents"):
                image = self.decode_latents(latents)  # [1, 3, H, W]
            pictures += to_pictures(image)
        return Generation(pictures, seeds, prompt, options, watch, label, recorded or {})

    def draw_stereo(
        self, sound: Sound, options: GenerationOptions, prompt: str, sample_rate: int, watch: Stopwatch
    ) -> Generation:
        """``generate --stereo``: the left and right channels' tokens, each in its side's region (the split where
        the channels' energies balance); equal channels (or a mono clip) give the plain one-sound picture."""
        if is_mix(sound):
            raise ConfigError("--stereo places one clip's two channels; it does not take a mix")
        sides = [
            self.hear(sound, channel, options.start, sample_rate, watch) for channel in ("first", "second")
        ]  # 2 x [160000]
        plain = replace(options, stereo=False)
        if np.array_equal(*sides):
            return self.draw(sound, plain, sample_rate=sample_rate, watch=watch)
        with watch.stage("encode_audio"):
            tokens = [self.encode_audio(wave) for wave in sides]  # 2 x [1, D]
        left, right = (float(np.mean(np.square(wave, dtype=np.float64))) for wave in sides)
        boxes = stereo_boxes(left, right)
        balance = {"stereo": f"left {left / (left + right):.3f} of the energy"}
        return self.draw_regions(np.concatenate(tokens), boxes, prompt, plain, watch, sound_label(sound), balance)

    @property
    def vae_factor(self) -> int:
        """Picture pixels per latent pixel: the VAE decoder's output over its input."""
        return self.contracts[VAE_DECODER].outputs[0].shape[2] // self.latent_shape[2]

    def conditioning(
        self, sounds: Sounds, options: GenerationOptions, prompt: str, sample_rate: int, watch: Stopwatch
    ) -> np.ndarray:
        """Stages 1-3: sounds -> token -> prompt embeddings [2 or 1, 77, D]."""
        token = self.listen(sounds, options, sample_rate, watch)  # [1, D]
        with watch.stage("encode_prompt"):
            return self.encode_prompt(token, prompt, options.negative_prompt, self.guided(options))

    @staticmethod
    def seeds(options: GenerationOptions) -> list[int]:
        """Picture k's seed: the first seed + k."""
        first = options.first_seed()
        return [first + k for k in range(options.num_images)]
