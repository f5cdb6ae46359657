"""BEATs input features: Kaldi log-mel filterbank as one exportable torch module.

Place in the data flow:
    waveform [B, 160000] (16 kHz, float32 in [-1, 1))
      -> Fbank (this file) -> features [B, 998, 128], normalised
      -> BEATs patch embedding (16x16 patches, see docs/method.md#the-forward-pass) -> ...

It reproduces, to < 1e-3 on the log scale, what BEATs' ``preprocess`` computes with
``torchaudio.compliance.kaldi.fbank`` (docs/method.md#fbank), but with plain ops so that it lives inside the
``audio_encoder`` ONNX/TensorRT graph: every per-frame linear step (DC removal, pre-emphasis,
Povey window, 512-point real DFT) is folded offline into one fixed [514, 400] matrix, applied as a strided
Conv1d; then power, a [257, 128] mel matmul, log with a floor, and the affine normalisation.
Everything stays float32: at int16 amplitude scale the frame power reaches ~1e13, far past fp16's 65504.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from runtime.contract import SAMPLE_RATE  # 16 kHz: BEATs hard-codes it
from runtime.errors import AudioLoadError

# ---- constants (docs/method.md#fbank) -------------------------------------------------------------------
FRAME_LENGTH = SAMPLE_RATE * 25 // 1000  # 400 samples = 25 ms window
FRAME_SHIFT = SAMPLE_RATE * 10 // 1000  # 160 samples = 10 ms hop
N_FFT = 1 << (FRAME_LENGTH - 1).bit_length()  # 512: next power of two >= 400 (zero-pad 400 -> 512)
N_BINS = N_FFT // 2 + 1  # 257 rfft bins, 0 .. Nyquist
N_MELS = 128  # mel filters = feature width
PREEMPHASIS = 0.97  # y[j] = x[j] - 0.97 x[j-1], replicate padding at j = 0
POVEY_POWER = 0.85  # Povey window = symmetric hann ** 0.85
LOW_FREQ = 20.0  # Hz, lowest mel edge
HIGH_FREQ = SAMPLE_RATE / 2  # 8000 Hz: Kaldi's high_freq=0 means Nyquist
LOG_FLOOR = float(np.finfo(np.float32).eps)  # 1.1920929e-07, floor before the log
FBANK_MEAN = 15.41663  # BEATs extract_features defaults
FBANK_STD = 6.55582
FBANK_SCALE = 2 * FBANK_STD  # 13.11164: BEATs divides by 2*std, not std
INT16_SCALE = 2**15  # 32768: back to int16 amplitude, as Kaldi expects


def num_frames(n_samples: int) -> int:
    """Frames Kaldi makes with snip_edges=True: 160000 -> 998, 80000 -> 498, 160125 -> 999."""
    return 1 + (n_samples - FRAME_LENGTH) // FRAME_SHIFT


def povey_window(dtype=np.float64) -> np.ndarray:
    """[400] Povey window: (0.5 - 0.5 cos(2 pi n / 399)) ** 0.85; zero at both ends."""
    n = np.arange(FRAME_LENGTH, dtype=np.float64)  # [400]
    hann = 0.5 - 0.5 * np.cos(2 * math.pi * n / (FRAME_LENGTH - 1))  # [400], symmetric
    return (hann**POVEY_POWER).astype(dtype)  # [400]


def frame_kernel(dtype=np.float32) -> np.ndarray:
    """[514, 400] matrix taking one raw frame to its 512-point spectrum: rows 0..256 Re, 257..513 Im.

    Built in float64 as the product DFT @ diag(window) @ preemphasis @ dc_removal, then cast.
    The Im rows carry the rfft sign convention (exp(-i...)); only Re^2 + Im^2 is used downstream.
    """
    L = FRAME_LENGTH
    eye = np.eye(L)  # [400, 400]
    dc_removal = eye - np.full((L, L), 1.0 / L)  # [400, 400]: x - mean(x)
    shift = np.eye(L, k=-1)  # [400, 400]: (S x)[j] = x[j-1]
    shift[0, 0] = 1.0  # replicate: (S x)[0] = x[0]
    preemphasis = eye - PREEMPHASIS * shift  # [400, 400]; y[0] = 0.03 x[0]
    window = np.diag(povey_window())  # [400, 400]
    k = np.arange(N_BINS)[:, None]  # [257, 1]
    n = np.arange(L)[None, :]  # [1, 400]; 400..511 are zero pad
    angle = 2 * math.pi * k * n / N_FFT  # [257, 400]
    dft = np.concatenate([np.cos(angle), -np.sin(angle)], axis=0)  # [514, 400]
    kernel = dft @ window @ preemphasis @ dc_removal  # [514, 400]
    return kernel.astype(dtype)


def hz_to_mel(f):
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix(dtype=np.float32) -> np.ndarray:
    """[257, 128] triangular mel filterbank, power bins -> mel energies.

    128 triangles equally spaced in mel between 20 Hz and 8000 Hz (filter b: left/centre/right =
    mel(20) + {b, b+1, b+2} * delta, delta = (mel(8000) - mel(20)) / 129), evaluated at FFT bins
    k = 0..255 (f = k * 31.25 Hz) as max(0, min(up-slope, down-slope)); the Nyquist row (k = 256) is 0.
    """
    mel_low, mel_high = hz_to_mel(LOW_FREQ), hz_to_mel(HIGH_FREQ)
    delta = (mel_high - mel_low) / (N_MELS + 1)  # ~21.7697 mel
    b = np.arange(N_MELS, dtype=np.float64)[None, :]  # [1, 128]
    left = mel_low + b * delta  # [1, 128]
    centre = left + delta  # [1, 128]
    right = centre + delta  # [1, 128]
    bin_hz = np.arange(N_FFT // 2, dtype=np.float64)[:, None] * SAMPLE_RATE / N_FFT  # [256, 1]
    mel = hz_to_mel(bin_hz)  # [256, 1]
    up = (mel - left) / (centre - left)  # [256, 128]
    down = (right - mel) / (right - centre)  # [256, 128]
    weights = np.maximum(0.0, np.minimum(up, down))  # [256, 128]
    nyquist = np.zeros((1, N_MELS))  # [1, 128]
    return np.concatenate([weights, nyquist], axis=0).astype(dtype)  # [257, 128]


class Fbank(torch.nn.Module):
    """Waveform [B, N] float32 in [-1, 1) -> normalised log-mel features [B, T, 128], T = 1 + (N - 400) // 160.

    Static-shape friendly and ONNX-exportable: conv1d, mul, add, matmul, clamp, log only.
    The kernel and mel matrix are non-persistent buffers: they follow .to(device) but stay out of checkpoints.
    """

    def __init__(self):
        super().__init__()
        kernel = torch.from_numpy(frame_kernel(np.float32))  # [514, 400]
        self.register_buffer("kernel", kernel[:, None, :], persistent=False)  # [514, 1, 400] conv weight
        self.register_buffer("mel", torch.from_numpy(mel_matrix(np.float32)), persistent=False)  # [257, 128]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise AudioLoadError(
                f"fbank input has shape {tuple(waveform.shape)}; expected [batch, samples]",
                hint="add a batch axis with waveform[None]",
            )
        x = waveform * INT16_SCALE  # [B, N], int16 amplitude
        spec = F.conv1d(x[:, None, :], self.kernel, stride=FRAME_SHIFT)  # [B, 514, T]
        re = spec[:, :N_BINS]  # [B, 257, T]
        im = spec[:, N_BINS:]  # [B, 257, T]
        power = re * re + im * im  # [B, 257, T]
        energy = torch.matmul(power.transpose(1, 2), self.mel)  # [B, T, 128]
        log_energy = torch.log(torch.clamp(energy, min=LOG_FLOOR))  # [B, T, 128]
        return (log_energy - FBANK_MEAN) / FBANK_SCALE  # [B, T, 128]


@functools.lru_cache(maxsize=4)
def _fbank_on(device: torch.device) -> Fbank:
    return Fbank().to(device)


def compute_fbank(waveform) -> torch.Tensor:
    """BEATs features of a 16 kHz waveform in [-1, 1): [N] -> [T, 128], or [B, N] -> [B, T, 128].

    Accepts a torch tensor or a numpy array of any float dtype; the result is float32 on the waveform's device.
    """
    x = torch.as_tensor(waveform, dtype=torch.float32)
    if x.dim() not in (1, 2) or x.shape[-1] < FRAME_LENGTH:
        raise AudioLoadError(
            f"waveform has shape {tuple(x.shape)}; expected [samples] or [batch, samples] "
            f"with at least {FRAME_LENGTH} samples (25 ms at {SAMPLE_RATE} Hz)",
            hint="load audio with the runtime's load_audio, which gives 10 s = 160000 samples",
        )
    module = _fbank_on(x.device)
    with torch.no_grad():
        if x.dim() == 1:
            return module(x[None])[0]  # [T, 128]
        return module(x)  # [B, T, 128]
