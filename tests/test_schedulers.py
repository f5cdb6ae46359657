"""Parity of runtime/schedulers.py with the diffusers schedulers of the same name (the reference).

Both sides run a full sampling loop on the same [1,4,8,8] latents with a fake deterministic "UNet"
(a smooth function of its input and timestep), starting from the same unit noise times their own init_noise_sigma.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.schedulers import scheduling_euler_ancestral_discrete

from runtime.errors import ConfigError
from runtime.schedulers import SCHEDULER_NAMES, History, make_scheduler

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
}
SHAPE = (1, 4, 8, 8)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' np.array(tensor) calls
TOL = 1e-5

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


def run_diffusers(name: str, config: dict, steps: int, noise: np.ndarray, step_noises=None):
    sched = DIFFUSERS[name].from_config(config)
    sched.set_timesteps(steps)
    latents = torch.from_numpy(noise) * sched.init_noise_sigma  # [1,4,8,8]
    timesteps = sched.timesteps.numpy().copy()
    if step_noises is not None:  # euler-a: inject our pre-drawn noise instead of torch's
        queue = [torch.from_numpy(n) for n in step_noises]
        original = scheduling_euler_ancestral_discrete.randn_tensor
        scheduling_euler_ancestral_discrete.randn_tensor = lambda *a, **k: queue.pop(0)
    try:
        for t in sched.timesteps:
            model_in = sched.scale_model_input(latents, t)
            out = torch.from_numpy(fake_unet(model_in.numpy(), t.item(), config))
            latents = sched.step(out, t, latents).prev_sample
        assert step_noises is None or not queue  # one draw per step
    finally:
        if step_noises is not None:
            scheduling_euler_ancestral_discrete.randn_tensor = original
    return latents.numpy(), timesteps, float(sched.init_noise_sigma)


def run_ours(name: str, config: dict, steps: int, noise: np.ndarray, step_noises=None):
    sched = make_scheduler(name, config, steps)
    latents = (noise * sched.init_noise_sigma).astype(np.float32)  # [1,4,8,8]
    history = History()
    for i, t in enumerate(sched.timesteps):
        out = fake_unet(sched.scale_model_input(latents, i), t, config)
        step_noise = None if step_noises is None else step_noises[i]
        latents, history = sched.step(out, i, latents, history, noise=step_noise)
        assert latents.dtype == np.float32
    return latents, sched.timesteps, sched.init_noise_sigma


def compare(name: str, config: dict, steps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(SHAPE).astype(np.float32)  # [1,4,8,8]
    n_evals = len(make_scheduler(name, config, steps).timesteps)
    step_noises = None
    if name == "euler-a":
        step_noises = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(n_evals)]
    ref, ref_ts, ref_sigma = run_diffusers(name, config, steps, noise, step_noises)
    got, got_ts, got_sigma = run_ours(name, config, steps, noise, step_noises)
    np.testing.assert_array_equal(got_ts, ref_ts)
    assert got_ts.dtype == ref_ts.dtype
    assert got_sigma == pytest.approx(ref_sigma, rel=1e-6)
    assert np.isfinite(got).all() and got.shape == SHAPE
    err = float(np.abs(got.astype(np.float64) - ref).max())
    assert err <= TOL, f"{name} {config.get('prediction_type')}: max abs error {err:.3g} > {TOL}"
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
    ],
)
def test_config_variants_match_diffusers(name, overrides):
    compare(name, {**SD1_CONFIG, **overrides}, 20, seed=2)


def test_pndm_50_steps_repeats_second_timestep():
    ts = make_scheduler("pndm", SD1_CONFIG, 50).timesteps
    assert len(ts) == 51  # 51 UNet evaluations for 50 steps (spec 5.4)
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

