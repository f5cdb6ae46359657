"""The engine contract and the constants of the method: the one torch-free owner of both.

Every other layer reads these instead of writing its own copy:
- ``export.networks`` declares each network's inputs and outputs from ``engine_contracts``;
- the runtime builds its feeds with ``EngineContract.feeds`` and reads results with ``EngineContract.output``;
- ``runtime.bundle`` checks each bundle's manifest against ``contract_problems`` before anything runs;
- the C++ library reads ``runtime/cpp/src/contract.hpp``, written from here by ``runtime/cpp/tools/contract_header.py``;
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

# Audio (docs/method.md#audio): BEATs' Kaldi fbank hard-codes 16 kHz; the official inference feeds the first 10 s.
SAMPLE_RATE = 16_000  # Hz
CLIP_SECONDS = 10  # the official inference window: input_length = 10 s
N_SAMPLES = CLIP_SECONDS * SAMPLE_RATE  # 160_000 samples: the waveform input of the audio_encoder engine

# Text (docs/method.md#the-token-and-the-prompt): CLIP's context is BOS + 75 tokens + EOS.
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

# The engines, by the names a bundle's manifest, the backends and the C++ library give them; in data order.
AUDIO_ENCODER = "audio_encoder"
TEXT_ENCODER = "text_encoder"
UNET = "unet"
VAE_DECODER = "vae_decoder"
VAE_ENCODER = "vae_encoder"
ENGINE_NAMES = (AUDIO_ENCODER, TEXT_ENCODER, UNET, VAE_DECODER, VAE_ENCODER)

# The sizes of a bundle (its Dims) that the contract's shapes name by a symbol, beside plain numbers.
SIZES = {
    "D": "the token width (CLIP's hidden size)",
    "S": "the token slots of the text engine",
    "N": "the UNet's batch (DYNAMIC when the bundle holds both)",
    "h": "the latent height (the picture's over VAE_FACTOR)",
    "w": "the latent width (the picture's over VAE_FACTOR)",
    "H": "the picture's height",
    "W": "the picture's width",
}
SLOTS = "S"  # the one axis a bundle of one token slot leaves out (audio_token [1, D]: from before multi-sound prompts)


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
class SymbolicSpec:
    """An engine input or output as the contract writes it: numbers and SIZES' symbols in its shape."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def at(self, sizes: dict[str, int]) -> TensorSpec:
        """The spec at a bundle's ``sizes`` (by symbol); the SLOTS axis is left out where the bundle has one slot."""
        kept = (d for d in self.shape if not (d == SLOTS and sizes[SLOTS] == 1))
        return TensorSpec(self.name, self.dtype, tuple(sizes[d] if isinstance(d, str) else d for d in kept))


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

    @property
    def sizes(self) -> dict[str, int]:
        """The sizes the contract's shapes name, by their symbols (SIZES)."""
        h, w = self.latent_size
        sizes = {"D": self.token_dim, "S": self.token_slots, "N": self.unet_batch, "h": h, "w": w}
        return sizes | {"H": self.height, "W": self.width}


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


def float_spec(name: str, *shape: int | str) -> SymbolicSpec:
    return SymbolicSpec(name, "float32", tuple(shape))


# Each engine's (inputs, outputs) in data order, shapes in numbers and SIZES' symbols: the table above. The text
# engine takes one token per slot (slot s replaces SLOT_PLACEHOLDERS[s]). The C++ library's constants and engine
# table are generated from here (runtime/cpp/tools/contract_header.py writes runtime/cpp/src/contract.hpp).
CONTRACT: dict[str, tuple[tuple[SymbolicSpec, ...], tuple[SymbolicSpec, ...]]] = {
    AUDIO_ENCODER: ((float_spec("waveform", 1, N_SAMPLES),), (float_spec("audio_token", 1, "D"),)),
    TEXT_ENCODER: (
        (SymbolicSpec("input_ids", "int64", (1, TEXT_LENGTH)), float_spec("audio_token", 1, SLOTS, "D")),
        (float_spec("text_embeddings", 1, TEXT_LENGTH, "D"),),
    ),
    UNET: (
        (
            float_spec("sample", "N", LATENT_CHANNELS, "h", "w"),
            float_spec("timestep", 1),
            float_spec("encoder_hidden_states", "N", TEXT_LENGTH, "D"),
        ),
        (float_spec("noise_pred", "N", LATENT_CHANNELS, "h", "w"),),
    ),
    VAE_DECODER: ((float_spec("latent", 1, LATENT_CHANNELS, "h", "w"),), (float_spec("image", 1, 3, "H", "W"),)),
    VAE_ENCODER: ((float_spec("image", 1, 3, "H", "W"),), (float_spec("latent", 1, LATENT_CHANNELS, "h", "w"),)),
}


def engine_contracts(dims: Dims) -> dict[str, EngineContract]:
    """The five engines' I/O at ``dims``, in data order."""
    sizes = dims.sizes
    return {
        name: EngineContract(name, tuple(s.at(sizes) for s in inputs), tuple(s.at(sizes) for s in outputs))
        for name, (inputs, outputs) in CONTRACT.items()
    }


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
