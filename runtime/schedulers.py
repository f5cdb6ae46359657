"""Diffusion schedulers in pure numpy: the sampling math between two UNet evaluations.

Place in the data flow: `denoise` builds one scheduler per request with ``make_scheduler(name, config, steps)``,
starts from ``noise * scheduler.init_noise_sigma`` and, for each entry of ``scheduler.timesteps`` (one entry per
UNet evaluation), calls ``scale_model_input`` -> UNet (+ guidance) -> ``step``::

    scheduler = make_scheduler("dpm++2m", scheduler_config, 25)
    latents = noise * scheduler.init_noise_sigma                         # [B,4,h,w]
    # img2img / SDEdit (e.g. make_scheduler("dpm++2m", config, 25, strength=0.6): 15 steps remain):
    # latents = scheduler.add_noise(source_latents, noise, 0)            # the source noised to timesteps[0]
    history = History()
    for i, t in enumerate(scheduler.timesteps):
        eps = unet(scheduler.scale_model_input(latents, i), t)          # [B,4,h,w]
        latents, history = scheduler.step(eps, i, latents, history, rng=rng)

Design:
- Everything that depends only on (config, num_inference_steps, strength) -- timesteps, sigmas, alpha-bar pairs,
  solver orders -- is computed once in the constructor, in float64. ``step`` takes the step index explicitly and reads
  those tables; it never advances a hidden counter.
- Multistep methods (DPM-Solver++(2M), PLMS) need earlier model outputs. They travel in an immutable ``History``
  that ``step`` receives and returns (a fresh one for single-step schedulers); the scheduler object itself never
  changes, so one instance can serve concurrent requests and a step can be replayed.
- The schedules follow the diffusers 0.42 schedulers of the same name when built from a model's
  ``scheduler_config.json`` (PNDM "leading" spacing + steps_offset, Euler's interpolated float32 timesteps, DPM++
  final-step handling; tcd is ``TCDScheduler``); tests/test_schedulers.py checks the parity. Arithmetic runs in
  float64 on the float32 alpha-bar table the model was trained with, and the result is cast back to the sample's
  dtype.
- ``timesteps`` holds what the UNet is called with: int64 training timesteps, except float32 for the Euler family
  (its "linspace" spacing gives fractional ones, e.g. 957.375).
- Every scheduler predicts the clean sample from a variance-preserving (VP) view of the latents,
  ``x = a*x0 + s*eps`` with ``a = sqrt(alpha_bar)``, ``s = sqrt(1 - alpha_bar)``; the Euler family keeps its latents
  in the variance-exploding scale ``x / a`` (noise level ``sigma = s / a``) and converts when it predicts.
- Stochastic schedulers (euler-a, lcm, and ddim and tcd with eta > 0) take their fresh noise from ``step(...,
  rng=)`` (the picture's ``runtime.noise.NoiseStream``) or ``noise=``, so that a seed fixes the whole picture.
- eta (``make_scheduler(..., eta=)``, 0 to MAX_ETA, passed to ``step`` as diffusers' pipelines pass their ``eta``):
  DDIM's stochasticity (``DDIMScheduler.step(eta=)``) and TCD's gamma (``TCDScheduler.step(eta=)``; 0 like the
  diffusers pipelines' default, not the 0.3 of that method's signature), the schedulers that take one
  (``ETA_SCHEDULERS``); the others refuse a nonzero eta.
- Timestep spacing: the config's ``timestep_spacing`` (``runtime.sampling`` lays a recipe's over it), read by every
  scheduler but LCM and TCD, whose timesteps are their distillation schedule's (``SPACED_SCHEDULERS``; diffusers'
  LCMScheduler and TCDScheduler store the key and never read it). "trailing" is what few-step recipes ask of DDIM
  and Euler: the first step at the last training timestep (one step: DDIM at [999], Euler at sigma 14.6146; 4 steps:
  999, 749, 499, 249), as diffusers draws them, DDIM's target timestep included: t - n_train // n, which leaves the
  schedule where n does not divide n_train (3 steps: 666 -> 333 while the next timestep is 332). LCM and TCD need
  none: their schedule already starts at 999 (one step: [999]; 4 steps: 999, 759, 499, 259).
- Config: ``resolve_config`` is the one place a scheduler_config.json is typed. Every key a scheduler reads must
  hold its type and range (betas and trained_betas numbers in (0, 1), num_train_timesteps of the latter; finite
  positive scales; names from their sets; true/false flags), else a one-line ConfigError names
  ``scheduler_config.<key>`` and the value; the manifest reader runs it on the recipe's scheduler, so a bundle with
  a bad config is refused when it is opened, not at every request.
- Steps: a scheduler takes 1 to ``max_steps(name, config)`` steps: one per training timestep (LCM, TCD: per step of
  their distillation schedule), fewer where the config's spacing would put a timestep past the last training one or
  two on the same one (DDIM and PNDM at 1000 "leading" steps with steps_offset 1 index timestep 1000; DPM++ at 999
  "leading" steps does too, at 1000 it puts every step on timestep 1, and at 1000 "linspace" steps it rounds two
  onto one: diffusers fails with an IndexError or gives NaN latents there). ``--steps`` beyond it is a ConfigError.
  The bound is computed once per (scheduler, resolved config) and remembered (a small LRU cache).
- img2img: ``make_scheduler(..., strength=s)`` (s in (0, 1]; 1 = from pure noise, the default) builds a scheduler
  whose ``timesteps`` hold only the steps that remain, so the loop above is unchanged; it starts from the source
  latents noised to the first of them, ``add_noise(source_latents, noise, 0)`` (in the scale the loop's latents live
  in: VE for the Euler family). Every scheduler but LCM and TCD follows diffusers' StableDiffusionImg2ImgPipeline:
  of the N steps asked for, the last int(N * s) remain (Python float product truncated, int(25 * 0.6) = 15), i.e.
  the first N - int(N * s) entries of the full schedule are dropped (for PNDM: of its N + 1 timesteps);
  int(N * s) = 0 is refused. Tables that depend on the full schedule (sigmas, DPM++'s final-step rule, DDIM/PNDM's
  stride) come from it, while multistep state (DPM++'s first-order start, PLMS's warm-up) starts afresh at the first
  remaining step, as diffusers' with ``set_begin_index``. LCM and TCD instead truncate their distillation schedule
  and keep N steps (diffusers' LCM img2img; ``TCDScheduler.set_timesteps(strength=)``, the same rule).
  ``len(timesteps)`` is the number of UNet evaluations left; ``strength`` is read-only.

Sources for the formulas: DDIM (Song et al. 2020, eq. 12), PNDM/PLMS (Liu et al. 2022, eq. 9 and 12),
DPM-Solver++ (Lu et al. 2022, multistep 2M), Euler / Euler ancestral (Karras et al. 2022; k-diffusion),
LCM (Luo et al. 2023, Algorithm 1; the multistep consistency sampling of Song et al. 2023, Algorithm 1),
TCD (Zheng et al. 2024, Trajectory Consistency Distillation: its strategic stochastic sampling).
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from dataclasses import dataclass

import numpy as np

from runtime.errors import ConfigError, shown

SCHEDULER_NAMES = ("dpm++2m", "pndm", "ddim", "euler", "euler-a", "lcm", "tcd")
PREDICTION_TYPES = ("epsilon", "v_prediction")  # what the UNet predicts; every scheduler here takes both
MAX_TRAIN_TIMESTEPS = 10_000  # a config's num_train_timesteps (Stable Diffusion: 1000); its tables are this long
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
MAX_ETA = 1.0  # DDIM's eta: 1 is DDPM's variance, past it the eps coefficient sqrt(1 - ab_prev - sigma^2) soon is NaN;
# TCD's gamma: 1 re-noises from the x0 estimate itself (diffusers asserts 0 <= eta <= 1)
CONFIG_HINT = "check the model's scheduler/scheduler_config.json"

# Config keys shared by every scheduler, with the diffusers defaults a config may omit.
_BASE_DEFAULTS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "steps_offset": 0,
}

# Options that change the math and that this runtime does not implement: key -> the only value accepted.
_ONLY_SUPPORTED = {
    "thresholding": False,
    "rescale_betas_zero_snr": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "interpolation_type": "linear",
    "timestep_type": "discrete",
    "variance_type": None,
}


@dataclass(frozen=True)
class History:
    """What a multistep scheduler remembers between steps; ``step`` returns a new one, never mutates.

    outputs: earlier model outputs, oldest first (PLMS: the last raw outputs, up to 4;
             DPM++(2M): the last predicted x0). Each [B,4,h,w] float64.
    sample:  PLMS only: the latents of step 0, which step 1 restarts from (the warm-up; see PNDM).
    """

    outputs: tuple[np.ndarray, ...] = ()
    sample: np.ndarray | None = None


def _x0_and_eps(model_output: np.ndarray, x: np.ndarray, a, s, prediction_type: str):
    """Split VP latents ``x = a*x0 + s*eps`` into (x0, eps) given an epsilon or v (= a*eps - s*x0) prediction."""
    if prediction_type == "epsilon":
        return (x - s * model_output) / a, model_output
    return a * x - s * model_output, a * model_output + s * x


class Scheduler:
    """Shared part: config resolution, the alpha-bar table, img2img strength and ``add_noise``, step-index checks and
    the dtype contract of ``step``.

    Subclasses set ``timesteps`` (the steps that remain to run at the img2img ``strength``: one entry per UNet
    evaluation) in their constructor and implement ``_step``.
    """

    name: str  # as SCHEDULER_NAMES writes it
    defaults: dict = {}  # scheduler-specific config defaults (as in diffusers), over _BASE_DEFAULTS
    takes_eta = False  # whether ``make_scheduler(..., eta=)`` may be nonzero (DDIM's stochasticity, TCD's gamma)
    spaced = True  # whether the config's timestep_spacing places the timesteps (LCM, TCD: their distillation schedule)
    init_noise_sigma: float = 1.0
    timesteps: np.ndarray
    steps_hint = "use e.g. 25 steps for dpm++2m or 50 for pndm"

    def __init__(self, config: dict, num_inference_steps: int, strength: float = 1.0):
        self._strength = _check_strength(strength)
        cfg = self.resolve_config(config)
        self.num_inference_steps = self.check_steps(cfg, num_inference_steps)
        self.config = cfg
        self.prediction_type = cfg["prediction_type"]
        self.alphas_cumprod = _alphas_cumprod(cfg)  # [n_train] float64

    @classmethod
    def resolve_config(cls, config: dict) -> dict:
        """A diffusers scheduler_config.json dict over this scheduler's defaults, checked: every key this scheduler
        reads must hold a value of its type and range (``_check_key``), else a one-line ConfigError names
        ``scheduler_config.<key>`` and the value; so does what the numpy schedulers cannot do. The result holds plain
        Python values only (its canonical JSON keys the ``max_steps`` cache)."""
        if not isinstance(config, dict):
            raise ConfigError(f"scheduler_config is {shown(config)}: expected an object", hint=CONFIG_HINT)
        cfg = {**_BASE_DEFAULTS, **cls.defaults}
        cfg.update({k: v for k, v in config.items() if k in cfg or k in _ONLY_SUPPORTED})
        for key, supported in _ONLY_SUPPORTED.items():
            if key in cfg and (type(cfg[key]) is not type(supported) or cfg[key] != supported):
                raise ConfigError(
                    f"scheduler_config.{key} is {shown(cfg[key])}: expected {supported!r} (the only value the numpy "
                    "schedulers implement)",
                    hint=f"remove '{key}' from scheduler_config.json or pick another scheduler",
                )
        n_train = _whole(cfg, "num_train_timesteps", 2, MAX_TRAIN_TIMESTEPS)
        return {key: _check_key(cfg, key, n_train) for key in cfg}

    @classmethod
    def max_steps(cls, cfg: dict) -> int:
        """The most inference steps the resolved config ``cfg`` takes: the step limit (one per training timestep),
        less those whose schedule would index past the last training timestep or put two steps on one. Computed once
        per (scheduler, config) and remembered."""
        return _max_steps(cls.name, json.dumps(cfg, sort_keys=True))

    @classmethod
    def check_steps(cls, cfg: dict, steps) -> int:
        """``steps`` as an int, or the ConfigError naming ``--steps`` and the steps this scheduler takes on ``cfg``."""
        most = cls.max_steps(cfg)
        whole = isinstance(steps, (int, np.integer)) and not isinstance(steps, bool)
        if not (whole and 1 <= steps <= most):
            raise ConfigError(
                f"--steps is {shown(steps)}; {cls.name} takes 1 to {most} steps with this model's schedule "
                f"({cls._schedule_terms(cfg)})",
                hint=cls.steps_hint,
            )
        alphas_cumprod = _alphas_cumprod(cfg)  # [n_train]
        if not cls._fits(cfg, int(steps), alphas_cumprod):  # a gap below the most: trailing's rounding, e.g. 61
            near = [n for k in range(1, most) for n in (steps - k, steps + k) if 1 <= n <= most]
            fitting = [n for n in near[:40] if cls._fits(cfg, n, alphas_cumprod)][:2]
            raise ConfigError(
                f"--steps is {steps}; at this spacing {cls.name}'s {steps} timesteps would fall past the last training"
                f" timestep or two on one (the schedule's rounding: {cls._schedule_terms(cfg)})",
                hint=f"use {' or '.join(map(str, sorted(fitting)))} steps" if fitting else cls.steps_hint,
            )
        return int(steps)

    @classmethod
    def _step_limit(cls, cfg: dict) -> int:
        """The most inference steps before the schedule is checked: one per training timestep unless overridden."""
        return int(cfg["num_train_timesteps"])

    @classmethod
    def _schedule_terms(cls, cfg: dict) -> str:
        """The config keys that set the step bound, for its message."""
        return (
            f"num_train_timesteps {cfg['num_train_timesteps']}, {cfg['timestep_spacing']!r} spacing, "
            f"steps_offset {cfg['steps_offset']}"
        )

    @classmethod
    def _full_timesteps(cls, cfg: dict, n: int, alphas_cumprod: np.ndarray) -> np.ndarray | None:
        """[n] int64: the descending training timesteps of the full n-step schedule, which index the alpha-bar table
        ``alphas_cumprod`` [n_train]; None for a schedule that indexes no table (the Euler family interpolates, LCM
        has its own bound)."""
        return None

    @classmethod
    def _fits(cls, cfg: dict, n: int, alphas_cumprod: np.ndarray) -> bool:
        """Whether the n-step schedule indexes the alpha-bar table inside its bounds, one timestep per step."""
        ts = cls._full_timesteps(cfg, n, alphas_cumprod)
        if ts is None:
            return True
        inside = len(ts) > 0 and 0 <= ts.min() and ts.max() < int(cfg["num_train_timesteps"])
        return bool(inside and np.all(np.diff(ts) < 0))

    @property
    def strength(self) -> float:
        """img2img strength in (0, 1] the schedule was built for; 1 = from pure noise (text-to-image)."""
        return self._strength

    def _first_remaining_step(self) -> int:
        """img2img: index of the first entry of the full schedule that remains to run (0 at strength 1).

        As diffusers' StableDiffusionImg2ImgPipeline.get_timesteps: t_start = N - int(N * strength), times the
        scheduler's ``order`` (1 for every scheduler here, PNDM included, whose full schedule has N + 1 entries).
        """
        n, strength = self.num_inference_steps, self._strength
        kept = int(n * strength)  # Python float product then truncation, as diffusers: int(25 * 0.6) = 15
        if kept == 0:
            min_strength = math.ceil(1e4 / n) / 1e4  # 1 / n rounded up to 4 decimals: int(n * it) >= 1 in floats too
            hint = f"use a strength of at least {min_strength:g} for {n} steps"
            most = self.max_steps(self.config)
            if 1.0 / strength <= most:  # (a subnormal strength's inverse is inf)
                min_steps = math.ceil(1.0 / strength)
                min_steps += int(min_steps * strength) == 0  # the float product can still fall just below 1
                if min_steps <= most:
                    hint += f", or at least {min_steps} steps at strength {strength!r}"
            raise ConfigError(
                f"--strength {strength!r} leaves int({n} * {strength!r}) = 0 of the {n} steps to run", hint=hint
            )
        return n - kept

    def _check_step_index(self, step_index: int) -> None:
        if not 0 <= step_index < len(self.timesteps):
            raise IndexError(f"step_index: expected 0..{len(self.timesteps) - 1}, got {step_index}")

    def _noise_level(self, step_index: int) -> tuple[float, float]:
        """(signal, noise) scales of the loop's latents at remaining step ``step_index``: signal * x0 + noise * eps.

        VP: sqrt(alpha_bar), sqrt(1 - alpha_bar) at that timestep; the Euler family overrides it with its VE scale.
        """
        alpha_bar = self.alphas_cumprod[self.timesteps[step_index]]
        return float(np.sqrt(alpha_bar)), float(np.sqrt(1.0 - alpha_bar))

    def add_noise(self, original: np.ndarray, noise: np.ndarray, step_index: int = 0) -> np.ndarray:
        """The source latents noised to the level of remaining step ``step_index``, in the scale of the loop's latents.

        original, noise: [B,4,h,w] (noise N(0, 1)); the result has the original's dtype. img2img starts the loop from
        ``add_noise(source_latents, noise, 0)`` instead of ``noise * init_noise_sigma``.
        """
        self._check_step_index(step_index)
        x0 = np.asarray(original, dtype=np.float64)  # [B,4,h,w]
        z = np.asarray(noise, dtype=np.float64)  # [B,4,h,w]
        if z.shape != x0.shape:
            raise ValueError(f"add_noise: expected noise of shape {x0.shape} (the original's), got {z.shape}")
        signal, noise_scale = self._noise_level(step_index)
        return (signal * x0 + noise_scale * z).astype(np.asarray(original).dtype)

    def scale_model_input(self, sample: np.ndarray, step_index: int) -> np.ndarray:
        """The UNet input for step ``step_index``; identity except for the Euler family."""
        return sample

    def step(
        self,
        model_output: np.ndarray,
        step_index: int,
        sample: np.ndarray,
        history: History | None = None,
        *,
        rng=None,
        noise: np.ndarray | None = None,
    ) -> tuple[np.ndarray, History]:
        """Latents after step ``step_index`` and the history for the next step.

        model_output, sample: [B,4,h,w]; the result has the sample's dtype. ``rng`` (anything with
        ``standard_normal(shape)``: the picture's ``runtime.noise.NoiseStream``, or a numpy Generator) or ``noise``
        ([B,4,h,w], N(0,1)) is needed only by stochastic schedulers (euler-a; ddim with eta > 0; lcm, and tcd with
        eta > 0, except at their last step) and ignored by the others.
        """
        self._check_step_index(step_index)
        history = History() if history is None else history
        x = np.asarray(sample, dtype=np.float64)  # [B,4,h,w]
        m = np.asarray(model_output, dtype=np.float64)  # [B,4,h,w]
        prev, history = self._step(m, step_index, x, history, rng, noise)
        return prev.astype(np.asarray(sample).dtype), history

    def _step(self, m, i, x, history, rng, noise) -> tuple[np.ndarray, History]:
        raise NotImplementedError

    def _check_history(self, history: History, expected: int, step_index: int) -> None:
        if len(history.outputs) != expected:
            raise ValueError(
                f"{type(self).__name__} step {step_index}: expected a history of {expected} earlier outputs, "
                f"got {len(history.outputs)}; pass the History returned by the previous step"
            )


def _fresh_noise(name: str, shape: tuple[int, ...], rng, noise) -> np.ndarray:
    """The N(0, 1) noise a stochastic step adds: ``noise`` if given, else ``rng.standard_normal(shape)``; float64."""
    if noise is None:
        if rng is None:
            raise ConfigError(
                f"{name} step: expected rng= or noise= for the fresh noise, got neither",
                hint="pass the picture's runtime.noise.NoiseStream(seed, STEP_NOISE) as rng= (seeded for reproducible images)",
            )
        noise = rng.standard_normal(shape)  # [B,4,h,w]
    noise = np.asarray(noise, dtype=np.float64)
    if noise.shape != tuple(shape):
        raise ValueError(f"{name} step: expected noise of shape {tuple(shape)} (the sample's), got {noise.shape}")
    return noise


def _check_eta(name: str, eta: float) -> float:
    """A scheduler's eta as a float in [0, MAX_ETA] (NaN fails), else a ValueError: ``runtime.sampling`` refuses a
    user's first, naming --eta."""
    if not (isinstance(eta, numbers.Real) and 0.0 <= eta <= MAX_ETA):
        raise ValueError(f"{name} eta: expected a number from 0 to {MAX_ETA:g}, got {eta!r}")
    return float(eta)


def _check_strength(strength) -> float:
    """img2img strength as a float in (0, 1]: the fraction of the noise schedule left to run from the source."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(strength, bool) or not 0.0 < value <= 1.0:  # NaN fails too
        numeric = isinstance(strength, (int, float, np.number)) and not isinstance(strength, bool)
        shown = value if numeric else strength
        raise ConfigError(
            f"--strength is {shown!r}; it must be a number in (0, 1]",
            hint="1 starts from pure noise (text-to-image); lower values keep more of the source picture",
        )
    return value


def _check_key(cfg: dict, key: str, n_train: int):
    """``cfg[key]`` as a plain Python value if it has the type and range the schedulers read it with, else the
    one-line ConfigError naming ``scheduler_config.<key>`` and the value (the one place a config's values are typed).
    ``n_train``: its num_train_timesteps, already checked."""
    value = cfg[key]
    if key == "num_train_timesteps":
        return n_train
    if key in _ONLY_SUPPORTED:
        return value  # checked by resolve_config: of the supported value's type
    if key in _CHOICES:
        return _choice(key, value, _CHOICES[key])
    if key in _FLAGS:
        if not isinstance(value, (bool, np.bool_)):
            _refuse_key(key, value, "true or false")
        return bool(value)
    if key in ("beta_start", "beta_end"):
        return _real(key, value, "a number in (0, 1)", lambda v: 0 < v < 1)
    if key in ("clip_sample_range", "timestep_scaling"):
        return _real(key, value, "a finite number > 0", lambda v: 0 < v < math.inf)
    if key == "lambda_min_clipped":  # diffusers' default is -inf: no clipping
        return _real(key, value, "a number below +inf (-inf: no clipping)", lambda v: v < math.inf)
    if key == "skip_prk_steps":  # PNDM's: false asks for its Runge-Kutta warm-up, not implemented
        if value is not True:
            _refuse_key(
                key,
                value,
                "true (PLMS; PNDM's Runge-Kutta warm-up is not implemented)",
                "set skip_prk_steps: true (Stable Diffusion's own setting) or use another scheduler",
            )
        return True
    if key == "trained_betas":
        return _trained_betas(value, n_train)
    if key == "steps_offset":
        return _whole(cfg, key, 0, n_train - 1)
    if key == "solver_order":
        return _whole(cfg, key, 1, 2)
    if key == "original_inference_steps":
        return _whole(cfg, key, 1, n_train, hint="LCM-distilled models use 50 (diffusers' default)")
    raise AssertionError(f"scheduler config key {key!r} has no rule in _check_key")


# Config keys whose value is one of a few names, and those that are true or false.
_CHOICES = {
    "beta_schedule": ("linear", "scaled_linear"),
    "prediction_type": PREDICTION_TYPES,
    "timestep_spacing": TIMESTEP_SPACINGS,
    "algorithm_type": ("dpmsolver++",),
    "solver_type": ("midpoint",),
    "final_sigmas_type": ("zero", "sigma_min"),
}
_FLAGS = ("set_alpha_to_one", "clip_sample", "lower_order_final", "euler_at_final")


def _refuse_key(key: str, value: object, expected: str, hint: str = CONFIG_HINT) -> None:
    raise ConfigError(f"scheduler_config.{key} is {shown(value)}: expected {expected}", hint=hint)


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> str:
    if not (isinstance(value, str) and value in allowed):
        _refuse_key(key, value, repr(allowed[0]) if len(allowed) == 1 else f"one of {', '.join(allowed)}")
    return value


def _real(key: str, value: object, expected: str, fits) -> float:
    """A real number (not a bool; NaN never) for which ``fits`` holds, as a float."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if math.isnan(number) or not fits(number):
        _refuse_key(key, value, expected)
    return number


def _whole(cfg: dict, key: str, low: int, high: int, hint: str = CONFIG_HINT) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        _refuse_key(key, value, f"an integer in {low}..{high}", hint)
    return int(value)


def _trained_betas(value: object, n_train: int) -> list[float] | None:
    """null, or the num_train_timesteps betas of the training schedule, each a number in (0, 1)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != n_train:
        _refuse_key("trained_betas", value, f"null or a list of {n_train} numbers (num_train_timesteps) in (0, 1)")
    return [
        _real(f"trained_betas[{i}]", beta, "a number in (0, 1)", lambda v: 0 < v < 1) for i, beta in enumerate(value)
    ]


def _alphas_cumprod(cfg: dict) -> np.ndarray:
    """alpha_bar_t = prod_{k<=t} (1 - beta_k) for the training noise schedule."""
    n = int(cfg["num_train_timesteps"])
    if cfg["trained_betas"] is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=np.float64)  # [n]
    elif cfg["beta_schedule"] == "linear":
        betas = np.linspace(cfg["beta_start"], cfg["beta_end"], n)  # [n]
    else:  # scaled_linear: linear in sqrt(beta), the latent-diffusion schedule
        betas = np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n) ** 2  # [n]
    if betas.shape != (n,) or not np.all((betas > 0) & (betas < 1)):  # NaN fails too
        raise ConfigError(
            f"scheduler config: expected {n} betas (num_train_timesteps), each in (0, 1); got {betas.size} "
            f"from {betas.min(initial=np.inf):g} to {betas.max(initial=-np.inf):g}",
            hint="check beta_start, beta_end and trained_betas in the model's scheduler/scheduler_config.json",
        )
    # Computed in float64 and stored in float32, as latent-diffusion's training code does (diffusers builds it in
    # float32). Near t = 0 that rounding moves 1 - alpha_bar, hence sigma, by up to 4e-5 relative; keeping it takes
    # the parity with diffusers from ~4e-6 to ~1e-6.
    return np.cumprod(1.0 - betas).astype(np.float32).astype(np.float64)  # [n]


def _rounded_timesteps(cfg: dict, n_steps: int) -> np.ndarray:
    """[n_steps] int64: the spaced timesteps rounded to training ones (DDIM, PNDM), descending."""
    return np.round(_spaced_timesteps(cfg, n_steps)).astype(np.int64)


def _spaced_timesteps(cfg: dict, n_steps: int) -> np.ndarray:
    """Descending training timesteps for DDIM/PNDM/Euler ("linspace", "leading" or "trailing"), float64."""
    n_train = int(cfg["num_train_timesteps"])
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        return np.linspace(0, n_train - 1, n_steps)[::-1]  # [n_steps]
    if spacing == "leading":
        return (np.arange(n_steps) * (n_train // n_steps))[::-1] + float(cfg["steps_offset"])  # [n_steps]
    return np.round(np.arange(n_train, 0, -n_train / n_steps)) - 1.0  # [n_steps] trailing


class _AlphaBarPairs:
    """sqrt(alpha_bar) and sqrt(1 - alpha_bar) at the current and the target timestep of every step (DDIM, PNDM).

    A negative target timestep (past t=0) uses alpha_bar = 1 with ``set_alpha_to_one``, else alpha_bar_0.
    """

    def __init__(self, alphas_cumprod: np.ndarray, t_cur: np.ndarray, t_prev: np.ndarray, set_alpha_to_one: bool):
        final = 1.0 if set_alpha_to_one else alphas_cumprod[0]
        ab_cur = alphas_cumprod[t_cur]  # [n]
        ab_prev = np.where(t_prev >= 0, alphas_cumprod[np.maximum(t_prev, 0)], final)  # [n]
        self.a, self.s = np.sqrt(ab_cur), np.sqrt(1.0 - ab_cur)  # [n] each
        self.a_prev, self.s_prev = np.sqrt(ab_prev), np.sqrt(1.0 - ab_prev)  # [n] each


class DDIM(Scheduler):
    """DDIM (Song et al. 2020, eq. 12): x_prev = a_prev * x0 + sqrt(1 - a_prev^2 - sigma^2) * eps + sigma * z, with
    sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev) and z fresh N(0, 1) noise (drawn at
    every step when eta > 0, as diffusers does); eta = 0 is deterministic DDIM, eta = 1 DDPM's variance."""

    name = "ddim"
    defaults = {"timestep_spacing": "leading", "set_alpha_to_one": True, "clip_sample": True, "clip_sample_range": 1.0}
    takes_eta = True

    def __init__(self, config: dict, num_inference_steps: int, strength: float = 1.0, eta: float = 0.0):
        super().__init__(config, num_inference_steps, strength)
        self.eta = _check_eta("DDIM", eta)
        full = self._full_timesteps(self.config, self.num_inference_steps, self.alphas_cumprod)  # [n]
        self.timesteps = full[self._first_remaining_step() :]  # [m] the steps that remain
        stride = int(self.config["num_train_timesteps"]) // self.num_inference_steps
        c = self.coef = _AlphaBarPairs(
            self.alphas_cumprod, self.timesteps, self.timesteps - stride, bool(self.config["set_alpha_to_one"])
        )
        self.sigma = self.eta * (c.s_prev / c.s) * np.sqrt(1.0 - (c.a / c.a_prev) ** 2)  # [m]
        self.direction = np.sqrt(c.s_prev**2 - self.sigma**2)  # [m] the eps coefficient: s_prev exactly at eta 0

    def _step(self, m, i, x, history, rng, noise):
        c = self.coef
        x0, eps = _x0_and_eps(m, x, c.a[i], c.s[i], self.prediction_type)  # [B,4,h,w] each
        if self.config["clip_sample"]:
            limit = float(self.config["clip_sample_range"])
            x0 = np.clip(x0, -limit, limit)
        prev = c.a_prev[i] * x0 + self.direction[i] * eps  # [B,4,h,w]
        if self.eta > 0:
            prev = prev + self.sigma[i] * _fresh_noise("ddim", x.shape, rng, noise)
        return prev, history

    @classmethod
    def _full_timesteps(cls, cfg: dict, n: int, alphas_cumprod: np.ndarray) -> np.ndarray:
        return _rounded_timesteps(cfg, n)  # [n]


class PNDM(Scheduler):
    """PLMS (PNDM with ``skip_prk_steps``): linear multistep on epsilon, each step moved with PNDM's eq. 9 (= DDIM).

    Warm-up (crowsonkb's PLMS): step 0 takes a plain step from t0; step 1 evaluates the UNet at that result (t1) and
    redoes the step from t0 with the mean of both outputs (Heun-like), so timesteps read [t0, t1, t1, t2, ...] and
    N inference steps cost N+1 UNet evaluations. Then Adams-Bashforth of order 2, 3 and 4.

    img2img, reproduced from diffusers (its PNDM has order 1 and no begin index), not corrected: the first
    t_start = N - int(N * strength) of the N+1 timesteps are dropped and the warm-up runs on the first two that
    remain, [r0, r1, r2, ...]. The repeat it relies on is then gone (t_start >= 2: step 1 redoes r0 -> r1, and step
    2 takes latents at r1's noise level with the coefficients of r2 -> r3) or misplaced (t_start = 1: r0 = r1 and
    step 1 restarts from r0's latents with the coefficients of r0 + stride -> r1).
    """

    name = "pndm"
    defaults = {"timestep_spacing": "leading", "set_alpha_to_one": False, "skip_prk_steps": False}
    _ADAMS_BASHFORTH = {  # number of outputs -> weights, oldest first
        2: np.array([-1.0, 3.0]) / 2,
        3: np.array([5.0, -16.0, 23.0]) / 12,
        4: np.array([-9.0, 37.0, -59.0, 55.0]) / 24,
    }

    def __init__(self, config: dict, num_inference_steps: int, strength: float = 1.0):
        super().__init__(config, num_inference_steps, strength)
        n_train, n = int(self.config["num_train_timesteps"]), self.num_inference_steps
        base = self._full_timesteps(self.config, n, self.alphas_cumprod)[::-1]  # [n] ascending
        full = np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1]  # [n+1] (n=1: [1])
        self.timesteps = full[self._first_remaining_step() :].copy()  # [m] the steps that remain
        stride = n_train // n
        t_cur, t_prev = self.timesteps.copy(), self.timesteps - stride  # [m] each
        if len(self.timesteps) > 1:  # step 1 redoes step 0: from t1 + stride (= t0 for even spacing) to t1
            t_cur[1], t_prev[1] = self.timesteps[1] + stride, self.timesteps[1]
        self.coef = _AlphaBarPairs(self.alphas_cumprod, t_cur, t_prev, bool(self.config["set_alpha_to_one"]))

    def _step(self, m, i, x, history, rng, noise):
        if i == 0:
            self._check_history(history, 0, i)
            combined, start, history = m, x, History(outputs=(m,), sample=x)
        elif i == 1:
            self._check_history(history, 1, i)
            combined, start = (m + history.outputs[0]) / 2, history.sample
            history = History(outputs=history.outputs)
        else:
            self._check_history(history, min(i - 1, 4), i)
            outputs = history.outputs[-3:] + (m,)
            weights = self._ADAMS_BASHFORTH[len(outputs)]
            combined = sum(w * o for w, o in zip(weights, outputs, strict=True))  # [B,4,h,w]
            start, history = x, History(outputs=outputs)
        c = self.coef
        x0, eps = _x0_and_eps(combined, start, c.a[i], c.s[i], self.prediction_type)  # [B,4,h,w] each
        return c.a_prev[i] * x0 + c.s_prev[i] * eps, history

    @classmethod
    def _full_timesteps(cls, cfg: dict, n: int, alphas_cumprod: np.ndarray) -> np.ndarray:
        return _rounded_timesteps(cfg, n)  # [n], before the warm-up repeats one


class DPMSolverMultistep(Scheduler):
    """DPM-Solver++ (data prediction), multistep order 2 with the midpoint rule: DPM-Solver++(2M).

    In log-SNR time lambda = -log(sigma), with h = lambda_next - lambda_cur and D0, D1 the current x0 prediction and
    its divided difference with the previous one:
        x_next = (s_next / s_cur) * x + a_next * (1 - exp(-h)) * (D0 + D1 / 2),   D1 = (D0 - D0_prev) * h / h_prev
    Step 0 (the first remaining one), and the last step when the schedule ends at sigma = 0 or when the FULL schedule
    is short (lower_order_final: fewer than 15 steps before img2img drops any, as diffusers), take the first-order
    update.
    """

    name = "dpm++2m"
    defaults = {
        "timestep_spacing": "linspace",
        "solver_order": 2,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": -float("inf"),
    }

    def __init__(self, config: dict, num_inference_steps: int, strength: float = 1.0):
        super().__init__(config, num_inference_steps, strength)
        cfg, n = self.config, self.num_inference_steps
        ab = self.alphas_cumprod  # [n_train]
        train_sigmas = np.sqrt((1.0 - ab) / ab)  # [n_train]
        ts = self._full_timesteps(cfg, n, ab)  # [n]
        n = len(ts)  # fewer than asked when lambda_min_clipped cuts a "trailing" schedule
        sigma_last = train_sigmas[0] if cfg["final_sigmas_type"] == "sigma_min" else 0.0
        first_order_final = bool(cfg["euler_at_final"]) or cfg["final_sigmas_type"] == "zero"
        first_order_final |= bool(cfg["lower_order_final"]) and n < 15  # the full schedule's length
        begin = self._first_remaining_step()
        self.timesteps = ts[begin:]  # [m] the steps that remain
        m = len(self.timesteps)
        sigmas = np.append(train_sigmas[self.timesteps], sigma_last)  # [m+1] VE noise levels
        a = 1.0 / np.sqrt(sigmas**2 + 1.0)  # [m+1] sqrt(alpha_bar)
        s = sigmas * a  # [m+1] sqrt(1 - alpha_bar)
        with np.errstate(divide="ignore"):
            lam = -np.log(sigmas)  # [m+1] log-SNR / 2; +inf at sigma = 0
        self.a, self.s = a, s
        self.x_coef = s[1:] / s[:-1]  # [m] s_next / s_cur
        self.d_coef = a[1:] * (1.0 - sigmas[1:] / sigmas[:-1])  # [m] a_next * (1 - exp(-h))
        h = lam[1:] - lam[:-1]  # [m]
        self.h_ratio = np.ones(m)  # [m] h / h_prev, used by second-order steps only
        self.h_ratio[1:] = h[1:] / h[:-1]
        self.order = np.full(m, int(cfg["solver_order"]))  # [m]
        self.order[0] = 1  # no earlier x0 yet
        if first_order_final:
            self.order[-1] = 1

    def _step(self, m, i, x, history, rng, noise):
        self._check_history(history, 0 if i == 0 else 1, i)
        x0, _ = _x0_and_eps(m, x, self.a[i], self.s[i], self.prediction_type)  # [B,4,h,w]
        d = x0
        if self.order[i] == 2:
            d = x0 + 0.5 * (x0 - history.outputs[0]) * self.h_ratio[i]  # D0 + D1/2
        return self.x_coef[i] * x + self.d_coef[i] * d, History(outputs=(x0,))

    @classmethod
    def _full_timesteps(cls, cfg: dict, n: int, alphas_cumprod: np.ndarray) -> np.ndarray:
        n_train, ab = int(cfg["num_train_timesteps"]), alphas_cumprod  # ab: [n_train]
        # Drop the noisiest timesteps whose log-SNR is below lambda_min_clipped (none by default).
        clipped = int(np.searchsorted(np.log(np.sqrt(ab) / np.sqrt(1.0 - ab))[::-1], cfg["lambda_min_clipped"]))
        last = n_train - clipped
        spacing = cfg["timestep_spacing"]
        if spacing == "linspace":
            ts = np.round(np.linspace(0, last - 1, n + 1))[::-1][:-1]  # [n]
        elif spacing == "leading":
            ts = (np.arange(n + 1) * (last // (n + 1)))[::-1][:-1] + cfg["steps_offset"]  # [n]
        else:
            ts = np.round(np.arange(last, 0, -n_train / n)) - 1  # [n] trailing
        return ts.astype(np.int64)  # [n]


class Euler(Scheduler):
    """Euler method on the probability-flow ODE dx/dsigma = (x - x0) / sigma, latents in VE scale (x / a).

    Sigmas are the training sigmas interpolated at the (possibly fractional) inference timesteps, then 0. The loop's
    latents are x0 + sigma * eps, so ``add_noise`` gives that and ``scale_model_input`` divides by sqrt(sigma^2 + 1).
    """

    name = "euler"
    defaults = {"timestep_spacing": "linspace", "final_sigmas_type": "zero"}
    ancestral = False

    def __init__(self, config: dict, num_inference_steps: int, strength: float = 1.0):
        super().__init__(config, num_inference_steps, strength)
        ab = self.alphas_cumprod  # [n_train]
        ts = _spaced_timesteps(self.config, self.num_inference_steps).astype(np.float32)  # [n]
        train_sigmas = np.sqrt((1.0 - ab) / ab)  # [n_train]
        sigmas = np.interp(ts.astype(np.float64), np.arange(len(ab)), train_sigmas)  # [n]
        sigma_last = 0.0  # Euler ancestral always ends at 0
        if not self.ancestral:
            sigma_last = train_sigmas[0] if self.config["final_sigmas_type"] == "sigma_min" else 0.0
        sigmas = np.append(sigmas, sigma_last)  # [n+1] the full schedule
        sigma_max = sigmas.max()  # the text-to-image start; img2img starts from add_noise instead
        leading = self.config["timestep_spacing"] == "leading"
        self.init_noise_sigma = float(np.sqrt(sigma_max**2 + 1.0) if leading else sigma_max)
        begin = self._first_remaining_step()
        self.timesteps = ts[begin:]  # [m] float32 like diffusers: "linspace" gives fractional timesteps
        self.sigmas = sigmas[begin:]  # [m+1]
        self.a = 1.0 / np.sqrt(self.sigmas**2 + 1.0)  # [m+1] VE -> VP factor
        cur, nxt = self.sigmas[:-1], self.sigmas[1:]  # [m] each
        if self.ancestral:  # split the move to nxt into a deterministic part (down) and fresh noise (up)
            self.sigma_up = np.sqrt(nxt**2 * (cur**2 - nxt**2) / cur**2)  # [m]
            self.sigma_down = np.sqrt(nxt**2 - self.sigma_up**2)  # [m]
        else:
            self.sigma_up, self.sigma_down = np.zeros_like(nxt), nxt  # [m] each

    def _noise_level(self, step_index: int) -> tuple[float, float]:
        """VE scale: latents = x0 + sigma * eps (the VP mix divided by sqrt(alpha_bar))."""
        return 1.0, float(self.sigmas[step_index])

    def scale_model_input(self, sample: np.ndarray, step_index: int) -> np.ndarray:
        """sample / sqrt(sigma^2 + 1): the VP latents the UNet was trained on."""
        return (sample * self.a[step_index]).astype(sample.dtype)

    def _step(self, m, i, x, history, rng, noise):
        sigma = self.sigmas[i]
        x0, _ = _x0_and_eps(m, x * self.a[i], self.a[i], self.a[i] * sigma, self.prediction_type)  # [B,4,h,w]
        derivative = (x - x0) / sigma  # [B,4,h,w]
        prev = x + derivative * (self.sigma_down[i] - sigma)  # [B,4,h,w]
        if self.ancestral:
            prev = prev + _fresh_noise("euler-a", x.shape, rng, noise) * self.sigma_up[i]
        return prev, history


class EulerAncestral(Euler):
    """Euler ancestral: each step goes down to sigma_down deterministically and adds sigma_up of fresh noise."""

    name = "euler-a"
    ancestral = True


class _DistillationSchedule(Scheduler):
    """The timesteps of a consistency-distilled UNet (LCM, TCD), as diffusers' LCMScheduler and TCDScheduler place them.

    The distillation schedule of ``original_inference_steps`` (stride = n_train // orig; its timesteps stride*j - 1
    for j = 1..orig, i.e. 19, 39, ..., 999 for SD), truncated to its first int(orig * strength) entries for img2img,
    and num_inference_steps of those taken at evenly spaced indices from the noisiest one down (1 step: 999;
    2 steps: 999, 499; 4 steps: 999, 759, 499, 259). ``timestep_spacing`` and ``steps_offset`` play no part (as in
    diffusers): one step already starts at the last training timestep. A strength below 1 keeps the number of steps
    and starts them lower (4 steps at strength 0.5: 499, 379, 259, 139).
    """

    defaults = {
        # diffusers' LCMScheduler and TCDScheduler defaults (their betas are SD's, unlike the DDPM defaults in
        # _BASE_DEFAULTS)
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "original_inference_steps": 50,
        "timestep_spacing": "leading",  # accepted for config compatibility; unused
    }
    spaced = False

    def __init__(self, config: dict, num_inference_steps: int, strength: float = 1.0):
        super().__init__(config, num_inference_steps, strength)
        cfg, n = self.config, self.num_inference_steps
        orig = int(cfg["original_inference_steps"])
        # Python float product then truncation, exactly as diffusers: 50 * 0.58 = 28.999... -> 28 timesteps.
        n_origin = int(orig * self.strength)
        if n_origin < n:
            raise ConfigError(
                f"--strength {self.strength!r} leaves int({orig} * {self.strength!r}) = {n_origin} of {self.name}'s "
                f"{orig} timesteps, fewer than --steps {n}",
                hint=f"use at most {n_origin} steps, or a strength of at least {n / orig:g}",
            )
        stride = int(cfg["num_train_timesteps"]) // orig
        origin = (np.arange(1, n_origin + 1) * stride - 1)[::-1]  # [n_origin] descending
        picks = np.floor(np.linspace(0, n_origin, n, endpoint=False)).astype(np.int64)  # [n]
        self.timesteps = origin[picks].astype(np.int64)  # [n]
        ab = self.alphas_cumprod[self.timesteps]  # [n]
        self.a, self.s = np.sqrt(ab), np.sqrt(1.0 - ab)  # [n] each

    @classmethod
    def _step_limit(cls, cfg: dict) -> int:
        return int(cfg["original_inference_steps"])

    @classmethod
    def _schedule_terms(cls, cfg: dict) -> str:
        return f"original_inference_steps {cfg['original_inference_steps']}"


class LCM(_DistillationSchedule):
    """Latent Consistency Model sampling (multistep consistency sampling), for 1-8 steps of an LCM-distilled UNet.

    Step i evaluates the consistency function at timestep t_i, i.e. the clean-sample estimate with the boundary
    condition f(x, 0) = x built in (sd = sigma_data = 0.5, k = ``timestep_scaling``, x0 from the model output):
        f = c_skip * x + c_out * x0,   c_skip = sd^2 / ((k*t)^2 + sd^2),   c_out = k*t / sqrt((k*t)^2 + sd^2)
    and, except at the last step, noises f forward to the next timestep with fresh noise z ~ N(0, 1):
        x_next = a_next * f + s_next * z.
    The last step returns f itself. There is no solver state (the History stays empty). Timesteps: the distillation
    schedule (``_DistillationSchedule``).
    """

    name = "lcm"
    defaults = {
        **_DistillationSchedule.defaults,
        "timestep_scaling": 10.0,
        "clip_sample": False,
        "clip_sample_range": 1.0,
    }
    steps_hint = "LCM is meant for 1-8 steps (4 is typical) with an LCM-distilled UNet"
    SIGMA_DATA = 0.5

    def __init__(self, config: dict, num_inference_steps: int, strength: float = 1.0):
        super().__init__(config, num_inference_steps, strength)
        # Target of the re-noising: the next step's timestep; the last step stops at f (a = 1, s = 0, unused).
        self.a_next = np.append(self.a[1:], 1.0)  # [n]
        self.s_next = np.append(self.s[1:], 0.0)  # [n]
        scaled = self.timesteps.astype(np.float64) * float(self.config["timestep_scaling"])  # [n]
        self.c_skip = self.SIGMA_DATA**2 / (scaled**2 + self.SIGMA_DATA**2)  # [n]
        self.c_out = scaled / np.sqrt(scaled**2 + self.SIGMA_DATA**2)  # [n]

    def _step(self, m, i, x, history, rng, noise):
        x0, _ = _x0_and_eps(m, x, self.a[i], self.s[i], self.prediction_type)  # [B,4,h,w]
        if self.config["clip_sample"]:
            limit = float(self.config["clip_sample_range"])
            x0 = np.clip(x0, -limit, limit)
        denoised = self.c_skip[i] * x + self.c_out[i] * x0  # [B,4,h,w]
        if i == len(self.timesteps) - 1:
            return denoised, History()
        z = _fresh_noise("lcm", x.shape, rng, noise)  # [B,4,h,w]
        return self.a_next[i] * denoised + self.s_next[i] * z, History()


class TCD(_DistillationSchedule):
    """Trajectory Consistency Distillation's sampling (diffusers' TCDScheduler), for 1-8 steps of a TCD- or
    Hyper-SD-distilled UNet; gamma is the recipe's eta.

    Step i goes from t = t_i to the next timestep t' (0 after the last step) through an intermediate timestep
    s = floor((1 - eta) * t'), computed in float32 as diffusers does in torch (float64 floors differently on some
    products, e.g. eta 0.3 at t' = 90: 63 in float32, 62 in float64). From the x0 and eps the model output gives at t:
        x_s = a_s * x0 + s_s * eps                                   (DDIM's deterministic move to s)
        x_t' = sqrt(ab_t' / ab_s) * x_s + sqrt(1 - ab_t' / ab_s) * z   (forward noising from s back up to t')
    with z fresh N(0, 1) noise, drawn only when eta > 0 and not at the last step. At eta 0, s = t' and the step is
    deterministic DDIM; the last step (t' = 0, so s = 0) returns x0 re-noised to timestep 0, sqrt(ab_0) * x0 +
    sqrt(1 - ab_0) * eps, not x0 itself; one step therefore draws no noise at any eta. Timesteps: the distillation
    schedule (``_DistillationSchedule``). There is no solver state.
    """

    name = "tcd"
    takes_eta = True
    steps_hint = "TCD is meant for 1-8 steps (4 is typical, eta 0.3) with a TCD- or Hyper-SD-distilled UNet"

    def __init__(self, config: dict, num_inference_steps: int, strength: float = 1.0, eta: float = 0.0):
        super().__init__(config, num_inference_steps, strength)
        self.eta = _check_eta("TCD", eta)
        ab = self.alphas_cumprod  # [n_train]
        t_next = np.append(self.timesteps[1:], 0)  # [n] the timestep each step lands on
        t_s = np.floor(np.float32(1.0 - self.eta) * t_next.astype(np.float32)).astype(np.int64)  # [n] float32 floor
        self.a_s, self.s_s = np.sqrt(ab[t_s]), np.sqrt(1.0 - ab[t_s])  # [n] each
        ratio = ab[t_next] / ab[t_s]  # [n] <= 1: s is at or below t'
        self.keep, self.fresh = np.sqrt(ratio), np.sqrt(1.0 - ratio)  # [n] each

    def _step(self, m, i, x, history, rng, noise):
        x0, eps = _x0_and_eps(m, x, self.a[i], self.s[i], self.prediction_type)  # [B,4,h,w] each
        x_s = self.a_s[i] * x0 + self.s_s[i] * eps  # [B,4,h,w]
        if self.eta == 0 or i == len(self.timesteps) - 1:
            return x_s, History()
        z = _fresh_noise("tcd", x.shape, rng, noise)  # [B,4,h,w]
        return self.keep[i] * x_s + self.fresh[i] * z, History()


_SCHEDULERS = {
    "dpm++2m": DPMSolverMultistep,
    "pndm": PNDM,
    "ddim": DDIM,
    "euler": Euler,
    "euler-a": EulerAncestral,
    "lcm": LCM,
    "tcd": TCD,
}
ETA_SCHEDULERS = tuple(name for name, scheduler in _SCHEDULERS.items() if scheduler.takes_eta)  # ("ddim", "tcd")
SPACED_SCHEDULERS = tuple(name for name, scheduler in _SCHEDULERS.items() if scheduler.spaced)  # all but lcm, tcd


def make_scheduler(
    name: str, config: dict, num_inference_steps: int, strength: float = 1.0, *, eta: float = 0.0
) -> Scheduler:
    """The scheduler ``name`` (one of SCHEDULER_NAMES) built from a diffusers scheduler_config.json dict.

    strength: img2img, in (0, 1] (1 = from pure noise, the default): ``timesteps`` then hold only the steps that
    remain (diffusers' StableDiffusionImg2ImgPipeline; LCM, TCD: their own set_timesteps) and the loop starts from
    ``add_noise(source_latents, noise, 0)``. A strength that leaves no step (int(steps * strength) = 0) is refused,
    as are steps outside 1..``max_steps(name, config)``. eta: 0 to 1, nonzero for ETA_SCHEDULERS only (a ValueError
    otherwise: ``runtime.sampling`` refuses a user's first, naming --eta).
    """
    scheduler = _scheduler_class(name)
    if eta != 0 and not scheduler.takes_eta:
        raise ValueError(f"{name} takes no eta (only {', '.join(ETA_SCHEDULERS)} does), got {eta!r}")
    return scheduler(config, num_inference_steps, strength, **({"eta": eta} if eta != 0 else {}))


def resolve_config(name: str, config: dict) -> dict:
    """The diffusers scheduler_config.json dict ``config`` as scheduler ``name`` reads it: over its defaults, every
    key it reads typed and in range, else a one-line ConfigError naming ``scheduler_config.<key>``."""
    return _scheduler_class(name).resolve_config(config)


def max_steps(name: str, config: dict) -> int:
    """The most inference steps scheduler ``name`` takes on a diffusers scheduler_config.json dict (see the module
    docstring: 1000 for Stable Diffusion's, fewer for some spacings; LCM, TCD: original_inference_steps)."""
    return _scheduler_class(name).max_steps(resolve_config(name, config))


@functools.lru_cache(maxsize=64)
def _max_steps(name: str, config_json: str) -> int:
    """``Scheduler.max_steps`` of scheduler ``name`` on a resolved config, given as canonical JSON (sorted keys): the
    alpha-bar table is built once, then the step limit is counted down until the schedule fits."""
    scheduler, cfg = _SCHEDULERS[name], json.loads(config_json)
    alphas_cumprod = _alphas_cumprod(cfg)  # [n_train]
    n = scheduler._step_limit(cfg)
    while n > 1 and not scheduler._fits(cfg, n, alphas_cumprod):
        n -= 1
    return n


def _scheduler_class(name: str) -> type[Scheduler]:
    if name not in _SCHEDULERS:
        raise ConfigError(
            f"scheduler: expected one of {', '.join(SCHEDULER_NAMES)}, got {name!r}",
            hint="dpm++2m (25 steps) is the default; pndm (50 steps) reproduces the official AudioToken inference",
        )
    return _SCHEDULERS[name]
