"""Tests of audiotoken.fbank: shapes, the folded kernel, the mel matrix, parity with Kaldi, ONNX export.

The oracle is torchaudio's compliance/kaldi.py (tests/kaldi_reference.py), the code BEATs calls; the tests
that need it skip where torchaudio is not installed. A float64 numpy pipeline written step by step in this
file (DC removal, pre-emphasis, window, rfft) is the second reference: exact up to float64 rounding.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiotoken.fbank import (
    FBANK_MEAN,
    FBANK_SCALE,
    FRAME_LENGTH,
    FRAME_SHIFT,
    LOG_FLOOR,
    N_BINS,
    N_FFT,
    N_MELS,
    PREEMPHASIS,
    Fbank,
    compute_fbank,
    frame_kernel,
    mel_matrix,
    num_frames,
    povey_window,
)
from runtime.contract import N_SAMPLES, SAMPLE_RATE
from runtime.errors import AudioLoadError
from tests.kaldi_reference import INSTALL_HINT, kaldi_available, kaldi_fbank, kaldi_module
from tests.support import CLIPS as VGGSOUND

TOL = 1e-3  # max abs error on the normalised log scale (docs/method.md#fbank)
CLIPS = sorted(VGGSOUND.glob("*.wav"))  # the real 10 s clips
FLOOR_VALUE = (np.log(np.float32(LOG_FLOOR)) - FBANK_MEAN) / FBANK_SCALE  # about -2.3917

requires_oracle = pytest.mark.skipif(not kaldi_available(), reason=INSTALL_HINT)


# ---- test signals (10 s, float32 in [-1, 1)) ----------------------------------------------------------------
def white_noise() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(0.3 * rng.standard_normal(N_SAMPLES), -1.0, 1.0 - 2**-15).astype(np.float32)


def chirp() -> np.ndarray:
    """Linear sweep 20 Hz -> 8000 Hz over 10 s, amplitude 0.8."""
    t = np.arange(N_SAMPLES) / SAMPLE_RATE
    phase = 2 * np.pi * (20 * t + (8000 - 20) / (2 * 10) * t**2)
    return (0.8 * np.sin(phase)).astype(np.float32)


def square_ish() -> np.ndarray:
    """Full-scale 1 kHz near-square (tanh-clipped sine): frame power far beyond fp16."""
    t = np.arange(N_SAMPLES) / SAMPLE_RATE
    return ((1 - 2**-15) * np.tanh(50 * np.sin(2 * np.pi * 1000 * t))).astype(np.float32)


SIGNALS = {"white_noise": white_noise, "chirp": chirp, "square_ish": square_ish}


def features(waveform: np.ndarray) -> np.ndarray:
    """Fbank of one 1-D waveform as numpy [T, 128]."""
    with torch.no_grad():
        return Fbank()(torch.from_numpy(waveform)[None])[0].numpy()


# ---- float64 step-by-step reference ------------------------------------------------------------------------
def frames_of(waveform: np.ndarray) -> np.ndarray:
    """[N] -> [T, 400] float64 frames at int16 amplitude (snip_edges)."""
    x = waveform.astype(np.float64) * 32768.0  # [N]
    starts = np.arange(num_frames(len(x)))[:, None] * FRAME_SHIFT  # [T, 1]
    return x[starts + np.arange(FRAME_LENGTH)]  # [T, 400]


def spectrum_stepwise(frames: np.ndarray) -> np.ndarray:
    """[T, 400] -> [T, 257] complex: DC removal, pre-emphasis, Povey window, 512-point rfft, one step at a time."""
    x = frames - frames.mean(axis=1, keepdims=True)  # [T, 400]
    previous = np.concatenate([x[:, :1], x[:, :-1]], axis=1)  # [T, 400], x[max(0, j-1)]
    y = (x - PREEMPHASIS * previous) * povey_window()  # [T, 400]
    return np.fft.rfft(y, n=N_FFT, axis=1)  # [T, 257]


def features_float64(waveform: np.ndarray) -> np.ndarray:
    """[N] -> [T, 128] normalised features computed in float64."""
    power = np.abs(spectrum_stepwise(frames_of(waveform))) ** 2  # [T, 257]
    energy = power @ mel_matrix(np.float64)  # [T, 128]
    return (np.log(np.maximum(energy, LOG_FLOOR)) - FBANK_MEAN) / FBANK_SCALE  # [T, 128]


# ---- shapes and API -----------------------------------------------------------------------------------------
def test_constants():
    assert (FRAME_LENGTH, FRAME_SHIFT, N_FFT, N_BINS, N_MELS) == (400, 160, 512, 257, 128)
    assert np.float32(LOG_FLOOR) == np.float32(1.1920929e-07)
    assert FBANK_SCALE == pytest.approx(13.11164)
    assert povey_window().sum() == pytest.approx(212.147, abs=1e-3)
    assert povey_window()[0] == 0 and povey_window()[-1] == 0


@pytest.mark.parametrize("n_samples, n_frames", [(160000, 998), (80000, 498), (160125, 999)])
def test_frame_count(n_samples, n_frames):
    assert num_frames(n_samples) == n_frames
    out = Fbank()(torch.zeros(1, n_samples))
    assert out.shape == (1, n_frames, N_MELS) and out.dtype == torch.float32


def test_compute_fbank_accepts_1d_numpy_and_batches():
    wave = white_noise()
    one = compute_fbank(wave)
    assert one.shape == (998, N_MELS) and one.dtype == torch.float32
    torch.testing.assert_close(compute_fbank(wave.astype(np.float64)), one, atol=1e-5, rtol=0)
    batch = compute_fbank(torch.from_numpy(np.stack([wave, chirp()])))
    assert batch.shape == (2, 998, N_MELS)
    torch.testing.assert_close(batch[0], one, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(10, 2, 400), (399,), ()])
def test_compute_fbank_rejects_bad_shapes(shape):
    with pytest.raises(AudioLoadError, match="expected"):
        compute_fbank(torch.zeros(shape))


def test_buffers_stay_out_of_checkpoints():
    module = Fbank()
    assert module.state_dict() == {}
    assert module.kernel.shape == (514, 1, 400) and module.mel.shape == (257, 128)


def test_batch_rows_equal_single_rows():
    a, b = white_noise(), chirp()
    with torch.no_grad():
        both = Fbank()(torch.from_numpy(np.stack([a, b]))).numpy()  # [2, 998, 128]
    np.testing.assert_allclose(both[0], features(a), atol=1e-5, rtol=0)
    np.testing.assert_allclose(both[1], features(b), atol=1e-5, rtol=0)


# ---- the folded kernel and the mel matrix -------------------------------------------------------------------
def test_kernel_folds_dc_preemphasis_window_and_dft():
    frame = np.random.default_rng(1).uniform(-32768, 32767, (3, FRAME_LENGTH))  # [3, 400]
    frame[0] += 5000.0  # a DC offset to remove
    expected = spectrum_stepwise(frame)  # [3, 257] complex
    folded = frame @ frame_kernel(np.float32).astype(np.float64).T  # [3, 514]
    got = folded[:, :N_BINS] + 1j * folded[:, N_BINS:]  # [3, 257]
    assert np.abs(got - expected).max() <= 1e-6 * np.abs(expected).max()
    np.testing.assert_allclose(frame_kernel(np.float64).sum(axis=1), 0.0, atol=1e-9)  # a constant frame gives 0
    np.testing.assert_array_equal(Fbank().kernel[:, 0].numpy(), frame_kernel(np.float32))


def test_mel_matrix_spot_checks():
    mel = mel_matrix()
    assert mel.shape == (N_BINS, N_MELS) and mel.dtype == np.float32
    # filter 0 has edges 20 / 34.04 / 48.36 Hz: of the bins k * 31.25 Hz only k = 1 can fall inside
    assert set(np.nonzero(mel[:, 0])[0]) <= {0, 1} and mel[1, 0] > 0
    # the last filter ends at Nyquist (7670.3 / 7833.6 / 8000 Hz); the Nyquist row itself is all zero
    assert not mel[N_BINS - 1].any()
    assert mel[N_BINS - 2, N_MELS - 1] > 0
    # filter 3 (62.96 / 77.84 / 93.01 Hz) falls between bins 2 (62.5 Hz) and 3 (93.75 Hz): it is empty,
    # in Kaldi too, so BEATs feature column 3 always sits at the log floor. Every other filter has weight.
    empty = np.nonzero(mel.max(axis=0) <= 0)[0]
    assert list(empty) == [3]
    assert (mel >= 0).all() and mel.max() <= 1.0


@requires_oracle
def test_mel_matrix_matches_kaldi_banks():
    banks, _ = kaldi_module().get_mel_banks(N_MELS, N_FFT, float(SAMPLE_RATE), 20.0, 0.0, 100.0, -500.0, 1.0)
    kaldi = banks.numpy().T  # [256, 128], float32 in Kaldi
    np.testing.assert_allclose(mel_matrix()[:-1], kaldi, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(mel_matrix()[:-1] > 0, kaldi > 0)


# ---- parity with Kaldi ---------------------------------------------------------------------------------------
@requires_oracle
@pytest.mark.parametrize("clip", CLIPS or [None], ids=[c.stem for c in CLIPS] or ["missing"])
def test_matches_kaldi_on_vggsound(clip):
    if clip is None:
        pytest.skip(f"no VGGSound clips in {VGGSOUND}")
    wave, rate = sf.read(clip, dtype="float32")
    assert rate == SAMPLE_RATE and wave.ndim == 1
    wave = wave[:N_SAMPLES]
    ours, ref = features(wave), kaldi_fbank(wave)
    assert ours.shape == ref.shape == (998, N_MELS)
    assert np.abs(ours - ref).max() <= TOL


@requires_oracle
@pytest.mark.parametrize("name", ["white_noise", "square_ish"])
def test_matches_kaldi_on_synthetic(name):
    wave = SIGNALS[name]()
    ours, ref = features(wave), kaldi_fbank(wave)
    assert ours.shape == ref.shape == (998, N_MELS)
    assert np.abs(ours - ref).max() <= TOL


def test_square_ish_power_needs_fp32():
    """Frame power of a full-scale signal at int16 scale is ~1e13: far past fp16 (65504), fine in fp32."""
    power = np.abs(spectrum_stepwise(frames_of(square_ish()))) ** 2
    assert power.max() > 1e12
    assert np.isfinite(features(square_ish())).all()


@requires_oracle
def test_matches_kaldi_on_chirp():
    """A pure sweep spans ~1e17 in band energy within one frame, past what any fp32 spectrum resolves.

    Kaldi's own fp32 rfft is ~0.2 off the exact float64 value in the near-empty bands (ours ~0.07), so
    parity is checked where a band is within 80 dB of its frame's loudest band, and elsewhere we require
    to be no farther from the exact value than the oracle is.
    """
    wave = chirp()
    ours, ref, exact = features(wave), kaldi_fbank(wave), features_float64(wave)
    within_80_db = ref >= ref.max(axis=1, keepdims=True) - np.log(1e8) / FBANK_SCALE
    assert within_80_db.mean() > 0.1  # ~17% of the cells are checked
    assert np.abs(ours - ref)[within_80_db].max() <= TOL
    assert np.abs(ours - exact).max() <= np.abs(ref - exact).max()


def test_close_to_float64_on_noise():
    """Oracle-free check: the fp32 module against the exact float64 pipeline."""
    wave = white_noise()
    assert np.abs(features(wave) - features_float64(wave)).max() <= TOL


def test_silence_is_the_log_floor():
    ours = features(np.zeros(N_SAMPLES, np.float32))
    np.testing.assert_allclose(ours, np.full((998, N_MELS), FLOOR_VALUE), atol=1e-6, rtol=0)
    if kaldi_available():
        np.testing.assert_array_equal(ours, kaldi_fbank(np.zeros(N_SAMPLES, np.float32)))


# ---- ONNX -----------------------------------------------------------------------------------------------------
def export_and_run(tmp_path: Path) -> tuple[np.ndarray, np.ndarray, set]:
    """Export Fbank for a static [1, 160000] input with the exporter ``export`` uses (TorchScript, opset 17),
    run it in onnxruntime; return (ort, torch, op types)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    module = Fbank().eval()
    wave = torch.from_numpy(white_noise())[None]  # [1, 160000]
    path = tmp_path / "fbank.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning
        torch.onnx.export(
            module,
            (wave,),
            str(path),
            input_names=["waveform"],
            output_names=["features"],
            dynamo=False,
            opset_version=17,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"waveform": wave.numpy()})[0]  # [1, 998, 128]
    with torch.no_grad():
        expected = module(wave).numpy()  # [1, 998, 128]
    return got, expected, {node.op_type for node in model.graph.node}


PLAIN_OPS = {"Mul", "Unsqueeze", "Conv", "Slice", "Add", "Transpose", "MatMul", "Clip", "Log", "Sub", "Div", "Constant"}


def test_onnx_export_torchscript_matches_torch(tmp_path):
    got, expected, ops = export_and_run(tmp_path)
    assert got.shape == (1, 998, N_MELS)
    assert np.abs(got - expected).max() <= 1e-4
    assert ops <= PLAIN_OPS
