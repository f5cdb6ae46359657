"""Test oracle for the fbank: torchaudio's ``compliance/kaldi.py``, the code BEATs itself calls.

torchaudio's native extension does not load beside torch 2.13, and transformers imports torchaudio whenever
it is importable, so torchaudio must NOT sit in the environment's site-packages. It is installed aside, in
``.cache/oracles`` (``pip install --no-deps --target .cache/oracles torchaudio==2.11.0``, done by ``just setup``),
or in the folder named by ``AUDIOTOKEN_ORACLES``. That one file needs the ``torchaudio`` package only for MFCC's
``create_dct``, so it is loaded straight from its file while a bare stub stands in for ``torchaudio`` in
``sys.modules``. torchaudio itself is never imported.

Data flow: test waveform -> ``kaldi_fbank`` (BEATs preprocess, docs/method.md#fbank) -> reference [T, 128] features,
compared against ``audiotoken.fbank``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

ORACLES = Path(os.environ.get("AUDIOTOKEN_ORACLES", Path(__file__).resolve().parents[1] / ".cache" / "oracles"))
INSTALL_HINT = (
    f"the fbank oracle needs torchaudio's kaldi.py: pip install --no-deps --target {ORACLES} torchaudio==2.11.0"
)

FBANK_MEAN = 15.41663  # BEATs extract_features defaults, repeated here so the oracle owes nothing
FBANK_STD = 6.55582  # to the module under test


def kaldi_py_path() -> Path | None:
    """Path of torchaudio/compliance/kaldi.py in the oracle folder, found without importing torchaudio."""
    path = ORACLES / "torchaudio" / "compliance" / "kaldi.py"
    return path if path.is_file() else None


def kaldi_available() -> bool:
    return kaldi_py_path() is not None


@functools.lru_cache(maxsize=1)
def kaldi_module() -> types.ModuleType:
    """torchaudio.compliance.kaldi, loaded from its file with a stub ``torchaudio`` during the load."""
    path = kaldi_py_path()
    if path is None:
        raise RuntimeError(INSTALL_HINT)
    stub = types.ModuleType("torchaudio")
    stub.__path__ = []  # a package with nothing in it
    saved = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = stub
    try:
        spec = importlib.util.spec_from_file_location("_kaldi_reference_kaldi", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["torchaudio"]
        else:
            sys.modules["torchaudio"] = saved
    return module


def kaldi_fbank(waveform: np.ndarray) -> np.ndarray:
    """BEATs preprocess of one 1-D float32 waveform in [-1, 1) at 16 kHz -> normalised [T, 128] float32."""
    x = torch.as_tensor(np.asarray(waveform, dtype=np.float32)) * 2**15  # [N]
    feats = kaldi_module().fbank(
        x[None], num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10
    )  # [T, 128]
    return ((feats - FBANK_MEAN) / (2 * FBANK_STD)).numpy()  # [T, 128]
