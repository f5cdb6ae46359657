"""audiotoken: the PyTorch side of audiotoken-rt, faithful to the official AudioToken checkpoints.

Data flow: waveform -> ``compute_fbank`` -> ``BEATs`` (layers 4, 8, 12) -> ``Embedder`` -> audio token
(``AudioEncoder`` chains the three) -> ``TextConditioner`` splices it into the prompt -> Stable Diffusion
(``AudioTokenPipeline``, the diffusers reference). ``random_models`` writes test models in the official formats.
"""

from audiotoken.beats import BEATs, BEATsConfig
from audiotoken.embedder import Embedder
from audiotoken.encoder import AudioEncoder
from audiotoken.fbank import compute_fbank
from audiotoken.pipeline import AudioTokenPipeline
from audiotoken.text import DEFAULT_TEMPLATE, PLACEHOLDER, TextConditioner

__all__ = [
    "AudioEncoder",
    "AudioTokenPipeline",
    "BEATs",
    "BEATsConfig",
    "DEFAULT_TEMPLATE",
    "Embedder",
    "PLACEHOLDER",
    "TextConditioner",
    "compute_fbank",
]
