"""The two evaluation networks no installable library provides: the FID Inception and Wav2CLIP's audio encoder.

Place in the data flow: ``evaluation.models`` builds these, loads the published weights files into them (strictly:
every key, every shape) and feeds them pictures (FID) and waveforms (AIS). CLIP is not here: transformers reads
OpenAI's published CLIPs.

Why they are written here rather than imported (the project's rule is a well-kept library where one exists):
- the FID Inception: pytorch-fid builds its network out of torchvision's Inception blocks; torch-fidelity (and so
  torchmetrics' FID, built on it) requires torchvision and imports it with its package (its CLIP and VGG feature
  extractors, its datasets). PyPI's torchvision made for torch 2.13 is a CUDA build whose native operators do not
  load beside the CPU torch, and transformers imports any torchvision it finds, so none of them installs beside
  the rest of ``pip install '.[eval]'``.
- Wav2CLIP: the ``wav2clip`` package (one release, 2021) requires torchaudio and imports it with its model; pip
  pairs torch 2.13 with torchaudio 2.11, whose native extension does not load beside it (and transformers imports
  any torchaudio it finds).

Both follow their published architecture exactly, module for module, so that their ``state_dict`` keys are those of
the published files (``pt_inception-2015-12-05-6726825d.pth``, pytorch-fid's port of TensorFlow's 2015-12-05
Inception; ``Wav2CLIP.pt``, the ``audio_encoder.*`` and ``audio_transform.*`` entries). tests/test_evaluation.py
holds their outputs to those of pytorch-fid and wav2clip on the same weights (known answers recorded from them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_SIZE = 299  # the FID Inception's input side: every picture is resized to it inside the network
INCEPTION_CLASSES = 1008  # the 2015-12-05 graph's classifier (unused by FID, but part of the weights file)
WAV2CLIP_WIDTH = 512  # Wav2CLIP's embedding: ResNet-18's pooled features and its projection, CLIP ViT-B/32's width


# ---- the FID Inception ----------------------------------------------------------------------------------------------


class ConvUnit(nn.Module):
    """Convolution (no bias), batch norm (eps 0.001) and ReLU: every layer of the Inception (``conv``, ``bn``)."""

    def __init__(self, channels_in: int, channels_out: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(channels_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def same_average(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pool, stride 1, that averages only the pixels inside the picture (TensorFlow's padding rule)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class MixedA(nn.Module):
    """Mixed_5b-5d (35x35): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, channels_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvUnit(channels_in, 64, 1)
        self.branch5x5_1 = ConvUnit(channels_in, 48, 1)
        self.branch5x5_2 = ConvUnit(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvUnit(channels_in, 64, 1)
        self.branch3x3dbl_2 = ConvUnit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvUnit(96, 96, 3, padding=1)
        self.branch_pool = ConvUnit(channels_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pooled = self.branch_pool(same_average(x))
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), double, pooled], 1)


class ReductionA(nn.Module):
    """Mixed_6a: 35x35 -> 17x17 (strided 3x3, strided double 3x3, max pool)."""

    def __init__(self, channels_in: int):
        super().__init__()
        self.branch3x3 = ConvUnit(channels_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvUnit(channels_in, 64, 1)
        self.branch3x3dbl_2 = ConvUnit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvUnit(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), double, F.max_pool2d(x, 3, stride=2)], 1)


class MixedC(nn.Module):
    """Mixed_6b-6e (17x17): factorised 7x7 branches of ``channels_7x7`` channels."""

    def __init__(self, channels_in: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        self.branch1x1 = ConvUnit(channels_in, 192, 1)
        self.branch7x7_1 = ConvUnit(channels_in, c, 1)
        self.branch7x7_2 = ConvUnit(c, c, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvUnit(c, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvUnit(channels_in, c, 1)
        self.branch7x7dbl_2 = ConvUnit(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvUnit(c, c, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvUnit(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvUnit(c, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvUnit(channels_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(same_average(x))], 1)


class ReductionB(nn.Module):
    """Mixed_7a: 17x17 -> 8x8 (strided 3x3, factorised 7x7 then strided 3x3, max pool)."""

    def __init__(self, channels_in: int):
        super().__init__()
        self.branch3x3_1 = ConvUnit(channels_in, 192, 1)
        self.branch3x3_2 = ConvUnit(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvUnit(channels_in, 192, 1)
        self.branch7x7x3_2 = ConvUnit(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvUnit(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvUnit(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, 3, stride=2)], 1)


class MixedE(nn.Module):
    """Mixed_7b and 7c (8x8): split 1x3/3x1 branches; the pooled branch averages (7b) or takes the maximum (7c:
    so the 2015-12-05 graph has it, unlike the paper)."""

    def __init__(self, channels_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvUnit(channels_in, 320, 1)
        self.branch3x3_1 = ConvUnit(channels_in, 384, 1)
        self.branch3x3_2a = ConvUnit(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvUnit(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvUnit(channels_in, 448, 1)
        self.branch3x3dbl_2 = ConvUnit(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvUnit(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvUnit(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvUnit(channels_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        single = torch.cat([self.branch3x3_2a(single), self.branch3x3_2b(single)], 1)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        double = torch.cat([self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else same_average(x)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(pooled)], 1)


class FidInception(nn.Module):
    """The FID Inception v3 up to its pool3 features: pictures [B, 3, H, W] in [0, 1], any size -> [B, 2048].

    As pytorch-fid feeds it: resized to 299x299 inside the network (bilinear, no antialiasing, corners not
    aligned), scaled to [-1, 1]. ``fc`` is the graph's classifier, unused here but part of the weights file."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvUnit(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvUnit(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvUnit(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvUnit(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvUnit(80, 192, 3)
        self.Mixed_5b = MixedA(192, pool_features=32)
        self.Mixed_5c = MixedA(256, pool_features=64)
        self.Mixed_5d = MixedA(288, pool_features=64)
        self.Mixed_6a = ReductionA(288)
        self.Mixed_6b = MixedC(768, channels_7x7=128)
        self.Mixed_6c = MixedC(768, channels_7x7=160)
        self.Mixed_6d = MixedC(768, channels_7x7=160)
        self.Mixed_6e = MixedC(768, channels_7x7=192)
        self.Mixed_7a = ReductionB(768)
        self.Mixed_7b = MixedE(1280, max_pool=False)
        self.Mixed_7c = MixedE(2048, max_pool=True)
        self.fc = nn.Linear(2048, INCEPTION_CLASSES)

    def forward(self, pictures: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(pictures, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # [B, 3, 299, 299] in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [B, 64, 147, 147]
        x = F.max_pool2d(x, 3, stride=2)  # [B, 64, 73, 73]
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)  # [B, 192, 35, 35]
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c):
            x = block(x)
        for block in (self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ends [B, 2048, 8, 8]
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # [B, 2048] pool3


# ---- Wav2CLIP -------------------------------------------------------------------------------------------------------


class Spectrogram(nn.Module):
    """A power spectrogram with torchaudio's ``Spectrogram`` defaults (win_length = n_fft, hop = win_length // 2,
    periodic Hann window kept as the ``window`` buffer, centred with reflected padding, not normalised, power 2)."""

    def __init__(self, n_fft: int = 400, win_length: int | None = None, hop_length: int | None = None):
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.register_buffer("window", torch.hann_window(self.win_length))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape  # [..., T]
        spectrum = torch.stft(
            waveform.reshape(-1, shape[-1]),
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # [B, n_fft // 2 + 1, frames]
        return spectrum.abs().pow(2.0).reshape(*shape[:-1], *spectrum.shape[-2:])  # [..., n_fft // 2 + 1, frames]


class ResidualBlock(nn.Module):
    """ResNet-18's basic block: two 3x3 convolutions with batch norm, and a 1x1 projection of the shortcut
    (``downsample``) where the block strides or widens."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.downsample = None
        if stride != 1 or channels_in != channels_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False), nn.BatchNorm2d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + shortcut)


class Wav2ClipEncoder(nn.Module):
    """Wav2CLIP's ``audio_encoder``: a ResNet-18 over the log power spectrogram (n_fft 512, hop 353) of the
    waveforms [B, T] -> [B, 512].

    The log spectrogram is standardised with the mean and standard deviation of the whole batch, as wav2clip does:
    a clip's embedding depends on the clips it is embedded with (``Evaluator`` embeds ``--batch-size`` at a time)."""

    def __init__(self):
        super().__init__()
        self.spectrogram = Spectrogram(n_fft=512, hop_length=353)
        self.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(ResidualBlock(64, 64), ResidualBlock(64, 64))
        self.layer2 = nn.Sequential(ResidualBlock(64, 128, stride=2), ResidualBlock(128, 128))
        self.layer3 = nn.Sequential(ResidualBlock(128, 256, stride=2), ResidualBlock(256, 256))
        self.layer4 = nn.Sequential(
            ResidualBlock(256, WAV2CLIP_WIDTH, stride=2), ResidualBlock(WAV2CLIP_WIDTH, WAV2CLIP_WIDTH)
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = torch.log(self.spectrogram(waveforms.unsqueeze(1)) + 1e-7)  # [B, 1, 257, frames]
        x = (x - x.mean()) / (x.std() + 1e-9)  # over the whole batch (class docstring)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)  # [B, 64, 65, frames / 4]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 512, 9, frames / 32]
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # [B, 512]


class Wav2ClipProjection(nn.Module):
    """Wav2CLIP's ``audio_transform``: Linear, ReLU, Dropout, Linear (512 -> 512 -> 512), into CLIP's space."""

    def __init__(self):
        super().__init__()
        self.sequential = nn.Sequential(
            nn.Linear(WAV2CLIP_WIDTH, WAV2CLIP_WIDTH),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(WAV2CLIP_WIDTH, WAV2CLIP_WIDTH),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sequential(features)


class Wav2Clip(nn.Module):
    """Wav2CLIP as its released checkpoint holds it (``audio_encoder.*``, ``audio_transform.*``) and as
    ``wav2clip.get_model`` runs it (frozen, with the projection): waveforms [B, T] -> embeddings [B, 512]."""

    def __init__(self):
        super().__init__()
        self.audio_encoder = Wav2ClipEncoder()
        self.audio_transform = Wav2ClipProjection()

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.audio_transform(self.audio_encoder(waveforms))  # [B, 512]
