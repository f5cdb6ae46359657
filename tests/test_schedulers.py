"""Parity of runtime/schedulers.py with the diffusers schedulers of the same name (the reference).

Both sides run a full sampling loop on the same [1,4,8,8] latents with a fake deterministic "UNet"
(a smooth function of its input and timestep), starting from the same unit noise times their own init_noise_sigma
(img2img: from the same source latents noised by their own add_noise, diffusers set up as its img2img pipelines do).
The stochastic schedulers (euler-a, lcm, tcd with eta > 0) get the same pre-drawn per-step noise on both sides:
diffusers' randn_tensor is replaced by a queue of it. Each diffusers scheduler whose ``step`` takes an ``eta`` (ddim,
tcd) is given the recipe's, 0 unless a test sets one, as diffusers' pipelines pass theirs. The latents stay O(1)
(unit noise, unit source, the fake UNet's x0 is O(1)), so the absolute tolerance TOL = 1e-5 is about 1e-5 relative to
the sample scale; where a degenerate schedule leaves larger latents (PNDM at 2 "linspace" steps ends near 50), the
tolerance is TOL times their largest magnitude.

Every scheduler is run at 1 and 2 steps and at its most, ``max_steps``, in every timestep spacing; where that most is
below the 1000 training timesteps, diffusers is shown to fail (IndexError) or to give NaN one step beyond it.

A recipe's eta and timestep spacing (``runtime.sampling.Sampling``): DDIM with eta > 0 against diffusers'
DDIMScheduler given the same per-step noise (its ``variance_noise``), text-to-image and img2img, within TOL as the
others (measured: at most 3.4e-6, as eta 0 gives at most 1.9e-6 on the same loops: diffusers' float32 rounding); a
spacing laid over a config holding another one against diffusers built with that spacing, and the step bound taken
at that spacing. "trailing" for few-step recipes: DDIM and Euler at 1 step start at timestep 999, and at 2 to 12 steps
follow diffusers' trailing schedules, DDIM's target timestep t - 1000 // n included.

TCD (diffusers' TCDScheduler) at 1, 2, 4, 8 and its most (50) steps, etas 0 to 1 (gamma), both prediction types and
img2img strengths; the intermediate timestep floor((1 - eta) * t') is taken in float32 as diffusers does in torch,
shown where float64 floors elsewhere (measured: at most 1.9e-6 over these loops).
"""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    TCDScheduler,
)
from diffusers.schedulers import scheduling_euler_ancestral_discrete, scheduling_lcm, scheduling_tcd

from runtime.errors import ConfigError
from runtime.sampling import Sampling
from runtime.schedulers import (
    ETA_SCHEDULERS,
    MAX_TRAIN_TIMESTEPS,
    SCHEDULER_NAMES,
    SPACED_SCHEDULERS,
    TCD,
    Euler,
    History,
    make_scheduler,
    max_steps,
)

# scheduler/scheduler_config.json of CompVis/stable-diffusion-v1-4 (SD 1.x)
SD1_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.7.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

DIFFUSERS = {
    "dpm++2m": DPMSolverMultistepScheduler,
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "lcm": LCMScheduler,
    "tcd": TCDScheduler,
}
# Stochastic schedulers: the diffusers module whose randn_tensor draws the per-step noise, and how many draws a loop
# of n UNet evaluations makes at an eta (LCM adds none after its last step; TCD none at eta 0 nor after its last).
STOCHASTIC = {
    "euler-a": (scheduling_euler_ancestral_discrete, lambda n, eta: n),
    "lcm": (scheduling_lcm, lambda n, eta: n - 1),
    "tcd": (scheduling_tcd, lambda n, eta: n - 1 if eta > 0 else 0),
}
# Timesteps on their distillation schedule: no spacing, and img2img keeps the N steps (their own set_timesteps).
DISTILLED = ("lcm", "tcd")
NOT_DISTILLED = [name for name in SCHEDULER_NAMES if name not in DISTILLED]
SHAPE = (1, 4, 8, 8)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' np.array(tensor) calls
TOL = 1e-5
# img2img starts: diffusers noises the source in float32 (sqrt of its float32 alpha-bar table, then a multiply-add),
# which is off by a few float32 ulps; tolerance relative to the largest |entry| (sigma_max * 3 ~ 45 for Euler).
NOISED_RTOL = 4e-6

_R = np.random.default_rng(1234).standard_normal(SHAPE).astype(np.float32)  # [1,4,8,8] fixed "weights"


def fake_unet(x: np.ndarray, t: float, config: dict) -> np.ndarray:
    """A smooth, deterministic stand-in for the UNet: [1,4,8,8] float32 -> [1,4,8,8] float32.

    It "denoises" to x0_hat = smooth(x, t) and reports the epsilon or v consistent with x0_hat at timestep t, so the
    latents stay O(1) along the whole trajectory (a random epsilon would blow x0 up by 1/sqrt(alpha_bar) ~ 15 and
    leave the 1e-5 tolerance below float32 resolution). ``x`` is the scaled UNet input (VP latents).
    """
    n = config["num_train_timesteps"]
    betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n) ** 2
    if config["beta_schedule"] == "linear":
        betas = np.linspace(config["beta_start"], config["beta_end"], n)
    alpha_bar = np.interp(float(t), np.arange(n), np.cumprod(1.0 - betas))
    a, s = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    x0_hat = 0.5 * np.tanh(x) * np.cos(float(t) / 300.0) + 0.4 * _R * np.sin(float(t) / 170.0 + 0.5)  # [1,4,8,8]
    eps = (x - a * x0_hat) / s  # [1,4,8,8]
    out = eps if config.get("prediction_type", "epsilon") == "epsilon" else a * eps - s * x0_hat
    return out.astype(np.float32)


def reference_scheduler(name: str, config: dict, steps: int, strength: float = 1.0, img2img: bool = False):
    """A diffusers scheduler set up as its pipeline does, and the timesteps that pipeline's loop runs.

    Text-to-image: set_timesteps(steps). img2img: LCM and TCD as LatentConsistencyModelImg2ImgPipeline
    (set_timesteps with strength=), the others as StableDiffusionImg2ImgPipeline.get_timesteps: skip the first
    t_start * order timesteps and set_begin_index where the scheduler has one (DDIM and PNDM have none).
    """
    sched = DIFFUSERS[name].from_config(config)
    if name in DISTILLED:
        sched.set_timesteps(steps, strength=strength)
        return sched, sched.timesteps
    sched.set_timesteps(steps)
    if not img2img:
        return sched, sched.timesteps
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(t_start * sched.order)
    return sched, sched.timesteps[t_start * sched.order :]


def run_diffusers(
    name: str, config: dict, steps: int, noise: np.ndarray, step_noises=None, strength=1.0, source=None, eta=0.0
):
    sched, timesteps = reference_scheduler(name, config, steps, strength, img2img=source is not None)
    # As the pipelines' prepare_extra_step_kwargs: eta to a step that takes one (TCD's own default, 0.3, never used).
    extra = {"eta": eta} if "eta" in inspect.signature(sched.step).parameters else {}
    if source is None:
        latents = torch.from_numpy(noise) * sched.init_noise_sigma  # [1,4,8,8]
    else:  # img2img: the source noised to the first remaining timestep
        latents = sched.add_noise(torch.from_numpy(source), torch.from_numpy(noise), timesteps[:1])
    start = latents.numpy().copy()
    if step_noises is not None:  # inject our pre-drawn noise instead of torch's
        module = STOCHASTIC[name][0]
        queue = [torch.from_numpy(n) for n in step_noises]
        original = module.randn_tensor
        module.randn_tensor = lambda *a, **k: queue.pop(0)
    try:
        for t in timesteps:
            model_in = sched.scale_model_input(latents, t)
            out = torch.from_numpy(fake_unet(model_in.numpy(), t.item(), config))
            latents = sched.step(out, t, latents, **extra).prev_sample
        assert step_noises is None or not queue  # every pre-drawn noise used, none missing
    finally:
        if step_noises is not None:
            module.randn_tensor = original
    return latents.numpy(), timesteps.numpy().copy(), float(sched.init_noise_sigma), start


def assert_noised_close(got: np.ndarray, want: np.ndarray) -> None:
    """An img2img start (add_noise) equal to diffusers' up to its float32 rounding."""
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=NOISED_RTOL * np.abs(want).max())


def run_ours(
    name: str, config: dict, steps: int, noise: np.ndarray, step_noises=None, strength=1.0, source=None, sched=None
):
    """Our loop, on ``sched`` if given (else the scheduler ``name`` on ``config``)."""
    sched = sched or make_scheduler(name, config, steps, strength=strength)
    if source is None:
        latents = (noise * sched.init_noise_sigma).astype(np.float32)  # [1,4,8,8]
    else:
        latents = sched.add_noise(source, noise, 0)  # [1,4,8,8]
    start = latents.copy()
    history = History()
    for i, t in enumerate(sched.timesteps):
        out = fake_unet(sched.scale_model_input(latents, i), t, config)
        # Past the pre-drawn noises (LCM's last step) pass neither noise nor rng: that step must need none.
        step_noise = None if step_noises is None or i >= len(step_noises) else step_noises[i]
        latents, history = sched.step(out, i, latents, history, noise=step_noise)
        assert latents.dtype == np.float32
    return latents, sched.timesteps, sched.init_noise_sigma, start


def compare(
    name: str,
    config: dict,
    steps: int,
    seed: int = 0,
    strength: float = 1.0,
    img2img: bool = False,
    eta: float = 0.0,
) -> float:
    """Max abs difference of the final latents (asserted <= TOL); with img2img or strength < 1 an img2img loop; eta:
    TCD's (not DDIM's: ``ddim_eta_loops`` feeds DDIM its noise)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(SHAPE).astype(np.float32)  # [1,4,8,8]
    img2img = img2img or strength < 1.0
    source = rng.standard_normal(SHAPE).astype(np.float32) if img2img else None  # [1,4,8,8] "picture"
    ours = make_scheduler(name, config, steps, strength=strength, eta=eta)
    step_noises = None
    if name in STOCHASTIC:  # TCD at eta 0: an empty queue, so a draw on either side fails
        count = STOCHASTIC[name][1](len(ours.timesteps), eta)
        step_noises = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(count)]
    ref, ref_ts, ref_sigma, ref_start = run_diffusers(name, config, steps, noise, step_noises, strength, source, eta)
    got, got_ts, got_sigma, got_start = run_ours(name, config, steps, noise, step_noises, strength, source, ours)
    np.testing.assert_array_equal(got_ts, ref_ts)
    assert got_ts.dtype == ref_ts.dtype
    assert got_sigma == pytest.approx(ref_sigma, rel=1e-6)
    assert got_start.dtype == np.float32
    if img2img:  # the noised source
        assert_noised_close(got_start, ref_start)
    else:
        np.testing.assert_allclose(got_start, ref_start, rtol=1e-6, atol=1e-6)  # the starting noise
    assert np.isfinite(got).all() and got.shape == SHAPE
    err = float(np.abs(got.astype(np.float64) - ref).max())
    tol = TOL * max(1.0, float(np.abs(ref).max()))
    assert err <= tol, f"{name} {config.get('prediction_type')}: max abs error {err:.3g} > {tol:.3g}"
    return err


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name,steps", [("dpm++2m", 25), ("pndm", 50), ("ddim", 25), ("euler", 25), ("euler-a", 25)])
def test_full_loop_matches_diffusers(name, steps, prediction_type):
    compare(name, {**SD1_CONFIG, "prediction_type": prediction_type}, steps)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_timestep_spacings_and_short_schedules(name, spacing):
    # 10 steps: DPM++ takes its lower-order final steps; every spacing builds its own timestep list.
    compare(name, {**SD1_CONFIG, "timestep_spacing": spacing}, 10, seed=1)


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("dpm++2m", {"final_sigmas_type": "sigma_min"}),
        ("dpm++2m", {"solver_order": 1}),
        ("dpm++2m", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}),
        ("euler", {"final_sigmas_type": "sigma_min"}),
        ("ddim", {"set_alpha_to_one": True, "prediction_type": "v_prediction"}),
        ("pndm", {"set_alpha_to_one": True}),
        ("lcm", {"clip_sample": True}),  # the fake UNet's x0 reaches |x0| > 1: clipping acts
        ("lcm", {"timestep_scaling": 1.0}),  # c_skip matters more at low timesteps
        ("lcm", {"original_inference_steps": 25, "prediction_type": "v_prediction"}),
        ("lcm", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}),
        ("tcd", {"original_inference_steps": 25, "prediction_type": "v_prediction"}),
        ("tcd", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}),
        ("tcd", {"set_alpha_to_one": True, "clip_sample": True}),  # stored by TCDScheduler, never read
    ],
)
def test_config_variants_match_diffusers(name, overrides):
    compare(name, {**SD1_CONFIG, **overrides}, 20, seed=2)


def test_pndm_50_steps_repeats_second_timestep():
    ts = make_scheduler("pndm", SD1_CONFIG, 50).timesteps
    assert len(ts) == 51  # 51 UNet evaluations for 50 steps (docs/method.md#the-official-recipe)
    assert ts[:4].tolist() == [981, 961, 961, 941]
    assert ts[-2:].tolist() == [21, 1]


def test_step_is_a_pure_function_of_its_inputs():
    sched = make_scheduler("dpm++2m", SD1_CONFIG, 25)
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)  # [1,4,8,8]
    x1, h1 = sched.step(fake_unet(x, sched.timesteps[0], SD1_CONFIG), 0, x, History())
    again, _ = sched.step(fake_unet(x, sched.timesteps[0], SD1_CONFIG), 0, x, History())
    np.testing.assert_array_equal(x1, again)
    a, _ = sched.step(fake_unet(x1, sched.timesteps[1], SD1_CONFIG), 1, x1, h1)
    b, _ = sched.step(fake_unet(x1, sched.timesteps[1], SD1_CONFIG), 1, x1, h1)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="History"):
        sched.step(fake_unet(x1, sched.timesteps[1], SD1_CONFIG), 1, x1, History())


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_output_dtype_follows_the_sample(name, dtype):
    sched = make_scheduler(name, SD1_CONFIG, 10)
    x = np.random.default_rng(4).standard_normal(SHAPE).astype(dtype)  # [1,4,8,8]
    model_in = sched.scale_model_input(x, 0)
    out, _ = sched.step(fake_unet(model_in, sched.timesteps[0], SD1_CONFIG), 0, x, rng=np.random.default_rng(0))
    assert model_in.dtype == dtype and out.dtype == dtype


def test_euler_ancestral_rng_equals_explicit_noise():
    sched = make_scheduler("euler-a", SD1_CONFIG, 25)
    x = np.ones(SHAPE, dtype=np.float32) * sched.init_noise_sigma  # [1,4,8,8]
    out = fake_unet(sched.scale_model_input(x, 0), sched.timesteps[0], SD1_CONFIG)
    from_rng, _ = sched.step(out, 0, x, rng=np.random.default_rng(7))
    drawn = np.random.default_rng(7).standard_normal(SHAPE)
    from_noise, _ = sched.step(out, 0, x, noise=drawn)
    np.testing.assert_array_equal(from_rng, from_noise)
    with pytest.raises(ConfigError, match="rng"):
        sched.step(out, 0, x)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_lcm_full_loop_matches_diffusers(steps, prediction_type):
    compare("lcm", {**SD1_CONFIG, "prediction_type": prediction_type}, steps, seed=5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("strength", [0.5, 0.8])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_lcm_img2img_matches_diffusers(steps, strength, prediction_type):
    compare("lcm", {**SD1_CONFIG, "prediction_type": prediction_type}, steps, seed=6, strength=strength)


@pytest.mark.parametrize("strength", [1.0, 0.8, 0.58, 0.5, 0.3, 0.1])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 6, 7, 8, 13, 25, 50])
@pytest.mark.parametrize("name", DISTILLED)
def test_distilled_timesteps_match_diffusers(name, steps, strength):
    # Same timesteps, or refused on both sides when strength leaves fewer than `steps` (0.58: int(50*0.58) = 28).
    ref = DIFFUSERS[name].from_config(SD1_CONFIG)
    try:
        ref.set_timesteps(steps, strength=strength)
    except ValueError:
        with pytest.raises(ConfigError, match="strength"):
            make_scheduler(name, SD1_CONFIG, steps, strength=strength)
        return
    got = make_scheduler(name, SD1_CONFIG, steps, strength=strength).timesteps
    np.testing.assert_array_equal(got, ref.timesteps.numpy())
    assert got.dtype == ref.timesteps.numpy().dtype == np.int64


@pytest.mark.parametrize("name", DISTILLED)
def test_distilled_schedule_ignores_steps_offset_and_spacing(name):
    # SD's PNDM config carries steps_offset=1 (PNDM: 981, 961, ...); the distillation schedule ends its training grid
    # at 999, so one step already starts at the last training timestep.
    assert make_scheduler(name, SD1_CONFIG, 1).timesteps.tolist() == [999]
    assert make_scheduler(name, SD1_CONFIG, 2).timesteps.tolist() == [999, 499]
    assert make_scheduler(name, SD1_CONFIG, 4).timesteps.tolist() == [999, 759, 499, 259]
    assert make_scheduler(name, SD1_CONFIG, 4, strength=0.5).timesteps.tolist() == [499, 379, 259, 139]
    trailing = make_scheduler(name, {**SD1_CONFIG, "timestep_spacing": "trailing", "steps_offset": 0}, 4)
    assert trailing.timesteps.tolist() == [999, 759, 499, 259]


@pytest.mark.parametrize("name", DISTILLED)
def test_distilled_add_noise_matches_diffusers(name):
    rng = np.random.default_rng(8)
    source, noise = (rng.standard_normal(SHAPE).astype(np.float32) for _ in range(2))  # [1,4,8,8] each
    ours = make_scheduler(name, SD1_CONFIG, 4, strength=0.6)
    ref = DIFFUSERS[name].from_config(SD1_CONFIG)
    ref.set_timesteps(4, strength=0.6)
    for i in range(4):
        want = ref.add_noise(torch.from_numpy(source), torch.from_numpy(noise), ref.timesteps[i : i + 1]).numpy()
        got = ours.add_noise(source, noise, i)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)  # diffusers: float32 cumprod and arithmetic
    assert ours.add_noise(source.astype(np.float16), noise, 0).dtype == np.float16
    with pytest.raises(IndexError):
        ours.add_noise(source, noise, 4)
    with pytest.raises(ValueError, match="shape"):
        ours.add_noise(source, noise[0], 0)


def test_lcm_rng_equals_explicit_noise_and_last_step_adds_none():
    sched = make_scheduler("lcm", SD1_CONFIG, 4)
    x = np.random.default_rng(9).standard_normal(SHAPE).astype(np.float32)  # [1,4,8,8]
    out = fake_unet(x, sched.timesteps[0], SD1_CONFIG)
    from_rng, history = sched.step(out, 0, x, rng=np.random.default_rng(7))
    assert history == History()
    from_noise, _ = sched.step(out, 0, x, noise=np.random.default_rng(7).standard_normal(SHAPE))
    np.testing.assert_array_equal(from_rng, from_noise)
    other, _ = sched.step(out, 0, x, rng=np.random.default_rng(8))
    assert np.abs(other - from_rng).max() > 1e-2  # the noise does enter the non-final steps
    with pytest.raises(ConfigError, match="rng"):
        sched.step(out, 0, x)
    with pytest.raises(ValueError, match="shape"):
        sched.step(out, 0, x, noise=np.zeros((4, 8, 8)))

    # Last step: the consistency estimate itself; no noise needed, any given is ignored and the rng is not drawn.
    last = len(sched.timesteps) - 1
    out = fake_unet(x, sched.timesteps[last], SD1_CONFIG)
    plain, _ = sched.step(out, last, x)
    rng = np.random.default_rng(7)
    with_rng, _ = sched.step(out, last, x, rng=rng, noise=None)
    with_noise, _ = sched.step(out, last, x, noise=np.full(SHAPE, 100.0))
    np.testing.assert_array_equal(plain, with_rng)
    np.testing.assert_array_equal(plain, with_noise)
    np.testing.assert_array_equal(rng.standard_normal(3), np.random.default_rng(7).standard_normal(3))
    t = float(sched.timesteps[last]) * 10.0
    c_skip, c_out = 0.25 / (t**2 + 0.25), t / np.sqrt(t**2 + 0.25)
    x0 = (x - sched.s[last] * out.astype(np.float64)) / sched.a[last]  # [1,4,8,8]
    np.testing.assert_allclose(plain, c_skip * x + c_out * x0, rtol=0, atol=1e-6)


# ---- TCD: its gamma (the recipe's eta) -------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.3, 0.6, 1.0])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_tcd_full_loop_matches_diffusers(steps, eta, prediction_type):
    # One step draws no noise at any eta; n steps draw n - 1 (eta > 0), each fed to diffusers' randn_tensor too.
    compare("tcd", {**SD1_CONFIG, "prediction_type": prediction_type}, steps, seed=30 + steps, eta=eta)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("strength", [0.5, 0.8])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_tcd_img2img_matches_diffusers(steps, strength, eta, prediction_type):
    compare("tcd", {**SD1_CONFIG, "prediction_type": prediction_type}, steps, seed=40, strength=strength, eta=eta)


@pytest.mark.parametrize(
    "steps, eta, overrides",
    [(50, 0.3, {}), (50, 1.0, {"prediction_type": "v_prediction"}), (25, 0.5, {"original_inference_steps": 25}),
     (10, 0.7, {"timestep_spacing": "trailing", "steps_offset": 0})],
)  # fmt: skip
def test_tcd_with_an_eta_at_its_most_steps_and_other_configs_matches_diffusers(steps, eta, overrides):
    compare("tcd", {**SD1_CONFIG, **overrides}, steps, seed=41, eta=eta)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta, float32_s, float64_s", [(5 / 11, 414, 413), (9 / 23, 461, 462)])
def test_tcd_floors_its_intermediate_timestep_in_float32_as_diffusers(eta, float32_s, float64_s, prediction_type):
    """4 steps: the first lands on t' = 759 through s = floor((1 - eta) * 759), which diffusers computes in torch
    float32 (float32_s); at these etas float64 floors to the neighbouring timestep, a difference the loop parity
    sees."""
    assert math.floor((1.0 - eta) * 759) == float64_s
    sched = make_scheduler("tcd", SD1_CONFIG, 4, eta=eta)
    assert isinstance(sched, TCD)
    assert sched.timesteps[1] == 759 and sched.a_s[0] == np.sqrt(sched.alphas_cumprod[float32_s])
    compare("tcd", {**SD1_CONFIG, "prediction_type": prediction_type}, 4, seed=42, eta=eta)


def test_tcd_draws_noise_with_an_eta_only_and_never_at_its_last_step():
    sched = make_scheduler("tcd", SD1_CONFIG, 4, eta=0.3)
    x = np.random.default_rng(9).standard_normal(SHAPE).astype(np.float32)  # [1,4,8,8]
    out = fake_unet(x, sched.timesteps[0], SD1_CONFIG)
    from_rng, history = sched.step(out, 0, x, rng=np.random.default_rng(7))
    assert history == History()
    from_noise, _ = sched.step(out, 0, x, noise=np.random.default_rng(7).standard_normal(SHAPE))
    np.testing.assert_array_equal(from_rng, from_noise)
    other, _ = sched.step(out, 0, x, rng=np.random.default_rng(8))
    assert np.abs(other - from_rng).max() > 1e-2  # the noise does enter the non-final steps
    with pytest.raises(ConfigError, match="rng"):
        sched.step(out, 0, x)
    plain, _ = make_scheduler("tcd", SD1_CONFIG, 4).step(out, 0, x)  # eta 0: deterministic, no rng needed
    assert np.abs(plain - from_rng).max() > 1e-2

    # The last step: x0 re-noised to timestep 0 (diffusers' step at timestep 259 of its 4), no noise drawn.
    last = len(sched.timesteps) - 1
    out = fake_unet(x, sched.timesteps[last], SD1_CONFIG)
    rng = np.random.default_rng(7)
    at_last, _ = sched.step(out, last, x, rng=rng)
    with_noise, _ = sched.step(out, last, x, noise=np.full(SHAPE, 100.0))
    np.testing.assert_array_equal(at_last, with_noise)
    np.testing.assert_array_equal(rng.standard_normal(3), np.random.default_rng(7).standard_normal(3))
    ref = TCDScheduler.from_config(SD1_CONFIG)
    ref.set_timesteps(4)
    module = scheduling_tcd.randn_tensor
    scheduling_tcd.randn_tensor = None  # a draw would fail
    try:
        want = ref.step(torch.from_numpy(out), sched.timesteps[last], torch.from_numpy(x), eta=0.3).prev_sample
    finally:
        scheduling_tcd.randn_tensor = module
    np.testing.assert_allclose(at_last, want.numpy(), rtol=0, atol=TOL)


@pytest.mark.parametrize(
    "steps,strength,overrides,match",
    [
        (
            0,
            1.0,
            {},
            r"--steps is 0; {name} takes 1 to 50 steps with this model's schedule \(original_inference_steps 50\)",
        ),
        (51, 1.0, {}, "--steps is 51; {name} takes 1 to 50 steps"),
        (9, 1.0, {"original_inference_steps": 8}, "--steps is 9; {name} takes 1 to 8 steps"),
        (4, 1.0, {"original_inference_steps": 2000}, "original_inference_steps is 2000: expected an integer"),
        (4, 1.0, {"original_inference_steps": 0}, "original_inference_steps is 0: expected an integer"),
        (4, 0.0, {}, r"--strength is 0.0; it must be a number in \(0, 1\]"),
        (4, 1.5, {}, "--strength is 1.5;"),
        (4, -0.2, {}, "--strength is -0.2;"),
        (4, float("nan"), {}, "--strength is nan;"),
        (4, True, {}, "--strength is True;"),
        (4, "half", {}, "--strength is 'half';"),
        (8, 0.1, {}, r"--strength 0.1 leaves int\(50 \* 0.1\) = 5 .* --steps 8"),
        (4, 1.0, {"prediction_type": "sample"}, "prediction_type"),
        (4, 1.0, {"thresholding": True}, "thresholding"),
        (4, 1.0, {"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
    ],
)
@pytest.mark.parametrize("name", DISTILLED)
def test_distilled_invalid_settings_are_config_errors(name, steps, strength, overrides, match):
    with pytest.raises(ConfigError, match=match.replace("{name}", name)):
        make_scheduler(name, {**SD1_CONFIG, **overrides}, steps, strength=strength)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_scheduler_takes_strength(name):
    sched = make_scheduler(name, SD1_CONFIG, 10, strength=0.5)
    assert sched.strength == 0.5 and make_scheduler(name, SD1_CONFIG, 10).strength == 1.0
    with pytest.raises(AttributeError):
        sched.strength = 1.0  # read-only: the tables were built for it
    # UNet evaluations left: LCM and TCD keep their 10 steps; PNDM the last int(10 * 0.5) + 1 = 6 of its 11 timesteps.
    assert len(sched.timesteps) == {"lcm": 10, "tcd": 10, "pndm": 6}.get(name, 5)
    if name not in DISTILLED:  # the last entries of the full schedule
        full = make_scheduler(name, SD1_CONFIG, 10).timesteps
        np.testing.assert_array_equal(sched.timesteps, full[len(full) - len(sched.timesteps) :])
    with pytest.raises(ConfigError, match=r"must be a number in \(0, 1\]"):
        make_scheduler(name, SD1_CONFIG, 10, strength=2.0)


IMG2IMG_CASES = [
    ("dpm++2m", 25),
    ("dpm++2m", 10),  # lower_order_final
    ("pndm", 50),
    ("pndm", 10),
    ("ddim", 25),
    ("euler", 25),
    ("euler", 10),
    ("euler-a", 25),
]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("strength", [0.3, 0.6, 0.75, 0.9, 1.0])  # 0.9 of 10 steps: PNDM's t_start = 1
@pytest.mark.parametrize("name,steps", IMG2IMG_CASES)
def test_img2img_loop_matches_diffusers(name, steps, strength, prediction_type):
    # compare(): remaining timesteps == diffusers' timesteps[t_start * order:], add_noise(source, noise, 0) ==
    # diffusers' add_noise(source, noise, timesteps[:1]) after set_begin_index, final latents within TOL.
    compare(name, {**SD1_CONFIG, "prediction_type": prediction_type}, steps, seed=10, strength=strength, img2img=True)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("name", NOT_DISTILLED)
def test_img2img_timestep_spacings_match_diffusers(name, spacing):
    compare(name, {**SD1_CONFIG, "timestep_spacing": spacing}, 10, seed=11, strength=0.6)


@pytest.mark.parametrize("steps,strength", [(25, 0.3), (10, 0.3), (14, 0.5)])
def test_dpm_img2img_final_order_follows_the_full_schedule(steps, strength):
    # With sigma_min the last step is second order unless lower_order_final applies, and diffusers tests that on the
    # full schedule's length (< 15), not on the steps that remain: 25 steps at 0.3 (7 left) keep the second order.
    compare("dpm++2m", {**SD1_CONFIG, "final_sigmas_type": "sigma_min"}, steps, seed=12, strength=strength)


@pytest.mark.parametrize("name", NOT_DISTILLED)
def test_add_noise_at_every_remaining_step_matches_diffusers(name):
    rng = np.random.default_rng(13)
    source, noise = (rng.standard_normal(SHAPE).astype(np.float32) for _ in range(2))  # [1,4,8,8] each
    ours = make_scheduler(name, SD1_CONFIG, 10, strength=0.6)
    ref, _ = reference_scheduler(name, SD1_CONFIG, 10)  # no begin index: add_noise looks each timestep up
    for i in range(len(ours.timesteps)):
        t = torch.from_numpy(ours.timesteps[i : i + 1])
        want = ref.add_noise(torch.from_numpy(source), torch.from_numpy(noise), t).numpy()  # [1,4,8,8]
        assert_noised_close(ours.add_noise(source, noise, i), want)
    assert ours.add_noise(source.astype(np.float16), noise, 0).dtype == np.float16
    with pytest.raises(IndexError):
        ours.add_noise(source, noise, len(ours.timesteps))
    with pytest.raises(ValueError, match="shape"):
        ours.add_noise(source, noise[0], 0)


@pytest.mark.parametrize("name", NOT_DISTILLED)
def test_strength_leaving_no_step_is_refused(name):
    # diffusers' StableDiffusionImg2ImgPipeline would run nothing here (PNDM: only its last timestep).
    _, ref_timesteps = reference_scheduler(name, SD1_CONFIG, 3, strength=0.3, img2img=True)
    assert len(ref_timesteps) == (name == "pndm")
    with pytest.raises(ConfigError, match=r"--strength 0.3 leaves int\(3 \* 0.3\) = 0 of the 3 steps to run") as info:
        make_scheduler(name, SD1_CONFIG, 3, strength=0.3)
    assert info.value.hint == "use a strength of at least 0.3334 for 3 steps, or at least 4 steps at strength 0.3"
    assert len(make_scheduler(name, SD1_CONFIG, 3, strength=0.3334).timesteps) >= 1
    assert len(make_scheduler(name, SD1_CONFIG, 4, strength=0.3).timesteps) >= 1
    # Python float arithmetic, as diffusers: 49 * (1 / 49) = 0.9999999999999999 truncates to 0.
    with pytest.raises(ConfigError, match=r"int\(49 \* 0.02040816326530612\) = 0") as info:
        make_scheduler(name, SD1_CONFIG, 49, strength=1 / 49)
    assert info.value.hint == (
        "use a strength of at least 0.0205 for 49 steps, or at least 50 steps at strength 0.02040816326530612"
    )
    assert len(make_scheduler(name, SD1_CONFIG, 50, strength=1 / 49).timesteps) >= 1


def test_unknown_scheduler_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        make_scheduler("heun", SD1_CONFIG, 25)
    for name in SCHEDULER_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("pndm", {"skip_prk_steps": False}),
        ("euler", {"use_karras_sigmas": True}),
        ("dpm++2m", {"algorithm_type": "sde-dpmsolver++"}),
        ("ddim", {"prediction_type": "sample"}),
        ("ddim", {"timestep_spacing": "uniform"}),
    ],
)
def test_unsupported_config_is_a_config_error(name, overrides):
    with pytest.raises(ConfigError):
        make_scheduler(name, {**SD1_CONFIG, **overrides}, 25)


# ---- the step bound: 1, 2 and the most steps of every scheduler ------------------------------------------------------

SPACINGS = ["leading", "linspace", "trailing"]
# The most steps on SD's config (1000 training timesteps, steps_offset 1) where that is below 1000: diffusers fails or
# draws NaN one step beyond (test_one_step_beyond_the_bound_diffusers_fails_too).
BELOW_1000 = {
    ("ddim", "leading"): 999,
    ("pndm", "leading"): 999,
    ("dpm++2m", "leading"): 998,
    ("dpm++2m", "linspace"): 999,
}


def bound(name: str, spacing: str) -> int:
    return 50 if name in DISTILLED else BELOW_1000.get((name, spacing), 1000)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_max_steps_on_sd_config(name, spacing):
    config = {**SD1_CONFIG, "timestep_spacing": spacing}
    most = max_steps(name, config)
    assert most == bound(name, spacing)
    assert len(make_scheduler(name, config, most).timesteps) == most + (name == "pndm")  # PNDM: one more evaluation
    with pytest.raises(ConfigError, match=rf"^--steps is {most + 1}; {re.escape(name)} takes 1 to {most} steps"):
        make_scheduler(name, config, most + 1)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", ["ddim", "dpm++2m", "pndm"])
def test_a_step_count_below_the_most_that_the_schedule_cannot_take_names_its_neighbours(name, spacing):
    """Every count from 1 to the most either builds, or is one the schedule's own rounding breaks ("trailing" at 61
    steps: arange(1000, 0, -1000/61) overshoots to 0, so diffusers' timesteps end at -1, indexing alpha_bar from the
    end): refused in one line that says so and names counts near it that build, never "takes 1 to 1000"."""
    from diffusers import DDIMScheduler

    config = {**SD1_CONFIG, "timestep_spacing": spacing}
    reference = DDIMScheduler.from_config(config)
    refused = []
    for steps in range(1, max_steps(name, config) + 1):
        try:
            make_scheduler(name, config, steps)
        except ConfigError as exc:
            refused.append(steps)
            assert str(exc).startswith(f"--steps is {steps}; at this spacing") and "takes 1 to" not in str(exc)
            neighbours = [int(n) for n in re.findall(r"\d+", exc.hint or "")]
            assert len(neighbours) == 2 and all(abs(n - steps) <= 20 for n in neighbours), exc.hint
            for n in neighbours:
                make_scheduler(name, config, n)
            reference.set_timesteps(steps)  # diffusers' own schedule at that count is broken the same way
            timesteps = reference.timesteps.numpy()
            assert timesteps.min() < 0 or len(set(timesteps.tolist())) < len(timesteps) or len(timesteps) != steps
    assert bool(refused) == (spacing == "trailing"), refused[:5]


@pytest.mark.parametrize("steps", [1, 2, "max"])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_scheduler_at_1_2_and_its_most_steps_matches_diffusers(name, spacing, steps):
    config = {**SD1_CONFIG, "timestep_spacing": spacing}
    compare(name, config, max_steps(name, config) if steps == "max" else steps, seed=14)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", NOT_DISTILLED)
def test_img2img_at_the_most_steps_matches_diffusers(name, spacing):
    config = {**SD1_CONFIG, "timestep_spacing": spacing}
    most = max_steps(name, config)
    compare(name, config, most, seed=15, strength=0.5)
    compare(name, config, most, seed=15, strength=math.ceil(1e4 / most) / 1e4)  # the least strength: one step left


@pytest.mark.parametrize("name,spacing", list(BELOW_1000))
def test_one_step_beyond_the_bound_diffusers_fails_too(name, spacing):
    # Why the bound is below 1000 there: the spacing puts a timestep on 1000 (past the table: IndexError), or two on
    # one (DPM++'s log-SNR step h is 0: NaN).
    config = {**SD1_CONFIG, "timestep_spacing": spacing}
    noise = np.random.default_rng(16).standard_normal(SHAPE).astype(np.float32)
    try:
        latents = run_diffusers(name, config, bound(name, spacing) + 1, noise)[0]
    except IndexError:
        return
    assert not np.isfinite(latents).all()


@pytest.mark.parametrize("steps", [2.5, 25.0, "25", True, None, -1, 10**18])
def test_steps_that_are_not_a_whole_number_in_range_are_one_config_error(steps):
    with pytest.raises(ConfigError, match=rf"^--steps is {re.escape(repr(steps))}; dpm\+\+2m takes 1 to 999 steps"):
        make_scheduler("dpm++2m", SD1_CONFIG, steps)
    assert len(make_scheduler("dpm++2m", SD1_CONFIG, np.int32(25)).timesteps) == 25  # numpy integers are steps too


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            {"num_train_timesteps": 10**9},
            rf"^scheduler_config.num_train_timesteps is 1000000000: expected an integer in 2\.\.{MAX_TRAIN_TIMESTEPS}$",
        ),
        ({"num_train_timesteps": 1}, "^scheduler_config.num_train_timesteps is 1: expected an integer"),
        ({"num_train_timesteps": 1000.0}, "^scheduler_config.num_train_timesteps is 1000.0: expected an integer"),
        ({"steps_offset": 1000}, r"^scheduler_config.steps_offset is 1000: expected an integer in 0\.\.999$"),
        ({"steps_offset": -1}, "^scheduler_config.steps_offset is -1: expected an integer"),
        ({"steps_offset": "1"}, "^scheduler_config.steps_offset is '1': expected an integer"),
        (
            {"trained_betas": [0.0] * 1000},
            r"^scheduler_config.trained_betas\[0\] is 0.0: expected a number in \(0, 1\)$",
        ),
        ({"trained_betas": [0.01] * 999 + ["x"]}, r"^scheduler_config.trained_betas\[999\] is 'x': expected a number"),
        ({"trained_betas": [0.01] * 999 + [None]}, r"^scheduler_config.trained_betas\[999\] is None: expected"),
        ({"trained_betas": [0.01] * 999 + [True]}, r"^scheduler_config.trained_betas\[999\] is True: expected"),
        (
            {"trained_betas": [0.01] * 10},
            r"^scheduler_config.trained_betas is \[0.01, .*: expected null or a list of 1000",
        ),
        ({"trained_betas": "0.01"}, r"^scheduler_config.trained_betas is '0.01': expected null or a list of 1000"),
        ({"beta_end": float("nan")}, r"^scheduler_config.beta_end is nan: expected a number in \(0, 1\)$"),
        ({"beta_start": "x"}, r"^scheduler_config.beta_start is 'x': expected a number in \(0, 1\)$"),
        ({"beta_start": -0.0001}, r"^scheduler_config.beta_start is -0.0001: expected"),  # scaled_linear: complex
        ({"beta_start": None}, r"^scheduler_config.beta_start is None: expected"),
        ({"beta_end": 1}, r"^scheduler_config.beta_end is 1: expected"),
        ({"beta_end": True}, r"^scheduler_config.beta_end is True: expected"),
        ({"beta_schedule": ["linear"]}, r"^scheduler_config.beta_schedule is \['linear'\]: expected one of linear"),
        ({"beta_schedule": "squaredcos_cap_v2"}, r"^scheduler_config.beta_schedule is 'squaredcos_cap_v2': expected"),
        ({"prediction_type": "sample"}, r"^scheduler_config.prediction_type is 'sample': expected one of epsilon"),
        ({"timestep_spacing": None}, r"^scheduler_config.timestep_spacing is None: expected one of leading"),
        ({"thresholding": 1}, r"^scheduler_config.thresholding is 1: expected False"),
    ],
)
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_a_schedule_out_of_bounds_is_a_config_error(name, overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_scheduler(name, {**SD1_CONFIG, **overrides}, 4)


@pytest.mark.parametrize(
    "name,key,value,expected",
    [
        ("dpm++2m", "lambda_min_clipped", "-5.1", "a number below"),
        ("dpm++2m", "lambda_min_clipped", float("nan"), "a number below"),
        ("dpm++2m", "lambda_min_clipped", float("inf"), "a number below"),
        ("dpm++2m", "solver_order", True, r"an integer in 1\.\.2"),
        ("dpm++2m", "solver_order", 3, r"an integer in 1\.\.2"),
        ("dpm++2m", "lower_order_final", "false", "true or false"),
        ("dpm++2m", "euler_at_final", 0, "true or false"),
        ("dpm++2m", "algorithm_type", "sde-dpmsolver++", "'dpmsolver\\+\\+'"),
        ("dpm++2m", "final_sigmas_type", 0, "one of zero, sigma_min"),
        ("euler", "final_sigmas_type", "max", "one of zero, sigma_min"),
        ("ddim", "set_alpha_to_one", None, "true or false"),
        ("ddim", "clip_sample", "no", "true or false"),
        ("ddim", "clip_sample_range", "1", "a finite number > 0"),
        ("ddim", "clip_sample_range", float("inf"), "a finite number > 0"),
        ("pndm", "skip_prk_steps", False, "true"),
        ("pndm", "skip_prk_steps", "true", "true"),
        ("lcm", "timestep_scaling", -1.0, "a finite number > 0"),
        ("lcm", "timestep_scaling", [10.0], "a finite number > 0"),
        ("lcm", "original_inference_steps", 50.0, r"an integer in 1\.\.1000"),
        ("lcm", "clip_sample", "false", "true or false"),
        ("tcd", "original_inference_steps", 50.0, r"an integer in 1\.\.1000"),
        ("tcd", "original_inference_steps", 0, r"an integer in 1\.\.1000"),
        ("tcd", "timestep_spacing", "uniform", "one of leading, trailing, linspace"),
    ],
)
def test_a_config_key_off_its_type_is_one_config_error_naming_it(name, key, value, expected):
    # Each of these failed later (a TypeError, a complex or NaN schedule) or was read wrongly ("false" is truthy).
    with pytest.raises(ConfigError, match=rf"^scheduler_config\.{key} is .*: expected {expected}") as info:
        make_scheduler(name, {**SD1_CONFIG, key: value}, 4)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=rf"^scheduler_config\.{key} is"):
        max_steps(name, {**SD1_CONFIG, key: value})


def test_a_key_only_another_scheduler_reads_is_ignored():
    assert len(make_scheduler("pndm", {**SD1_CONFIG, "lambda_min_clipped": "x", "solver_order": 7}, 4).timesteps) == 5


def test_negative_infinity_clips_nothing_and_the_config_values_come_back_as_plain_numbers():
    config = {**SD1_CONFIG, "lambda_min_clipped": -math.inf, "num_train_timesteps": np.int64(1000)}
    sched = make_scheduler("dpm++2m", config, 25)
    assert sched.timesteps.tolist() == make_scheduler("dpm++2m", SD1_CONFIG, 25).timesteps.tolist()
    assert type(sched.config["num_train_timesteps"]) is int


def test_max_steps_is_computed_once_per_config():
    from runtime.schedulers import _max_steps

    config = {**SD1_CONFIG, "timestep_spacing": "linspace", "beta_end": 0.0121}  # a config no other test uses
    before = _max_steps.cache_info()
    assert max_steps("dpm++2m", config) == 999
    for steps in (999, 25):  # each scheduler build checks steps against the bound
        make_scheduler("dpm++2m", config, steps, strength=0.5)
    after = _max_steps.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 2


@pytest.mark.parametrize("strength", [5e-324, 1e-4])  # the least float above 0 (its inverse is inf); 1e-4
@pytest.mark.parametrize("name", NOT_DISTILLED)
def test_a_strength_too_small_for_any_step_count_says_the_least_strength(name, strength):
    # int(steps * strength) >= 1 needs more steps than the scheduler takes: the hint names the strength alone.
    with pytest.raises(ConfigError, match=rf"^--strength {strength!r} leaves int\(4 \* {strength!r}\) = 0") as info:
        make_scheduler(name, SD1_CONFIG, 4, strength=strength)
    assert info.value.hint == "use a strength of at least 0.25 for 4 steps"


# ---- a recipe's eta (DDIM's) and timestep spacing ---------------------------------------------------------------------


def ddim_eta_loops(config: dict, steps: int, eta: float, seed: int, strength: float = 1.0):
    """DDIM with ``eta`` in both implementations, each fed the same fresh noise at every step (diffusers' as
    ``variance_noise``): -> (ours, diffusers') final latents [1,4,8,8], the timesteps checked equal."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(SHAPE).astype(np.float32)  # [1,4,8,8]
    source = rng.standard_normal(SHAPE).astype(np.float32) if strength < 1 else None  # [1,4,8,8] "picture"
    ours = Sampling("ddim", steps, eta=eta).make_scheduler(config, strength)
    step_noises = [rng.standard_normal(SHAPE).astype(np.float32) for _ in ours.timesteps]
    sched, timesteps = reference_scheduler("ddim", config, steps, strength, img2img=source is not None)
    np.testing.assert_array_equal(ours.timesteps, timesteps.numpy())
    if source is None:
        theirs = torch.from_numpy(noise) * sched.init_noise_sigma
        got = (noise * ours.init_noise_sigma).astype(np.float32)
    else:
        theirs = sched.add_noise(torch.from_numpy(source), torch.from_numpy(noise), timesteps[:1])
        got = ours.add_noise(source, noise, 0)
    history = History()
    for i, t in enumerate(timesteps):
        out = torch.from_numpy(fake_unet(sched.scale_model_input(theirs, t).numpy(), t.item(), config))
        theirs = sched.step(out, t, theirs, eta=eta, variance_noise=torch.from_numpy(step_noises[i])).prev_sample
        got, history = ours.step(fake_unet(got, ours.timesteps[i], config), i, got, history, noise=step_noises[i])
    return got, theirs.numpy()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(
    "eta, steps, overrides",
    [(1.0, 50, {}), (0.5, 25, {}), (0.3, 10, {"timestep_spacing": "trailing"}), (1.0, 4, {"set_alpha_to_one": True}),
     (0.7, 1, {}), (0.5, 20, {"clip_sample": True})],
)  # fmt: skip
def test_ddim_eta_matches_diffusers(eta, steps, overrides, prediction_type):
    config = {**SD1_CONFIG, "prediction_type": prediction_type, **overrides}
    got, want = ddim_eta_loops(config, steps, eta, seed=steps)
    assert np.isfinite(got).all()
    error = float(np.abs(got.astype(np.float64) - want).max())
    assert error <= TOL * max(1.0, float(np.abs(want).max())), f"eta {eta}, {steps} steps: {error:.3g}"
    deterministic = ddim_eta_loops(config, steps, 0.0, seed=steps)[0]
    assert float(np.abs(got - deterministic).max()) > 1e-2  # the fresh noise moved the picture


@pytest.mark.parametrize("strength", [0.6, 0.3])
def test_ddim_eta_img2img_matches_diffusers(strength):
    got, want = ddim_eta_loops(SD1_CONFIG, 30, 0.8, seed=3, strength=strength)
    assert float(np.abs(got.astype(np.float64) - want).max()) <= TOL * max(1.0, float(np.abs(want).max()))


def test_ddim_eta_draws_its_noise_from_the_rng_at_every_step():
    sched = make_scheduler("ddim", SD1_CONFIG, 5, eta=0.5)
    x = np.ones(SHAPE, dtype=np.float32)  # [1,4,8,8]
    rng, drawn = np.random.default_rng(7), np.random.default_rng(7)
    from_rng, from_noise = x, x
    for i, t in enumerate(sched.timesteps):
        from_rng, _ = sched.step(fake_unet(from_rng, t, SD1_CONFIG), i, from_rng, rng=rng)
        from_noise, _ = sched.step(
            fake_unet(from_noise, t, SD1_CONFIG), i, from_noise, noise=drawn.standard_normal(SHAPE)
        )
    np.testing.assert_array_equal(from_rng, from_noise)
    with pytest.raises(ConfigError, match="rng"):
        sched.step(fake_unet(x, sched.timesteps[0], SD1_CONFIG), 0, x)


@pytest.mark.parametrize("name", [n for n in SCHEDULER_NAMES if n not in ETA_SCHEDULERS])
def test_only_ddim_and_tcd_take_an_eta(name):
    assert ETA_SCHEDULERS == ("ddim", "tcd")
    with pytest.raises(ValueError, match="takes no eta"):
        make_scheduler(name, SD1_CONFIG, 4, eta=0.5)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", SPACED_SCHEDULERS)
def test_a_recipes_spacing_draws_as_diffusers_built_with_it(name, spacing):
    """The bundle's config holds another spacing; the recipe's is the one drawn with, as diffusers built with it."""
    bundle_config = {**SD1_CONFIG, "timestep_spacing": next(s for s in SPACINGS if s != spacing)}
    with_spacing = {**SD1_CONFIG, "timestep_spacing": spacing}
    rng = np.random.default_rng(21)
    noise = rng.standard_normal(SHAPE).astype(np.float32)  # [1,4,8,8]
    ours = Sampling(name, 10, timestep_spacing=spacing).make_scheduler(bundle_config)
    step_noises = (
        [rng.standard_normal(SHAPE).astype(np.float32) for _ in ours.timesteps] if name in STOCHASTIC else None
    )
    want, want_ts, want_sigma, _ = run_diffusers(name, with_spacing, 10, noise, step_noises)
    got, got_ts, got_sigma, _ = run_ours(name, bundle_config, 10, noise, step_noises, sched=ours)
    np.testing.assert_array_equal(got_ts, want_ts)
    assert got_sigma == pytest.approx(want_sigma, rel=1e-6)
    assert float(np.abs(got.astype(np.float64) - want).max()) <= TOL * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", SPACED_SCHEDULERS)
def test_the_step_bound_is_taken_at_the_recipes_spacing(name, spacing):
    bundle_config = {**SD1_CONFIG, "timestep_spacing": next(s for s in SPACINGS if s != spacing)}
    recipe = Sampling(name, 1, timestep_spacing=spacing)
    most = recipe.max_steps(bundle_config)
    assert most == bound(name, spacing)
    Sampling(name, most, timestep_spacing=spacing).make_scheduler(bundle_config)
    with pytest.raises(ConfigError, match=rf"^--steps is {most + 1}; .* '{spacing}' spacing"):
        Sampling(name, most + 1, timestep_spacing=spacing).make_scheduler(bundle_config)


def test_trailing_spacing_lets_ddim_take_every_training_timestep():
    """DDIM at 1000 "leading" steps indexes timestep 1000 (past the table): refused on SD's config; at the recipe's
    "trailing" spacing the same config takes 1000 steps, the first at timestep 999, as diffusers draws them."""
    with pytest.raises(ConfigError, match="^--steps is 1000; ddim takes 1 to 999 steps"):
        Sampling("ddim", 1000).make_scheduler(SD1_CONFIG)
    scheduler = Sampling("ddim", 1000, timestep_spacing="trailing").make_scheduler(SD1_CONFIG)
    assert scheduler.timesteps[0] == 999 and len(scheduler.timesteps) == 1000


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 8, 12])
@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_trailing_few_step_recipes_start_at_the_last_timestep_as_diffusers(name, steps):
    """Hyper-SD's and PCM's few-step recipes: DDIM (or Euler) "trailing", laid over SD's "leading" config, draws as
    diffusers built with it; one step starts at timestep 999 (Euler: at its sigma, 14.6146)."""
    trailing = {**SD1_CONFIG, "timestep_spacing": "trailing"}
    ours = Sampling(name, steps, guidance=1.0, timestep_spacing="trailing").make_scheduler(SD1_CONFIG)
    ref = DIFFUSERS[name].from_config(trailing)
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
    assert ours.timesteps[0] == 999
    expected = {1: [999], 2: [999, 499], 3: [999, 666, 332], 4: [999, 749, 499, 249]}
    if steps in expected:
        assert ours.timesteps.tolist() == expected[steps]
    if name == "euler":
        assert isinstance(ours, Euler)
        np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=TOL)  # diffusers: float32 sigmas
        assert ours.sigmas[0] == ours.init_noise_sigma == pytest.approx(14.6146, abs=1e-4)
    compare(name, trailing, steps, seed=50 + steps)


@pytest.mark.parametrize("steps, t, target, next_t", [(3, 666, 333, 332), (12, 916, 833, 832)])
def test_trailing_ddim_steps_to_t_minus_the_stride_as_diffusers(steps, t, target, next_t):
    """diffusers' DDIMScheduler.step targets t - 1000 // n whatever the spacing; where n does not divide 1000 that
    is off the trailing schedule (the next timestep is next_t). A model output of 0 makes the step scale the latents
    by sqrt(ab[target] / ab[t]), which shows the target."""
    config = {**SD1_CONFIG, "timestep_spacing": "trailing"}
    ours = make_scheduler("ddim", config, steps)
    i = ours.timesteps.tolist().index(t)
    assert ours.timesteps[i + 1] == next_t
    ref = DDIMScheduler.from_config(config)
    ref.set_timesteps(steps)
    x, zero = np.ones(SHAPE, np.float32), np.zeros(SHAPE, np.float32)  # [1,4,8,8] each
    want = ref.step(torch.from_numpy(zero), t, torch.from_numpy(x)).prev_sample.numpy()
    got, _ = ours.step(zero, i, x)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    ab = ref.alphas_cumprod.numpy().astype(np.float64)  # [1000]
    assert got[0, 0, 0, 0] == pytest.approx(np.sqrt(ab[target] / ab[t]), rel=1e-6)
    assert got[0, 0, 0, 0] != pytest.approx(np.sqrt(ab[next_t] / ab[t]), rel=1e-4)
