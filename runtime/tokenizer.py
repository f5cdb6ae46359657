"""The prompt tokenizer of the runtime: a template with ``<*>`` -> CLIP input ids [77] with the placeholder id.

Data flow: ``PromptTokenizer.encode(template)`` -> ids [77] int64 -> the ``text_encoder`` engine, which puts
the audio token wherever the id is the placeholder id. Built on the ``tokenizers`` library alone (no
transformers, no torch) from the bundle's ``tokenizer.json``, which the exporter writes with ``<*>`` added.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from runtime.contract import DEFAULT_TEMPLATE, PLACEHOLDER, TEXT_LENGTH
from runtime.errors import BundleError, ConfigError


def quoted(prompt: str, limit: int = 60) -> str:
    """A prompt for an error message: quoted, and cut to ``limit`` characters so a long one stays on one line."""
    return repr(prompt) if len(prompt) <= limit else repr(prompt[:limit]) + f"... ({len(prompt)} characters)"


def check_template(template: str) -> str:
    """A prompt template must hold ``<*>`` exactly once."""
    count = template.count(PLACEHOLDER)
    if count != 1:
        raise ConfigError(
            f"prompt template {quoted(template)} holds {PLACEHOLDER} {count} times; it needs it exactly once",
            hint=f"e.g. {DEFAULT_TEMPLATE!r}",
        )
    return template


class PromptTokenizer:
    """CLIP BPE with ``<*>`` added; pads to 77 with the model's pad token (EOS for SD 1.x, "!" for SD 2.x)."""

    def __init__(self, tokenizer: Tokenizer, pad_id: int, source: str = "<tokenizer>"):
        placeholder_id = tokenizer.token_to_id(PLACEHOLDER)
        if placeholder_id is None:
            raise BundleError(f"{source}: the tokenizer has no {PLACEHOLDER} token", hint="re-export the bundle")
        self.tokenizer = tokenizer
        self.placeholder_id = placeholder_id
        self.pad_id = pad_id

    @classmethod
    def from_folder(cls, folder: str | Path) -> PromptTokenizer:
        """Read ``tokenizer.json`` (and the pad token from ``tokenizer_config.json``) from a bundle's tokenizer folder."""
        folder = Path(folder)
        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            config = json.loads((folder / "tokenizer_config.json").read_text())
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise BundleError(
                f"{folder}: cannot read tokenizer.json / tokenizer_config.json ({exc})", hint="re-export the bundle"
            ) from exc
        pad = config.get("pad_token", "<|endoftext|>")
        pad = pad["content"] if isinstance(pad, dict) else pad
        pad_id = tokenizer.token_to_id(pad)
        if pad_id is None:
            raise BundleError(f"{folder}: pad token {pad!r} is not in the vocabulary", hint="re-export the bundle")
        return cls(tokenizer, pad_id, str(folder))

    def encode(self, prompt: str, *, require_placeholder: bool = True) -> np.ndarray:
        """Prompt -> ids [77] int64. A template must hold ``<*>`` exactly once; a negative prompt need not."""
        if require_placeholder:
            check_template(prompt)
        ids = self.tokenizer.encode(prompt).ids  # BOS ... EOS
        if len(ids) > TEXT_LENGTH:
            raise ConfigError(
                f"prompt {quoted(prompt)} is {len(ids)} tokens long; CLIP takes at most {TEXT_LENGTH}",
                hint="shorten the prompt",
            )
        padded = np.full(TEXT_LENGTH, self.pad_id, dtype=np.int64)  # [77]
        padded[: len(ids)] = ids
        return padded
