"""Tiny populations of counts shared by the augmentation tests."""

import numpy as np

from cellgnn.augment.data import library_normalize


def toy_counts(n_per=(40, 30, 20), n_genes=16, seed=0):
    """Gamma–Poisson counts float32 ``[N, G]`` and labels ``[N]`` (str): one marker block per population."""
    rng = np.random.default_rng(seed)
    xs, labels = [], []
    for k, n in enumerate(n_per):
        mu = np.full(n_genes, 5.0)
        mu[4 * k: 4 * k + 4] = 60.0
        xs.append(rng.poisson(rng.gamma(3.0, mu / 3.0, size=(n, n_genes))))
        labels += [f"pop{k}"] * n
    return np.vstack(xs).astype(np.float32), np.array(labels)


def toy_cells(n_per=(40, 30, 20), n_genes=16, seed=0, target_sum=20000.0):
    """(x float32 ``[N, G]`` normalized to ``target_sum``, labels ``[N]``, library sizes ``[N]``)."""
    counts, labels = toy_counts(n_per, n_genes, seed)
    return library_normalize(counts, target_sum), labels, counts.sum(axis=1).astype(np.float64)
