"""Text conditioning: the prompt template with ``<*>`` plus an audio token -> CLIP text embeddings [B, 77, D].

Data flow: ``AudioEncoder`` token [B, D] and the template's ids [B, 77] -> token embeddings with the audio token
written wherever the id is the placeholder id -> position embeddings -> CLIP text transformer (causal mask,
final LayerNorm) -> ``encoder_hidden_states`` of the UNet. This is the graph of the ``text_encoder`` engine.
Several sounds in one prompt: tokens [B, S, D], token s written wherever the id is slot s's placeholder
(``<*>``, ``<2>``, ``<3>``, ``<4>``: ``runtime.contract.SLOT_PLACEHOLDERS``).

Unlike the official patched CLIP (docs/method.md#quirks, Q8) nothing is hard-coded or mutated: the placeholder id
comes from the tokenizer, the caller's ids are left untouched, and each batch row may carry its own token. The
result equals the stock CLIP whose resized embedding table holds the token at the placeholder row
(docs/method.md#the-token-and-the-prompt).
"""

from __future__ import annotations

import torch
from torch import nn

from runtime.contract import PLACEHOLDER, SLOT_PLACEHOLDERS
from runtime.errors import ConfigError
from runtime.tokenizer import quoted


def add_placeholder(tokenizer) -> int:
    """Add the slot placeholders ``<*>``, ``<2>``.. to a CLIP tokenizer (once, in that order) and return ``<*>``'s id:
    49408 for the SD 1.x / 2.x vocabulary (then 49409.. for the others)."""
    for token in SLOT_PLACEHOLDERS:
        if token not in tokenizer.get_vocab():
            tokenizer.add_tokens(token)
    return tokenizer.convert_tokens_to_ids(PLACEHOLDER)


def slot_ids(tokenizer) -> tuple[int, ...]:
    """The ids of the slot placeholders, in slot order."""
    return tuple(tokenizer.convert_tokens_to_ids(token) for token in SLOT_PLACEHOLDERS)


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Prompts -> ids [B, 77] padded to the model length, as Stable Diffusion's pipeline does."""
    for prompt in prompts:
        n_tokens = len(tokenizer(prompt).input_ids)  # with BOS and EOS
        if n_tokens > tokenizer.model_max_length:
            raise ConfigError(
                f"prompt {quoted(prompt)} is {n_tokens} tokens long; CLIP takes at most {tokenizer.model_max_length}",
                hint="shorten the prompt",
            )
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


class TextConditioner(nn.Module):
    """CLIP text encoder whose placeholder positions take audio tokens: (ids [B, 77], token [B, D] or tokens
    [B, S, D]) -> [B, 77, D]. ``placeholder_ids``: one id (``<*>``) or one per slot."""

    def __init__(self, text_encoder: nn.Module, placeholder_ids: int | tuple[int, ...]):
        super().__init__()
        # transformers 4.x nests the transformer under .text_model; 5.x is flat
        self.transformer = getattr(text_encoder, "text_model", text_encoder)
        self.placeholder_ids = (placeholder_ids,) if isinstance(placeholder_ids, int) else tuple(placeholder_ids)

    @property
    def placeholder_id(self) -> int:
        """``<*>``'s id (slot 1)."""
        return self.placeholder_ids[0]

    @property
    def token_dim(self) -> int:
        return self.transformer.embeddings.token_embedding.embedding_dim

    def forward(self, input_ids: torch.Tensor, audio_token: torch.Tensor) -> torch.Tensor:
        embeddings = self.transformer.embeddings
        slot_tokens = audio_token if audio_token.dim() == 3 else audio_token[:, None]  # [B, S, D]
        any_placeholder = input_ids == self.placeholder_ids[0]  # [B, 77]
        for placeholder_id in self.placeholder_ids[1:]:
            any_placeholder = any_placeholder | (input_ids == placeholder_id)  # [B, 77]
        # a placeholder id may be past the end of the stock table: look up a valid id there, then overwrite
        safe_ids = torch.where(any_placeholder, torch.zeros_like(input_ids), input_ids)  # [B, 77]
        tokens = embeddings.token_embedding(safe_ids)  # [B, 77, D]
        for slot in range(slot_tokens.shape[1]):
            here = (input_ids == self.placeholder_ids[slot])[..., None]  # [B, 77, 1]
            tokens = torch.where(here, slot_tokens[:, slot, None, :].to(tokens.dtype), tokens)  # [B, 77, D]
        hidden = embeddings(inputs_embeds=tokens)  # [B, 77, D]  + position embeddings
        n = input_ids.shape[1]
        causal = torch.full((n, n), torch.finfo(hidden.dtype).min, dtype=hidden.dtype, device=hidden.device).triu(
            1
        )  # [77, 77]
        hidden = self.transformer.encoder(inputs_embeds=hidden, attention_mask=causal[None, None]).last_hidden_state
        return self.transformer.final_layer_norm(hidden)  # [B, 77, D]
