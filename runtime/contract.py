"""The engine contract and the constants of the method: the one torch-free owner of both.

Every other layer reads these instead of writing its own copy:
- ``export.networks`` declares each network's inputs and outputs from ``engine_contracts``;
- the runtime builds its feeds with ``EngineContract.feeds`` and reads results with ``EngineContract.output``;
- ``runtime.bundle`` checks each bundle's manifest against ``contract_problems`` before anything runs;
- the tests read the expected names, dtypes and shapes from here.

The contract (docs/architecture.md, "The engine I/O contract"), static shapes, batch 1 per picture:

| engine          | inputs                                                             | outputs                    |
|-----------------|--------------------------------------------------------------------|----------------------------|
| audio_encoder   | waveform [1, 160000] f32                                           | audio_token [1, D]         |
| text_encoder    | input_ids [1, 77] i64, audio_token [1, D]                          | text_embeddings [1, 77, D] |
| unet            | sample [N, 4, h, w], timestep [1], encoder_hidden_states [N, 77, D] | noise_pred [N, 4, h, w]    |
| vae_decoder     | latent [1, 4, h, w]                                                | image [1, 3, 8h, 8w]       |
| vae_encoder     | image [1, 3, 8h, 8w]                                               | latent [1, 4, h, w]        |

The UNet's batch N is what the bundle holds (``Dims.unet_batches``): 2 for classifier-free guidance (the
unconditional and the conditional half in one call), 1 for guidance 1 (LCM's recipe: half the work per step),
or both, when the batch axis is dynamic (``DYNAMIC``, -1, as ONNX Runtime and TensorRT write an open dimension).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Audio (spec 1.1, 1.2): BEATs' Kaldi fbank hard-codes 16 kHz; the official inference feeds the first 10 s.
SAMPLE_RATE = 16_000  # Hz
CLIP_SECONDS = 10  # the official inference window: input_length = 10 s
N_SAMPLES = CLIP_SECONDS * SAMPLE_RATE  # 160_000 samples: the waveform input of the audio_encoder engine

# Text (spec 5.3, 5.4, 6.2): CLIP's context is BOS + 75 tokens + EOS.
TEXT_LENGTH = 77
PLACEHOLDER = "<*>"  # the token the audio token replaces (the one-sound form; slot 1 of a multi-sound prompt)
TOKEN_SLOTS = 4  # sounds one prompt may hold: <1> (written <*> in the vocabulary), <2>, <3>, <4>
SLOT_PLACEHOLDERS = (PLACEHOLDER, "<2>", "<3>", "<4>")  # the tokens the tokenizer holds, in slot order
DEFAULT_TEMPLATE = "a photo of <*>, 4k, high resolution"  # official inference.py
TRAIN_TEMPLATE = "a photo of <*>"  # official train.py (and the HF Space's inference)

# Latents (Stable Diffusion 1.x / 2.x VAEs, and the tiny TAESD decoder): 4 channels, 8 pixels per latent pixel.
LATENT_CHANNELS = 4
VAE_FACTOR = 8
GUIDED_BATCH = 2  # the UNet's batch with classifier-free guidance: unconditional + conditional
SINGLE_BATCH = 1  # the UNet's batch at guidance 1: the conditional half alone
UNET_BATCHES = (SINGLE_BATCH, GUIDED_BATCH)
DYNAMIC = -1  # an open dimension in a TensorSpec's shape

ENGINE_NAMES = ("audio_encoder", "text_encoder", "unet", "vae_decoder", "vae_encoder")


@dataclass(frozen=True)
class TensorSpec:
    """An engine input or output: name, numpy dtype name and static shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name} {self.dtype} {list(self.shape)}"

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether an array of ``shape`` fits: the same rank and sizes, any size where the spec is DYNAMIC."""
        return len(shape) == len(self.shape) and all(d in (n, DYNAMIC) for n, d in zip(shape, self.shape, strict=True))

    def at_batch(self, batch: int) -> tuple[int, ...]:
        """The shape with an open (batch) dimension set to ``batch``."""
        return tuple(batch if d == DYNAMIC else d for d in self.shape)


@dataclass(frozen=True)
class Dims:
    """The sizes a bundle's shapes are made of: D (CLIP width), the picture's height and width, the UNet's batches,
    and the token slots of the text engine (1: a bundle from before multi-sound prompts, audio_token [1, D])."""

    token_dim: int
    height: int
    width: int
    unet_batches: tuple[int, ...] = (GUIDED_BATCH,)
    token_slots: int = 1

    @property
    def unet_batch(self) -> int:
        """The UNet's batch dimension: the one batch the bundle holds, or DYNAMIC when it holds both."""
        return self.unet_batches[0] if len(self.unet_batches) == 1 else DYNAMIC

    @property
    def latent_size(self) -> tuple[int, int]:
        """(h, w) of the latents: the picture's size over the VAE factor."""
        return self.height // VAE_FACTOR, self.width // VAE_FACTOR


@dataclass(frozen=True)
class EngineContract:
    """One engine's inputs and outputs at a bundle's dims."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def feeds(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        """The engine's named inputs from ``arrays`` in contract order, cast to their dtypes and shape-checked."""
        if len(arrays) != len(self.inputs):
            raise ValueError(
                f"{self.name}: expected {len(self.inputs)} inputs ({', '.join(s.name for s in self.inputs)}), got {len(arrays)}"
            )
        feeds = {}
        for spec, array in zip(self.inputs, arrays, strict=True):
            value = np.ascontiguousarray(array, dtype=spec.dtype)
            if not spec.accepts(value.shape):
                raise ValueError(
                    f"{self.name}: input {spec.name} has shape {list(value.shape)}, the contract says {list(spec.shape)}"
                )
            feeds[spec.name] = value
        return feeds

    def output(self, results: dict[str, np.ndarray]) -> np.ndarray:
        """The engine's one output from a backend's named results."""
        (spec,) = self.outputs
        return results[spec.name]


def float_spec(name: str, *shape: int) -> TensorSpec:
    return TensorSpec(name, "float32", tuple(shape))


def engine_contracts(dims: Dims) -> dict[str, EngineContract]:
    """The five engines' I/O at ``dims``, in data order."""
    D, (h, w), c, n = dims.token_dim, dims.latent_size, LATENT_CHANNELS, dims.unet_batch
    audio_token = float_spec("audio_token", 1, D)
    # the text engine takes one token per slot ([1, S, D]; slot s replaces SLOT_PLACEHOLDERS[s]), or one ([1, D])
    slot_tokens = audio_token if dims.token_slots == 1 else float_spec("audio_token", 1, dims.token_slots, D)
    image = float_spec("image", 1, 3, dims.height, dims.width)
    latent = float_spec("latent", 1, c, h, w)
    contracts = [
        EngineContract("audio_encoder", (float_spec("waveform", 1, N_SAMPLES),), (audio_token,)),
        EngineContract(
            "text_encoder",
            (TensorSpec("input_ids", "int64", (1, TEXT_LENGTH)), slot_tokens),
            (float_spec("text_embeddings", 1, TEXT_LENGTH, D),),
        ),
        EngineContract(
            "unet",
            (
                float_spec("sample", n, c, h, w),
                float_spec("timestep", 1),
                float_spec("encoder_hidden_states", n, TEXT_LENGTH, D),
            ),
            (float_spec("noise_pred", n, c, h, w),),
        ),
        EngineContract("vae_decoder", (latent,), (image,)),
        EngineContract("vae_encoder", (image,), (latent,)),
    ]
    return {contract.name: contract for contract in contracts}


def contract_problems(
    name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], dims: Dims
) -> list[str]:
    """How an engine's recorded I/O differs from the contract at ``dims`` (empty when it matches)."""
    contracts = engine_contracts(dims)
    if name not in contracts:
        return [f"engine {name!r} is not one of {', '.join(ENGINE_NAMES)}"]
    expected = contracts[name]
    problems = []
    for kind, found, wanted in (("inputs", inputs, expected.inputs), ("outputs", outputs, expected.outputs)):
        if tuple(found) != wanted:
            problems.append(
                f"{name} {kind} are {', '.join(s.describe() for s in found) or 'none'}; "
                f"this runtime expects {', '.join(s.describe() for s in wanted)}"
            )
    return problems
