"""Write a small synthetic stand-in for CIFAR-10 in the CIFAR-10 *binary* layout, to try the
recipe (and test it) without the real data set.

    python examples/cifar10/synthetic.py DIR [--train 60] [--test 20] [--seed 0]

DIR gets data_batch_1.bin .. data_batch_5.bin (the training images spread over the five
batches, as in the real set) and test_batch.bin: records of 1 label byte + 3072 pixel bytes
(the R, G and B planes, 32 x 32 each, row-major). ``cifar10:DIR`` then reads it like CIFAR-10.

Class k (0..9) is a 32 x 32 colour image with a horizontal/vertical/diagonal grating of class-
dependent orientation, frequency and colour, a random phase and brightness, and pixel noise: a
tiny network learns it in an epoch or two (numbers mean nothing about CIFAR-10).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RECORD = 1 + 3 * 32 * 32


def images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic images (uint8 [n, 3, 32, 32]) and balanced labels (uint8 [n])."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    rr, cc = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    angles = np.pi * np.arange(10) / 10
    freqs = 2 * np.pi / np.array([4, 6, 8, 5, 7, 4, 6, 8, 5, 7])
    colours = np.abs(np.sin(np.arange(30).reshape(10, 3) * 1.7)) * 0.8 + 0.2
    x = np.empty((n, 3, 32, 32), np.float64)
    for i, k in enumerate(y):
        u = np.cos(angles[k]) * cc + np.sin(angles[k]) * rr
        g = 0.5 + 0.5 * np.sin(freqs[k] * u + rng.uniform(0, 2 * np.pi))
        x[i] = colours[k][:, None, None] * g * rng.uniform(0.6, 1.0)
    x += rng.normal(0, 0.08, x.shape)
    return np.clip(np.rint(255 * x), 0, 255).astype(np.uint8), y


def records(x: np.ndarray, y: np.ndarray) -> bytes:
    r = np.empty((len(y), RECORD), np.uint8)
    r[:, 0] = y
    r[:, 1:] = x.reshape(len(y), -1)
    return r.tobytes()


def write(root, train: int = 60, test: int = 20, seed: int = 0) -> Path:
    """Write the six batch files into ``root`` (created); returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if train < 5 or test < 1:
        raise ValueError("need at least 5 training images (one per batch file) and 1 test image")
    x, y = images(train + test, seed)
    for b, idx in enumerate(np.array_split(np.arange(train), 5), start=1):
        (root / f"data_batch_{b}.bin").write_bytes(records(x[idx], y[idx]))
    (root / "test_batch.bin").write_bytes(records(x[train:], y[train:]))
    return root


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--train", type=int, default=60)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(write(a.dir, a.train, a.test, a.seed))
