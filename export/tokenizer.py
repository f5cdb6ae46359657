"""The bundle's tokenizer folder: the Stable Diffusion tokenizer files plus a ``tokenizer.json`` that knows ``<*>``.

Place in the data flow: ``export.builder`` calls ``write_tokenizer`` -> ``<bundle>/tokenizer/`` -> the torch-free
runtime (``runtime.tokenizer.PromptTokenizer``) loads ``tokenizer.json`` with ``tokenizers.Tokenizer.from_file``
and reads the pad token from ``tokenizer_config.json``. The json is saved without padding or truncation: the
runtime pads to 77 itself and refuses over-long prompts rather than cutting them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from export.sources import Sources
from runtime.contract import PLACEHOLDER

TOKENIZER_DIR = "tokenizer"


def write_tokenizer(sources: Sources, bundle: Path) -> int:
    """Copy the SD tokenizer folder into ``bundle/tokenizer`` and add ``tokenizer.json``; return ``<*>``'s id."""
    folder = bundle / TOKENIZER_DIR
    shutil.copytree(sources.sd.folder / TOKENIZER_DIR, folder)  # hub snapshots hold symlinks: their targets are copied
    tokenizer = sources.sd.tokenizer()  # transformers CLIPTokenizer (tokenizers-backed) with <*> added
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(folder / "tokenizer.json"))
    return tokenizer.convert_tokens_to_ids(PLACEHOLDER)
