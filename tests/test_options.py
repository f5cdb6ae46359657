"""The bounds on what anyone may ask of a drawing (runtime/pipeline.py: ``GenerationOptions.check`` and those of
``EditOptions`` and ``ComposeOptions``): every value outside them is one ConfigError naming the option as the
command line writes it (``--steps``, ``--guidance``, ``--eta``, ``--spacing``), with the value received, and so is
an eta or a spacing for a scheduler that takes none; every value on a bound is accepted.
No bundle is needed: these checks run before any file is opened (the steps' upper bound depends on the bundle's
scheduler config and is tested in tests/test_numerics.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.noise import MAX_SEED
from runtime.pipeline import (
    MAX_FEATHER,
    MAX_NUM_IMAGES,
    MAX_PROMPT_BYTES,
    ComposeOptions,
    EditOptions,
    GenerationOptions,
)
from runtime.sampling import MAX_GUIDANCE
from runtime.schedulers import MAX_ETA

LONG = "a photo of <*> " + "x" * (MAX_PROMPT_BYTES - 15 + 1)  # one byte over
SURROGATE = "a photo of <*> \udcff"  # what Python makes of the byte 0xFF in a command-line argument

BAD = [
    (GenerationOptions, {"steps": 0}, "--steps is 0; it must be a whole number, 1 or more"),
    (GenerationOptions, {"steps": -3}, "--steps is -3"),
    (GenerationOptions, {"steps": 2.5}, "--steps is 2.5"),
    (GenerationOptions, {"steps": "25"}, "--steps is '25'"),
    (GenerationOptions, {"steps": True}, "--steps is True"),
    (GenerationOptions, {"guidance": 0.5}, f"--guidance is 0.5; it must be a finite number from 1 to {MAX_GUIDANCE:g}"),
    (GenerationOptions, {"guidance": float("inf")}, "--guidance is inf"),  # drew a NaN picture
    (GenerationOptions, {"guidance": float("nan")}, "--guidance is nan"),
    (GenerationOptions, {"guidance": MAX_GUIDANCE + 0.5}, "--guidance is 50.5"),
    (GenerationOptions, {"guidance": np.float32(-np.inf)}, "--guidance is -inf"),
    (GenerationOptions, {"guidance": "7.5"}, "--guidance is '7.5'"),
    (GenerationOptions, {"num_images": 0}, f"--num-images is 0; it must be a whole number from 1 to {MAX_NUM_IMAGES}"),
    (GenerationOptions, {"num_images": MAX_NUM_IMAGES + 1}, f"--num-images is {MAX_NUM_IMAGES + 1}"),
    (GenerationOptions, {"num_images": 1.0}, "--num-images is 1.0"),
    (GenerationOptions, {"start": -1.0}, "--start is -1.0 s; it must be a finite number of seconds, 0 or more"),
    (GenerationOptions, {"start": float("inf")}, "--start is inf s"),
    (GenerationOptions, {"start": float("nan")}, "--start is nan s"),
    (GenerationOptions, {"downmix": "left"}, "--downmix 'left': expected one of first, mean, second"),
    (GenerationOptions, {"prompt": LONG}, f"--prompt is {MAX_PROMPT_BYTES + 1} bytes long; it may hold at most"),
    (GenerationOptions, {"prompt": SURROGATE}, r"--prompt is not valid text: character 15 is not Unicode"),
    (GenerationOptions, {"prompt": 5}, "--prompt is int; it must be text"),
    (GenerationOptions, {"negative_prompt": "é" * 501}, "--negative-prompt is 1002 bytes long"),
    (GenerationOptions, {"seed": MAX_SEED, "num_images": 2}, f"--seed {MAX_SEED} with --num-images 2"),
    (GenerationOptions, {"eta": MAX_ETA + 0.5}, f"--eta is 1.5; it must be a finite number from 0 to {MAX_ETA:g}"),
    (GenerationOptions, {"eta": -0.1}, "--eta is -0.1"),
    (GenerationOptions, {"eta": float("nan")}, "--eta is nan"),
    (GenerationOptions, {"eta": "0.5"}, "--eta is '0.5'"),
    (GenerationOptions, {"timestep_spacing": "sideways"}, "--spacing is 'sideways'; choose one of leading, trailing"),
    (GenerationOptions, {"timestep_spacing": 1}, "--spacing is 1"),
    (
        GenerationOptions,
        {"scheduler": "dpm++2m", "eta": 0.5},
        re.escape("--eta 0.5: dpm++2m has no eta; only ddim and tcd take"),
    ),
    (GenerationOptions, {"scheduler": "lcm", "timestep_spacing": "trailing"}, "--spacing 'trailing': lcm spaces no"),
    (EditOptions, {"strength": -0.1}, "--strength is -0.1; it must be between 0"),
    (EditOptions, {"strength": 1.5}, "--strength is 1.5"),
    (EditOptions, {"strength": float("nan")}, "--strength is nan"),
    (EditOptions, {"strength": float("inf")}, "--strength is inf"),
    (EditOptions, {"strength": "0.5"}, "--strength is '0.5'"),
    (EditOptions, {"feather": -1}, f"--feather is -1 pixels; it must be a whole number from 0 .* to {MAX_FEATHER}"),
    (EditOptions, {"feather": MAX_FEATHER + 1}, f"--feather is {MAX_FEATHER + 1} pixels"),
    (EditOptions, {"feather": 2.5}, "--feather is 2.5 pixels"),
    (ComposeOptions, {"blend": 0.0}, r"--blend is 0.0; it must be in \(0, 1\]"),
    (ComposeOptions, {"blend": float("nan")}, "--blend is nan"),
    (ComposeOptions, {"blend": 1.5}, "--blend is 1.5"),
    (ComposeOptions, {"layout": "left,right", "background": LONG}, "--background is 1001 bytes long"),
]


@pytest.mark.parametrize("options, values, message", BAD, ids=[f"{o.__name__}-{v}"[:60] for o, v, _ in BAD])
def test_a_value_outside_its_bound_is_one_line_naming_the_option(options, values, message):
    with pytest.raises(ConfigError, match="^" + message) as caught:
        options(**values).check()
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


GOOD = [
    (GenerationOptions, {"steps": 1, "guidance": 1.0, "num_images": 1}),
    (GenerationOptions, {"steps": np.int64(1000), "guidance": MAX_GUIDANCE, "num_images": MAX_NUM_IMAGES}),
    (GenerationOptions, {"guidance": np.float32(7.5), "seed": MAX_SEED, "start": 0.0}),
    (GenerationOptions, {"prompt": "a photo of <*> " + "é" * ((MAX_PROMPT_BYTES - 15) // 2)}),  # 999 bytes
    (GenerationOptions, {"negative_prompt": "x" * MAX_PROMPT_BYTES}),
    (GenerationOptions, {"scheduler": "ddim", "eta": MAX_ETA, "timestep_spacing": "trailing"}),
    (GenerationOptions, {"scheduler": "ddim", "eta": 0, "timestep_spacing": "linspace"}),
    (GenerationOptions, {"eta": 0.5}),  # the bundle's recipe decides whether its scheduler takes one
    (GenerationOptions, {"scheduler": "euler", "eta": 0.0, "timestep_spacing": "leading"}),
    (EditOptions, {"strength": 0.0, "feather": 0}),
    (EditOptions, {"strength": 1.0, "feather": MAX_FEATHER}),
    (ComposeOptions, {"blend": 1.0, "layout": "left,right", "background": "x" * MAX_PROMPT_BYTES}),
]


@pytest.mark.parametrize("options, values", GOOD, ids=[f"{o.__name__}-{v}"[:60] for o, v in GOOD])
def test_a_value_on_its_bound_is_accepted(options, values):
    options(**values).check()


def test_messages_show_numpy_numbers_plainly():
    with pytest.raises(ConfigError, match=re.escape("--steps is 0;")):
        GenerationOptions(steps=np.int64(0)).check()
    with pytest.raises(ConfigError, match=re.escape("--guidance is 60.0;")):
        GenerationOptions(guidance=np.float64(60)).check()
