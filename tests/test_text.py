"""Text conditioning: the real CLIP vocabulary gives the ids of docs/method.md#the-token-and-the-prompt, and the splice
equals the stock CLIP whose resized embedding table holds the audio token at the placeholder row."""

from __future__ import annotations

import copy

import pytest
import torch

from audiotoken.text import TextConditioner, add_placeholder, slot_ids, tokenize
from runtime.contract import DEFAULT_TEMPLATE, TOKEN_SLOTS
from runtime.errors import ConfigError
from runtime.tokenizer import check_template


@pytest.fixture(scope="module")
def clip(tiny_models):
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_models / "sd" / "tokenizer")
    return tokenizer, CLIPTextModel.from_pretrained(tiny_models / "sd" / "text_encoder").eval()


def test_the_real_vocabulary_gives_the_spec_ids(clip):
    tokenizer, _ = clip
    assert len(tokenizer) == 49408
    assert add_placeholder(tokenizer) == 49408
    assert add_placeholder(tokenizer) == 49408  # idempotent
    assert tokenizer("a photo of <*>").input_ids == [49406, 320, 1125, 539, 49408, 49407]
    ids = tokenize(tokenizer, [DEFAULT_TEMPLATE])[0].tolist()
    assert ids.index(49408) == 4 and len(ids) == 77 and ids[-1] == 49407  # padded with <|endoftext|>


def test_splice_equals_stock_clip_with_the_token_in_a_resized_table(clip):
    tokenizer, text_encoder = clip
    placeholder = add_placeholder(tokenizer)
    ids = tokenize(tokenizer, ["a photo of <*>", "<*> barking, and <*> again"])  # [2, 77]; the second holds two
    original = ids.clone()
    tokens = torch.randn(2, text_encoder.config.hidden_size)
    spliced = TextConditioner(text_encoder, placeholder)(ids, tokens)
    assert spliced.shape == (2, 77, text_encoder.config.hidden_size)
    assert torch.equal(ids, original)  # the caller's ids stay (unlike the official patch, docs/method.md#quirks, Q8)
    for b in range(2):
        stock = copy.deepcopy(text_encoder)  # resizing mutates the model and its config
        stock.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            stock.get_input_embeddings().weight[placeholder] = tokens[b]
        expected = stock(ids[b : b + 1]).last_hidden_state[0]
        assert torch.allclose(spliced[b], expected, atol=1e-5), (spliced[b] - expected).abs().max()


def test_the_token_changes_only_what_follows_it(clip):
    tokenizer, text_encoder = clip
    text = TextConditioner(text_encoder, add_placeholder(tokenizer))
    ids = tokenize(tokenizer, [DEFAULT_TEMPLATE] * 2)
    out = text(ids, torch.randn(2, text_encoder.config.hidden_size))
    assert torch.equal(out[0, :4], out[1, :4])  # causal: positions before <*> (index 4) do not see it
    assert not torch.allclose(out[0, 4:], out[1, 4:])


def test_prompt_errors(clip):
    tokenizer, _ = clip
    with pytest.raises(ConfigError, match="holds <\\*> 0 times"):
        check_template("a photo of a dog")
    with pytest.raises(ConfigError, match="holds <\\*> 2 times"):
        check_template("<*> and <*>")
    with pytest.raises(ConfigError, match="tokens long; CLIP takes at most 77"):
        tokenize(tokenizer, ["a photo of <*> " + "very " * 80])


def test_several_sounds_splice_equals_stock_clip_with_each_token_at_its_placeholder_row(clip):
    tokenizer, text_encoder = clip
    add_placeholder(tokenizer)
    ids_of_slots = slot_ids(tokenizer)
    assert ids_of_slots == (49408, 49409, 49410, 49411)
    assert tokenizer("<*> <2> <3> <4>").input_ids[1:-1] == list(ids_of_slots)
    ids = tokenize(tokenizer, ["a photo of <*> next to <2>", "<3>, <*> and <4> in the rain, then <2>"])  # [2, 77]
    tokens = torch.randn(2, TOKEN_SLOTS, text_encoder.config.hidden_size)  # [2, S, D]
    spliced = TextConditioner(text_encoder, ids_of_slots)(ids, tokens)  # [2, 77, D]
    for b in range(2):
        stock = copy.deepcopy(text_encoder)
        stock.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for slot, row in enumerate(ids_of_slots):
                stock.get_input_embeddings().weight[row] = tokens[b, slot]
        expected = stock(ids[b : b + 1]).last_hidden_state[0]
        assert torch.allclose(spliced[b], expected, atol=1e-5), (spliced[b] - expected).abs().max()
    single = TextConditioner(text_encoder, ids_of_slots)(ids[:1], tokens[:1, 0])  # [B, D]: slot 1 only
    padded = tokens[:1].clone()
    padded[:, 1:] = 0
    assert torch.equal(single[:, :5], TextConditioner(text_encoder, ids_of_slots)(ids[:1], padded)[:, :5])
