"""The prompt tokenizer of the runtime: a template with ``<*>`` -> CLIP input ids [77] with the placeholder id.

Data flow: ``PromptTokenizer.encode(template)`` -> ids [77] int64 -> the ``text_encoder`` engine, which puts
the audio token wherever the id is the placeholder id. Built on the ``tokenizers`` library alone (no
transformers, no torch) from the bundle's ``tokenizer.json``, which the exporter writes with the placeholders
added: ``<*>`` (slot 1, the one-sound form) and, since multi-sound prompts, ``<2>``..``<4>``. A prompt may write
slot 1 as ``<1>``: it is the same token as ``<*>`` (``numbered`` rewrites it before tokenizing).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from runtime.contract import DEFAULT_TEMPLATE, PLACEHOLDER, SLOT_PLACEHOLDERS, TEXT_LENGTH
from runtime.errors import BundleError, ConfigError


def quoted(prompt: str, limit: int = 60) -> str:
    """A prompt for an error message: quoted, and cut to ``limit`` characters so a long one stays on one line."""
    return repr(prompt) if len(prompt) <= limit else repr(prompt[:limit]) + f"... ({len(prompt)} characters)"


SLOT = re.compile(r"<(\*|\d+)>")  # <*> or <n>: a sound's place in a prompt


def numbered(prompt: str) -> str:
    """The prompt as the vocabulary writes it: ``<1>`` is ``<*>``."""
    return prompt.replace("<1>", PLACEHOLDER)


def check_template(template: str) -> str:
    """A one-sound prompt template must hold ``<*>`` (or ``<1>``) exactly once, and no other numbered placeholder."""
    count = numbered(template).count(PLACEHOLDER)
    others = [m for m in SLOT.findall(template) if m not in ("*", "1")]
    if count != 1 or others:
        found = f"{PLACEHOLDER} {count} times" if count != 1 else f"<{others[0]}>, which needs several sounds"
        raise ConfigError(
            f"prompt template {quoted(template)} holds {found}; it needs {PLACEHOLDER} exactly once",
            hint=f"e.g. {DEFAULT_TEMPLATE!r}; several sounds in one picture: audiotoken-rt compose",
        )
    return template


def check_slots(prompt: str, sounds: int, slots: int) -> str:
    """A multi-sound prompt: ``<1>``..``<sounds>`` (``<*>`` counts as ``<1>``) each at least once, no other number,
    and no more sounds than the bundle's token slots."""
    if sounds > slots:
        raise ConfigError(
            f"{sounds} sounds, but this bundle's text engine holds {slots} token slot{'s' * (slots != 1)}",
            hint="re-export the bundle with this audiotoken-rt (4 slots)"
            if slots == 1
            else f"use at most {slots} sounds",
        )
    used = {1 if m == "*" else int(m) for m in SLOT.findall(prompt)}
    stray = sorted(n for n in used if not 1 <= n <= sounds)
    if stray:
        raise ConfigError(
            f"prompt {quoted(prompt)} holds <{stray[0]}> but only {sounds} sound{'s' * (sounds != 1)} {'were' if sounds != 1 else 'was'} given",
            hint="give one clip per numbered placeholder, in order",
        )
    missing = [n for n in range(1, sounds + 1) if n not in used]
    if missing:
        raise ConfigError(
            f"prompt {quoted(prompt)} has no <{missing[0]}> for sound {missing[0]}",
            hint="write each sound's place in the prompt: e.g. 'a photo of <1> next to <2>'",
        )
    return prompt


class PromptTokenizer:
    """CLIP BPE with ``<*>`` added; pads to 77 with the model's pad token (EOS for SD 1.x, "!" for SD 2.x)."""

    def __init__(self, tokenizer: Tokenizer, pad_id: int, source: str = "<tokenizer>"):
        placeholder_id = tokenizer.token_to_id(PLACEHOLDER)
        if placeholder_id is None:
            raise BundleError(f"{source}: the tokenizer has no {PLACEHOLDER} token", hint="re-export the bundle")
        self.tokenizer = tokenizer
        self.placeholder_id = placeholder_id
        self.pad_id = pad_id
        slot_ids = [tokenizer.token_to_id(token) for token in SLOT_PLACEHOLDERS]
        self.slot_ids = tuple(slot_ids[: slot_ids.index(None)] if None in slot_ids else slot_ids)  # <*>, <2>, ...

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
        ids = self.tokenizer.encode(numbered(prompt)).ids  # BOS ... EOS
        if len(ids) > TEXT_LENGTH:
            raise ConfigError(
                f"prompt {quoted(prompt)} is {len(ids)} tokens long; CLIP takes at most {TEXT_LENGTH}",
                hint="shorten the prompt",
            )
        padded = np.full(TEXT_LENGTH, self.pad_id, dtype=np.int64)  # [77]
        padded[: len(ids)] = ids
        return padded
