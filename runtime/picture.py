"""The last stage of the data flow: decoded image tensors -> PIL pictures -> PNG files that describe themselves.

``to_pictures`` maps the VAE output [B, 3, H, W] in [-1, 1] to 8-bit RGB as diffusers does ((x / 2 + 0.5),
clamp, round). ``save_png`` writes atomically (a temporary file in the same folder, then a rename), never
replaces an existing file unless asked, and records how the picture was made in PNG text chunks
(clip, prompt, seed, steps, scheduler, guidance, bundle id), so a picture can be reproduced from itself.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from runtime.atomic import write_atomically
from runtime.errors import ConfigError


def to_pictures(images: np.ndarray) -> list[Image.Image]:
    """VAE output [B, 3, H, W] in [-1, 1] -> B RGB pictures."""
    pixels = np.clip(images.astype(np.float32) / 2 + 0.5, 0.0, 1.0)  # [B, 3, H, W] in [0, 1]
    pixels = np.round(pixels.transpose(0, 2, 3, 1) * 255).astype(np.uint8)  # [B, H, W, 3]
    return [Image.fromarray(p, mode="RGB") for p in pixels]


def png_bytes(picture: Image.Image, metadata: dict[str, object]) -> bytes:
    """``picture`` encoded as PNG with ``metadata`` as ``audiotoken:*`` text chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_itxt(f"audiotoken:{key}", str(value))
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG", pnginfo=info)
    return encoded.getvalue()


def save_png(picture: Image.Image, path: str | Path, metadata: dict[str, object], *, overwrite: bool = False) -> Path:
    """Write ``picture`` to ``path`` with ``metadata`` as PNG text chunks; refuse to replace a file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: already exists", hint="pass --overwrite to replace it, or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, png_bytes(picture, metadata))


def read_png_metadata(path: str | Path) -> dict[str, str]:
    """The ``audiotoken:*`` text chunks of a PNG written by ``save_png``, keys without the prefix."""
    with Image.open(path) as picture:
        return {k.removeprefix("audiotoken:"): v for k, v in picture.text.items() if k.startswith("audiotoken:")}
