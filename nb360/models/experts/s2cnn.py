"""Spherical CIFAR-100's expert, S2CNN (Cohen et al. 2018), is registered as unavailable.

The reference (NB ``expert/Spherical/s2cnn/cifar/run_cifar.py``: bandwidth 30, an S2
convolution and SO(3) convolutions on near-identity grids, Adam lr 5e-3, batch 32, 100
epochs) computes its convolutions with SO(3) FFTs from the ``s2cnn`` package, which is
unmaintained and needs CuPy, pynvrtc and lie_learn (CUDA-only kernels, pinned to old
PyTorch). No maintained package provides SO(3) FFTs for current PyTorch:
``torch-harmonics`` has spherical harmonic transforms on S2 only, ``s2fft`` is for JAX,
and ``e3nn`` has Wigner-D matrices and S2 grids but no SO(3) Fourier transform, so an
S2CNN on it would be a new implementation of the transforms rather than the reference's.
``--method expert --task spherical`` therefore exits with this reason.
"""

from __future__ import annotations

from nb360.search.expert import Expert, register_expert

__all__ = ["REASON"]

REASON = (
    "its expert S2CNN needs SO(3) FFTs, which no maintained package provides for this PyTorch "
    "(s2cnn is unmaintained and needs CuPy, pynvrtc and lie_learn; torch-harmonics transforms on S2 only; s2fft is for JAX)"
)

register_expert(
    Expert(
        task="spherical",
        title="S2CNN (bandwidth 30)",
        source="expert/Spherical/s2cnn/cifar/run_cifar.py",
        defaults={
            "model.optimizer": "adam",
            "model.lr": 5e-3,
            "model.weight_decay": 0.0,
            "model.schedule": "constant",
            "trainer.max_epochs": 100,
            "data.batch_size": 32,
        },
        unavailable=REASON,
    )
)
