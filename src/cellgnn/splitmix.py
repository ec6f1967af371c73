"""Counter-based random numbers for numba kernels (splitmix64), shared by the NN-descent kNN and
node2vec: a kernel carries one ``uint64`` state per thread or walk and draws from it without
touching a global generator, so results depend on the seed only."""
from __future__ import annotations

import numba
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(inline="always")
def mix(z):
    """splitmix64 finaliser: a well-mixed uint64 from any uint64."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def next_bits(state):
    """Next splitmix64 state and 64 random bits from it."""
    state = state + GOLDEN
    return state, mix(state)


@numba.njit(inline="always")
def uniform(state):
    """Next splitmix64 state and a uniform float64 in [0, 1) from it."""
    state, bits = next_bits(state)
    return state, (bits >> np.uint64(11)) * (1.0 / 9007199254740992.0)
