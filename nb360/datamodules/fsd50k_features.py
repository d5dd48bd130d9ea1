"""FSD50K features and augmentations: log-mel spectrograms of 1-s chunks and the reference's train-time transforms.

The reference (NB ``backbone/data_utils/audio_dataset.py``) reads a chunk with
``soundfile`` (int16 PCM scaled by 1/32768, tiled to at least 1 s), computes
``torchaudio.transforms.MelSpectrogram(sample_rate=22050, n_fft=1920, win_length=661,
hop_length=220, n_mels=96)`` with torchaudio's defaults (periodic Hann window, centred
frames with reflect padding, power 2, HTK mel scale, no filter normalisation,
f_min 0, f_max sample_rate // 2), converts it with ``librosa.power_to_db`` (ref 1,
amin 1e-10, top_db 80), adds 75 and subtracts the spectrogram's mean. torchaudio and
librosa are not nb360 dependencies, so the same computation is written here with
``torch.stft`` and an explicit mel filterbank.

Training chunks (and the background-noise spectrograms mixed into them) go through
:class:`TrainAugment`: PadToSize with wrap or constant(min) padding, SpecAugment with
probability 0.5, RandomCrop; :class:`BackgroundMix` then blends a noise spectrogram in
with probability 0.75. Random draws use torch's generator (the default one unless
one is passed), which PyTorch seeds differently in every DataLoader worker.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.io.wavfile
import torch
from torch import Tensor

from nb360.errors import DataError

__all__ = [
    "SAMPLE_RATE",
    "CHUNK_SAMPLES",
    "FRAMES",
    "N_MELS",
    "FEATURE_PARAMS",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "LogMel",
    "read_wav",
    "pad_to_size",
    "spec_augment",
    "random_crop",
    "TrainAugment",
    "BackgroundMix",
]

SAMPLE_RATE = 22050
CHUNK_SAMPLES = SAMPLE_RATE  # 1-s chunks
N_FFT = 96 * 20  # 1920
WIN_LENGTH = int(SAMPLE_RATE * 0.03)  # 661
HOP_LENGTH = int(SAMPLE_RATE * 0.01)  # 220
N_MELS = 96
FRAMES = 1 + CHUNK_SAMPLES // HOP_LENGTH  # 101 centred frames per chunk
AMIN = 1e-10  # librosa.power_to_db defaults
TOP_DB = 80.0
DB_OFFSET = 75.0  # the reference's AudioParser adds top_db / 2 with its own top_db = 150
# everything :class:`LogMel` computes from; a cache of features is valid only for these values
# (``version`` changes with the computation itself)
FEATURE_PARAMS = {
    "version": 1,
    "sample_rate": SAMPLE_RATE,
    "chunk_samples": CHUNK_SAMPLES,
    "n_fft": N_FFT,
    "win_length": WIN_LENGTH,
    "hop_length": HOP_LENGTH,
    "n_mels": N_MELS,
    "amin": AMIN,
    "top_db": TOP_DB,
    "db_offset": DB_OFFSET,
}


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray | float:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray | float:
    """Inverse of :func:`hz_to_mel`: ``700 (10^(m / 2595) - 1)``."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Triangular HTK mel filters, shape ``(n_freqs, n_mels)``, unnormalised (peak 1), as torchaudio's ``melscale_fbanks``.

    The STFT bins sit at ``f_k = k (sample_rate // 2) / (n_freqs - 1)``. ``n_mels + 2``
    edge frequencies ``e_0 .. e_{n_mels+1}`` are equally spaced on the mel scale between
    ``f_min`` and ``f_max`` (default ``sample_rate // 2``); filter ``j`` rises linearly
    from 0 at ``e_j`` to 1 at ``e_{j+1}`` and falls back to 0 at ``e_{j+2}``:
    ``w[k, j] = max(0, min((f_k - e_j) / (e_{j+1} - e_j), (e_{j+2} - f_k) / (e_{j+2} - e_{j+1})))``.
    Computed in float64 and returned as float32.
    """
    f_max = float(sample_rate // 2) if f_max is None else f_max
    freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    widths = np.diff(edges)
    rising = (freqs[:, None] - edges[None, :-2]) / widths[None, :-1]
    falling = (edges[None, 2:] - freqs[:, None]) / widths[None, 1:]
    return torch.from_numpy(np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32))


class LogMel:
    """Audio ``(..., samples)`` -> reference log-mel features ``(..., 96, frames)``, each spectrogram normalised on its own."""

    def __init__(self) -> None:
        self.window = torch.hann_window(WIN_LENGTH, periodic=True)
        self.filterbank = mel_filterbank(N_FFT // 2 + 1, N_MELS, SAMPLE_RATE)

    def power_mel(self, audio: Tensor) -> Tensor:
        """Mel power spectrogram: centred (reflect-padded) STFT, squared magnitude, mel filters."""
        shape = audio.shape
        spec = torch.stft(
            audio.reshape(-1, shape[-1]),
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.abs().pow(2.0)
        mel = torch.matmul(power.transpose(-1, -2), self.filterbank).transpose(-1, -2)
        return mel.reshape(*shape[:-1], N_MELS, mel.shape[-1])

    def __call__(self, audio: Tensor) -> Tensor:
        db = 10.0 * torch.log10(self.power_mel(audio).clamp_min(AMIN))
        db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - TOP_DB)
        db = db + DB_OFFSET
        return db - db.mean(dim=(-2, -1), keepdim=True)


def read_wav(path: str | os.PathLike[str], min_samples: int = CHUNK_SAMPLES) -> np.ndarray:
    """A mono wav at 22,050 Hz as float32 in [-1, 1), tiled to at least ``min_samples`` (the reference's ``load_audio``).

    Integer PCM is scaled by ``2^-(bits - 1)`` as soundfile does; float wavs are kept as they are.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", scipy.io.wavfile.WavFileWarning)
            rate, data = scipy.io.wavfile.read(path)
    except Exception as err:
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise DataError(f"{path}: not a readable wav file (truncated or corrupt?): {reason}") from None
    if rate != SAMPLE_RATE:
        raise DataError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz")
    if data.ndim != 1:
        raise DataError(f"{path}: {data.shape[1]} channels, expected mono audio")
    if data.size == 0:
        raise DataError(f"{path}: holds no samples")
    if data.dtype in (np.int16, np.int32):
        audio = (data / float(2 ** (8 * data.dtype.itemsize - 1))).astype(np.float32)
    elif data.dtype.kind == "f":
        audio = data.astype(np.float32)
    else:
        raise DataError(f"{path}: unsupported sample format {data.dtype}; expected 16- or 32-bit PCM or float")
    if audio.size < min_samples:
        audio = np.tile(audio, min_samples // audio.size + 1)[:min_samples]
    return audio


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), dtype=torch.float64, generator=generator).item()


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer in ``[low, high]`` (both included, like ``random.randint``)."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


def pad_to_size(spec: Tensor, size: int, mode: Literal["constant", "wrap"]) -> Tensor:
    """Pad the time axis to ``size`` frames, ``padding // 2`` before and the rest after; longer inputs are returned unchanged.

    ``constant`` fills with the spectrogram's minimum, ``wrap`` repeats it periodically (``np.pad``'s modes).
    """
    frames = spec.shape[-1]
    if frames >= size:
        return spec
    before = (size - frames) // 2
    if mode == "wrap":
        return spec[..., torch.arange(-before, size - before) % frames]
    out = spec.new_full((*spec.shape[:-1], size), spec.min().item())
    out[..., before : before + frames] = spec
    return out


def spec_augment(
    spec: Tensor,
    num_mask: int = 2,
    freq_masking: float = 0.15,
    time_masking: float = 0.20,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SpecAugment on ``(freqs, frames)``: 1 to ``num_mask`` rounds, each masking one band of up to
    ``freq_masking`` of the frequencies and one span of up to ``time_masking`` of the frames, filled
    with the input's minimum.

    Each round draws a fraction ``p ~ U(0, max)``, masks ``int(p n)`` rows (columns) starting at
    ``int(U(0, n - int(p n)))``, as the reference's ``spec_augment``.
    """
    out = spec.clone()
    value = spec.min().item()
    freqs, frames = spec.shape[-2:]
    for _ in range(_randint(1, num_mask, generator)):
        width = int(_uniform(0.0, freq_masking, generator) * freqs)
        start = int(_uniform(0.0, freqs - width, generator))
        out[..., start : start + width, :] = value
        width = int(_uniform(0.0, time_masking, generator) * frames)
        start = int(_uniform(0.0, frames - width, generator))
        out[..., :, start : start + width] = value
    return out


def random_crop(spec: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """``size`` consecutive frames starting at a uniformly drawn frame."""
    start = _randint(0, spec.shape[-1] - size, generator)
    return spec[..., start : start + size]


@dataclass(frozen=True)
class TrainAugment:
    """The reference's training transform, in order: PadToSize (wrap or constant), SpecAugment (``spec_prob``), RandomCrop."""

    size: int = FRAMES
    wrap_pad_prob: float = 0.5
    spec_prob: float = 0.5
    num_mask: int = 2
    freq_masking: float = 0.15
    time_masking: float = 0.20

    def __call__(self, spec: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mode: Literal["constant", "wrap"] = "wrap" if _uniform(0.0, 1.0, generator) < self.wrap_pad_prob else "constant"
        spec = pad_to_size(spec, self.size, mode)
        if _uniform(0.0, 1.0, generator) < self.spec_prob:
            spec = spec_augment(spec, self.num_mask, self.freq_masking, self.time_masking, generator)
        return random_crop(spec, self.size, generator)


@dataclass(frozen=True)
class BackgroundMix:
    """With probability ``prob``: ``x = (1 - a) x + a noise``, ``a ~ U(0, max_alpha)``, where ``noise`` is a
    uniformly drawn background spectrogram passed through the training transform (the reference's
    ``UseMixerWithProb(BackgroundAddMixer(), 0.75)``); the target is unchanged.
    """

    prob: float = 0.75
    max_alpha: float = 0.5

    def __call__(
        self, spec: Tensor, noises: Sequence[Tensor], augment: TrainAugment, generator: torch.Generator | None = None
    ) -> Tensor:
        if _uniform(0.0, 1.0, generator) >= self.prob:
            return spec
        noise = augment(noises[_randint(0, len(noises) - 1, generator)], generator)
        alpha = _uniform(0.0, self.max_alpha, generator)
        return (1.0 - alpha) * spec + alpha * noise

