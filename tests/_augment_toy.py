"""Tiny populations of library-size-normalized cells shared by the augmentation tests."""

import numpy as np

from cellgnn.augment.data import library_normalize


def toy_cells(n_per=(40, 30, 20), n_genes=16, seed=0, target_sum=20000.0):
    """Return (x float32 [N, G] normalized to target_sum, labels [N] str): one marker block per population."""
    rng = np.random.default_rng(seed)
    xs, labels = [], []
    for k, n in enumerate(n_per):
        mu = np.full(n_genes, 5.0)
        mu[4 * k: 4 * k + 4] = 60.0
        xs.append(rng.poisson(rng.gamma(3.0, mu / 3.0, size=(n, n_genes))))
        labels += [f"pop{k}"] * n
    return library_normalize(np.vstack(xs).astype(np.float32), target_sum), np.array(labels)
