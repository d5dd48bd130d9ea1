"""Write the arrays of the "sines" example task: three classes of noisy sine waves of different frequencies.

    python examples/sines/make_data.py            # writes sines_{train,val,test}.npz next to sines.yaml
    python train.py --task examples/sines/sines.yaml
"""

from pathlib import Path

import numpy as np


def sines(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 3, n)
    t = np.linspace(0, 1, 128)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    waves = np.sin(2 * np.pi * (2 + 3 * labels[:, None]) * t + phase) + 1.5 * rng.standard_normal((n, 128))
    return waves[:, None].astype(np.float32), labels


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    rng = np.random.default_rng(0)
    for part, n in (("train", 512), ("val", 128), ("test", 256)):
        x, y = sines(n, rng)
        np.savez(here / f"sines_{part}.npz", x=x, y=y)
        print(f"wrote {here / f'sines_{part}.npz'}: x {x.shape}, y {y.shape}")
