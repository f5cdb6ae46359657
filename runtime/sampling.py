"""The sampling recipe as one value: the scheduler, its steps, the classifier-free guidance scale, eta and the
timestep spacing (``Sampling``), with its bounds, its manifest JSON, and the named presets.

Place in the data flow (docs/architecture.md): a bundle's manifest holds the recipe it is meant to draw with
(``runtime.bundle.Recipe.sampling``, read and written here through the manifest's typed ``Field`` reader); the
options of generate, edit and compose (``runtime.pipeline.GenerationOptions``, one flat optional field per command-line
option, named as the fields here) and serve's SCHEDULER, STEPS, GUIDANCE, ETA and SPACING inputs are laid over it,
or over a preset's (``--fast``), by ``Sampling.over``; the pipeline builds its scheduler with
``Sampling.make_scheduler`` (``runtime.schedulers`` on the bundle's scheduler_config, the recipe's timestep spacing
laid over the config's). ``bench`` and ``compare`` record ``to_json``, ``info`` prints ``describe``, ``export`` writes
a preset's recipe into the manifest. The C++ library's ``Sampling`` (runtime/cpp/src/sampling.hpp) mirrors the
value, its bounds and the presets it uses; tests/test_cpp.py compares them with these.

- eta: DDIM's stochasticity or TCD's gamma, 0 (deterministic) to ``runtime.schedulers.MAX_ETA`` (DDPM's variance;
  TCD's fullest re-noising); only the schedulers of ``runtime.schedulers.ETA_SCHEDULERS`` (ddim, tcd) take a
  nonzero one.
- timestep_spacing: "leading", "trailing" (the first step at the last training timestep: what few-step recipes
  want of ddim and euler) or "linspace", over the bundle's scheduler_config's own (None: that one) for every
  scheduler that spaces its timesteps (all but lcm and tcd, whose timesteps are their distillation schedule's and
  already start at the last training timestep, one step included; a spacing given them is refused).
- A recipe's eta and spacing belong to its scheduler: options that pick another scheduler leave them behind.

Presets: DEFAULT (DPM-Solver++(2M), 25 steps, guidance 7.5: a plain bundle's recipe), OFFICIAL (PNDM, 50 steps,
guidance 7.5: AudioToken's published inference) and the distillation presets ``PRESETS``, each a ``Preset``: a LoRA
distilled for few steps (its hub repo and weights file, the scale and alpha it is fused at) with the recipe its model
card prescribes and what a bundle must hold to draw it (the LoRA fused into the UNet, the tiny decoder, a UNet of
batch 1). ``export --fast --preset NAME`` takes its sources and writes its name and recipe into the manifest
(``runtime.bundle.Recipe``); ``generate --fast`` draws a bundle's. FAST is the default one (``lcm``: LCM-LoRA, LCM,
4 steps, guidance 1). The model cards' "guidance 0" (no classifier-free guidance in diffusers) is guidance 1 here,
with the UNet at batch 1. docs/fast-path.md has the table and where each recipe comes from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING

from runtime.contract import SINGLE_BATCH
from runtime.errors import ConfigError, is_real, is_whole, shown
from runtime.schedulers import (
    ETA_SCHEDULERS,
    MAX_ETA,
    SCHEDULER_NAMES,
    SPACED_SCHEDULERS,
    TIMESTEP_SPACINGS,
    Scheduler,
    make_scheduler,
    max_steps,
)

if TYPE_CHECKING:
    from runtime.bundle import Field

MAX_GUIDANCE = 50.0  # classifier-free guidance, the recipe's and --guidance's; 7.5 is usual, beyond ~20 it burns
TAESD = "madebyollin/taesd"
DEFAULT_PRESET = "lcm"  # the one `export --fast` makes without --preset
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # what diffusers' load_lora_weights looks for by default
OPTIONS = {  # each field as the command line names it (messages name the option, not the field)
    "scheduler": "--scheduler",
    "steps": "--steps",
    "guidance": "--guidance",
    "eta": "--eta",
    "timestep_spacing": "--spacing",
}


@dataclass(frozen=True)
class Sampling:
    """How a picture is drawn from noise. ``timestep_spacing`` None: the bundle's scheduler_config's."""

    scheduler: str = "dpm++2m"
    steps: int = 25
    guidance: float = 7.5
    eta: float = 0.0
    timestep_spacing: str | None = None

    def over(self, given) -> Sampling:
        """This recipe with the values ``given`` sets laid over it: ``given`` is anything holding the fields of
        ``Sampling`` by name (an options object), None where unset. Where it picks another scheduler, this recipe's
        eta and timestep spacing are left behind (eta 0, the config's spacing) unless it sets them too."""
        chosen = {spec.name: value for spec in fields(self) if (value := getattr(given, spec.name)) is not None}
        base = self
        if chosen.get("scheduler", self.scheduler) != self.scheduler:
            base = replace(self, eta=DEFAULT.eta, timestep_spacing=DEFAULT.timestep_spacing)
        return replace(base, **chosen)

    @classmethod
    def check_given(cls, given) -> None:
        """The recipe's values ``given`` sets (as in ``over``; unset ones pass) within their bounds, and, when it sets
        the scheduler, an eta and a spacing only where that scheduler takes them: else one ConfigError line naming
        the option (``--steps``, ``--eta``...) and the value received."""
        for spec in fields(cls):
            value = getattr(given, spec.name)
            if value is not None:
                _CHECKS[spec.name](value)
        if given.scheduler is not None:
            unfit = DEFAULT.over(given).unfit()
            if unfit is not None:
                name, why = unfit
                other = f", or use --scheduler {' or '.join(ETA_SCHEDULERS)}" if name == "eta" else ""
                raise ConfigError(
                    f"{OPTIONS[name]} {shown(getattr(given, name))}: {why}", hint=f"leave {OPTIONS[name]} out{other}"
                )

    def check(self) -> None:
        """Every value within its bounds, and the eta and spacing ones its scheduler takes (``check_given``): what a
        preset's recipe must pass (export checks one before any work). The most steps depend on a bundle's scheduler
        config: ``make_scheduler`` checks them."""
        self.check_given(self)

    def unfit(self) -> tuple[str, str] | None:
        """What of this recipe its scheduler cannot take, as (field, why), or None: a nonzero eta for a scheduler
        without one, a timestep spacing for one whose timesteps are not spaced (lcm, tcd)."""
        if self.eta != 0 and self.scheduler not in ETA_SCHEDULERS:
            return "eta", f"{self.scheduler} has no eta; only {' and '.join(ETA_SCHEDULERS)} take one"
        if self.timestep_spacing is not None and self.scheduler not in SPACED_SCHEDULERS:
            return "timestep_spacing", (
                f"{self.scheduler} spaces no timesteps; they are its distillation schedule's, which already starts "
                "at the last training timestep, even for one step"
            )
        return None

    def scheduler_config(self, config: dict) -> dict:
        """A bundle's diffusers scheduler_config with this recipe's timestep spacing laid over its own (if any)."""
        return config if self.timestep_spacing is None else {**config, "timestep_spacing": self.timestep_spacing}

    def make_scheduler(self, config: dict, strength: float = 1.0) -> Scheduler:
        """This recipe's scheduler on a bundle's scheduler_config (``runtime.schedulers.make_scheduler``: steps beyond
        its most, or a strength leaving no step, are one ConfigError line naming the option)."""
        return make_scheduler(self.scheduler, self.scheduler_config(config), self.steps, strength, eta=self.eta)

    def max_steps(self, config: dict) -> int:
        """The most steps this recipe's scheduler takes on a bundle's scheduler_config, at this recipe's spacing."""
        return max_steps(self.scheduler, self.scheduler_config(config))

    def describe(self) -> str:
        """One line for people: 'ddim, 50 steps, guidance 7.5, eta 0.5, trailing spacing' ('1 step'; eta 0 and the
        config's spacing left unsaid)."""
        words = f"{self.scheduler}, {self.steps} step{'s' if self.steps != 1 else ''}, guidance {self.guidance:g}"
        words += f", eta {self.eta:g}" if self.eta != 0 else ""
        return words + (f", {self.timestep_spacing} spacing" if self.timestep_spacing is not None else "")

    def to_json(self) -> dict:
        """The recipe's fields as the manifest's ``recipe`` object, bench's and compare's JSON write them."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: Field, with_eta_and_spacing: bool = True) -> Sampling:
        """The recipe's fields of the manifest object at ``d`` (``recipe``), each held to its type and bound by the
        manifest's ``Field`` reader (one BundleError line naming ``recipe.<field>``); without
        ``with_eta_and_spacing`` (manifests before schema 4) eta and spacing are the defaults'."""
        scheduler = d["scheduler"].text(SCHEDULER_NAMES)
        steps = d["steps"].whole(1)
        guidance = d["guidance"].number(1, MAX_GUIDANCE)
        eta, spacing = DEFAULT.eta, DEFAULT.timestep_spacing
        if with_eta_and_spacing:
            eta = d["eta"].number(0, MAX_ETA)
            given = d["timestep_spacing"].optional()
            spacing = given.text(TIMESTEP_SPACINGS) if given is not None else None
        sampling = cls(scheduler, steps, guidance, eta, spacing)
        unfit = sampling.unfit()
        if unfit is not None:
            name, why = unfit
            d[name].refuse(f"{'0' if name == 'eta' else 'null'} ({why})")
        return sampling


def check_scheduler(name) -> None:
    if name not in SCHEDULER_NAMES:
        raise ConfigError(f"--scheduler is {shown(name)}; choose one of {', '.join(SCHEDULER_NAMES)}")


def check_steps(steps) -> None:
    if not is_whole(steps, 1, None):
        raise ConfigError(
            f"--steps is {shown(steps)}; it must be a whole number, 1 or more",
            hint="25 is usual for dpm++2m, 50 for pndm, 4 for lcm",
        )


def check_guidance(guidance) -> None:
    if not is_real(guidance, 1.0, MAX_GUIDANCE):
        raise ConfigError(
            f"--guidance is {shown(guidance)}; it must be a finite number from 1 to {MAX_GUIDANCE:g}",
            hint="7.5 is usual; 1 turns classifier-free guidance off",
        )


def check_eta(eta) -> None:
    if not is_real(eta, 0.0, MAX_ETA):
        raise ConfigError(
            f"--eta is {shown(eta)}; it must be a finite number from 0 to {MAX_ETA:g}",
            hint="0 is deterministic; 1 adds DDPM's noise at every DDIM step (TCD-LoRA's recipe: tcd, eta 0.3)",
        )


def check_spacing(spacing) -> None:
    if spacing not in TIMESTEP_SPACINGS:
        raise ConfigError(
            f"--spacing is {shown(spacing)}; choose one of {', '.join(TIMESTEP_SPACINGS)}",
            hint="trailing starts at the last training timestep, for a few steps",
        )


_CHECKS = {
    "scheduler": check_scheduler,
    "steps": check_steps,
    "guidance": check_guidance,
    "eta": check_eta,
    "timestep_spacing": check_spacing,
}


@dataclass(frozen=True)
class Preset:
    """A distillation LoRA with the recipe its model card prescribes and what a bundle must hold to draw it: the LoRA
    fused into the UNet (by default ``lora_file`` of the hub repo ``lora``, named ``lora_name`` for people, at
    ``lora_scale``), the tiny decoder (``tiny_vae``: its source; None: Stable Diffusion's own will do) and the UNet
    ``unet_batches``. ``export --fast --preset NAME`` fuses and takes them from these sources (each overridable by its
    own option: ``--lora``, ``--lora-scale``, ``--tiny-vae``, ``--unet-batch``) and records ``name`` and ``sampling``
    in the manifest; ``generate --fast`` draws a bundle's."""

    name: str
    sampling: Sampling
    lora: str  # hub id of the repo holding it
    lora_file: str  # its weights file in that repo (a path in it), also looked for in a local folder
    lora_name: str
    lora_scale: float = 1.0
    # The alpha it was trained at, for a layer its file stores none of (None: the layer's rank, as diffusers reads it)
    lora_alpha: float | None = None
    tiny_vae: str | None = TAESD  # hub id or diffusers AutoencoderTiny folder
    unet_batches: tuple[int, ...] = (SINGLE_BATCH,)  # guidance 1: the conditional half alone, half the work per step

    @property
    def export_flags(self) -> str:
        """The options of ``export`` that make a bundle ``generate --fast`` draws with this preset."""
        return "--fast" if self.name == DEFAULT_PRESET else f"--fast --preset {self.name}"

    def needs(self) -> str:
        """What a bundle must hold for it, for messages: 'LCM-LoRA fused, the tiny decoder and a UNet of batch 1'."""
        decoder = ", the tiny decoder" if self.tiny_vae is not None else ""
        return f"{self.lora_name} fused{decoder} and a UNet of batch {','.join(map(str, self.unet_batches))}"


DEFAULT = Sampling()
OFFICIAL = Sampling("pndm", 50, 7.5)
HYPER_SD = "ByteDance/Hyper-SD"  # Hyper-SD's SD 1.5 LoRAs: its card, SD 1.5 code blocks; fused at scale 1
PCM = "wangfuyun/PCM_Weights"  # PCM's SD 1.5 LoRAs in sd15/: the "small CFG" ones, drawn without guidance
# PCM's LoRAs were trained at peft's default lora_alpha, 8, over rank 64 (train_pcm_lora_sd15.py): their converted
# files store it; a copy without alphas is still fused at 8 / 64, not at its rank
PCM_ALPHA = 8.0
PRESETS = {
    preset.name: preset
    for preset in (
        # latent-consistency/lcm-lora-sdv1-5's card: LCMScheduler, 4 steps (2 to 8), guidance off
        Preset("lcm", Sampling("lcm", 4, 1.0), "latent-consistency/lcm-lora-sdv1-5", LORA_WEIGHTS_NAME, "LCM-LoRA"),
        # The one-step "unified" LoRA: TCDScheduler, 1 step, guidance 0, eta 1.0 (no noise is drawn at one step)
        Preset(
            "hyper-1step",
            Sampling("tcd", 1, 1.0, eta=1.0),
            HYPER_SD,
            "Hyper-SD15-1step-lora.safetensors",
            "Hyper-SD 1-step LoRA",
        ),
        # The N-step LoRAs: DDIMScheduler with "trailing" timestep spacing, N steps, guidance 0
        *(
            Preset(
                f"hyper-{n}step",
                Sampling("ddim", n, 1.0, timestep_spacing="trailing"),
                HYPER_SD,
                f"Hyper-SD15-{n}steps-lora.safetensors",
                f"Hyper-SD {n}-step LoRA",
            )
            for n in (2, 4, 8)
        ),
        # h1t/TCD-SD15-LoRA's card: TCDScheduler, 4 steps, guidance 0, eta (TCD's gamma) 0.3
        Preset("tcd", Sampling("tcd", 4, 1.0, eta=0.3), "h1t/TCD-SD15-LoRA", LORA_WEIGHTS_NAME, "TCD-LoRA"),
        # PCM's validation (and its README's DDIM fix): DDIM, "trailing" spacing, eta 0, N steps; small CFG: guidance 0
        *(
            Preset(
                f"pcm-{n}step",
                Sampling("ddim", n, 1.0, timestep_spacing="trailing"),
                PCM,
                f"sd15/pcm_sd15_smallcfg_{n}step_converted.safetensors",
                f"PCM {n}-step LoRA",
                lora_alpha=PCM_ALPHA,
            )
            for n in (2, 4, 8, 16)
        ),
    )
}
FAST = PRESETS[DEFAULT_PRESET]
