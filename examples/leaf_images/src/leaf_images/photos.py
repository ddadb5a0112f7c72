"""Synthetic leaf photos for the tutorial (your own data would be real photos): a green leaf on a pale background;
``rust`` adds small orange spots, ``blight`` one large brown blotch."""

from __future__ import annotations

import numpy as np

SIZE = 32
CLASSES = ("healthy", "rust", "blight")
LEAF, BACKGROUND, RUST, BLIGHT = (60, 150, 50), (225, 220, 200), (215, 120, 30), (95, 65, 35)


def photos(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` photos uint8 [n, 3, SIZE, SIZE] and their class indices into ``CLASSES``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    for i, label in enumerate(labels):
        cy, cx = rng.uniform(12, 20, 2)
        ry, rx = rng.uniform(9, 14), rng.uniform(6, 10)
        leaf = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
        image = np.where(leaf, np.array(LEAF)[:, None, None], np.array(BACKGROUND)[:, None, None]).astype(float)
        if CLASSES[label] == "rust":
            for sy, sx in zip(*np.nonzero(leaf), strict=True):
                if rng.random() < 0.06:
                    image[:, max(sy - 1, 0) : sy + 1, max(sx - 1, 0) : sx + 1] = np.array(RUST)[:, None, None]
        elif CLASSES[label] == "blight":
            by, bx = cy + rng.uniform(-4, 4), cx + rng.uniform(-3, 3)
            blotch = leaf & (((y - by) ** 2 + (x - bx) ** 2) <= rng.uniform(12, 30))
            image[:, blotch] = np.array(BLIGHT)[:, None]
        image += rng.normal(0.0, 12.0, image.shape)  # sensor noise
        out[i] = np.clip(image, 0, 255).astype(np.uint8)
    return out, labels
