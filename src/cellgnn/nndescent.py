"""NN-descent kNN graph (Dong, Moses & Li 2011) compiled with numba: little code, so little compilation.

pynndescent implements the same algorithm for many metrics; a process pays numba's
compilation of all its kernels (about a minute of CPU with an empty numba cache, the
situation of a user's first run) before it searches. This module compiles a handful of
small kernels for squared euclidean distance only (cosine: rows normalised first), a few
seconds, and caches them on disk like the rest of numba's cache.

Algorithm (facts from the NN-descent paper and the random-projection-forest initialisation
used by pynndescent/annoy):

1. ``n_trees`` random-projection trees (split by the hyperplane halfway between two random
   points of the cell, down to ``leaf_size`` points); every pair of points sharing a leaf is
   a candidate neighbour pair.
2. NN-descent rounds: each point's neighbour list (a bounded max-heap of the ``k`` closest
   found so far) and reverse list give at most ``max_candidates`` new and old candidates
   (a hash-priority sample); every new–new and new–old pair of one point's candidates is a
   candidate pair for both points ("local join"). Stop after ``n_iters`` rounds or when a
   round changes fewer than ``delta · N · k`` list entries.

Threads: work is split by owner (node ``i`` belongs to thread ``i mod W``): a thread
computes every candidate pair that touches one of its nodes and updates only its nodes'
lists, so no two threads write the same list. A list keeps the ``k`` closest of what it was
offered whatever the order, so the result does not depend on the number of threads
(barring exact distance ties). The random numbers come from a counter-based generator
keyed by the seed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .splitmix import GOLDEN
from .splitmix import mix as _mix
from .splitmix import next_bits as _next

_BIG = np.float32(np.finfo(np.float32).max)


@numba.njit(inline="always", fastmath=True)
def _sqdist(x, i, j):
    d = np.float32(0.0)
    for f in range(x.shape[1]):
        t = x[i, f] - x[j, f]
        d += t * t
    return d


@numba.njit(inline="always")
def _push(dist, idx, flag, i, d, j):
    """Offer j at squared distance d to i's max-heap (root = farthest kept); 1 if it entered."""
    if d >= dist[i, 0]:
        return 0
    k = dist.shape[1]
    for t in range(k):
        if idx[i, t] == j:
            return 0
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= k:
            break
        if c + 1 < k and dist[i, c + 1] > dist[i, c]:
            c += 1
        if dist[i, c] <= d:
            break
        dist[i, pos], idx[i, pos], flag[i, pos] = dist[i, c], idx[i, c], flag[i, c]
        pos = c
    dist[i, pos], idx[i, pos], flag[i, pos] = d, j, 1
    return 1


@numba.njit(cache=True, nogil=True, fastmath=True)
def _rp_tree(x, seed, leaf_size, order, starts):
    """One random-projection tree: ``order`` holds the points leaf by leaf, leaf l being
    ``order[starts[l]:starts[l + 1]]``; returns the number of leaves."""
    n, dim = x.shape
    for i in range(n):
        order[i] = i
    stack_lo = np.empty(4096, np.int64)
    stack_hi = np.empty(4096, np.int64)
    top = 0
    stack_lo[0], stack_hi[0] = 0, n
    top = 1
    normal = np.empty(dim, np.float32)
    state = _mix(np.uint64(seed))
    n_leaves = 0
    while top > 0:
        top -= 1
        lo, hi = stack_lo[top], stack_hi[top]
        size = hi - lo
        if size <= leaf_size or top >= 4094:
            starts[n_leaves] = lo
            n_leaves += 1
            continue
        state, r = _next(state)
        a = order[lo + np.int64(r % np.uint64(size))]
        b = a
        for _ in range(8):
            state, r = _next(state)
            b = order[lo + np.int64(r % np.uint64(size))]
            if b != a:
                break
        offset = np.float32(0.0)
        for f in range(dim):
            normal[f] = x[a, f] - x[b, f]
            offset += normal[f] * (x[a, f] + x[b, f])
        offset *= np.float32(0.5)
        i, j = lo, hi - 1
        while i <= j:  # points below the hyperplane to the front
            p = order[i]
            s = np.float32(0.0)
            for f in range(dim):
                s += normal[f] * x[p, f]
            if s < offset:
                i += 1
            else:
                order[i], order[j] = order[j], order[i]
                j -= 1
        mid = i
        if mid - lo < size // 20 or hi - mid < size // 20:  # degenerate split (duplicates): halve
            mid = lo + size // 2
        stack_lo[top], stack_hi[top] = mid, hi
        stack_lo[top + 1], stack_hi[top + 1] = lo, mid
        top += 2
    starts[n_leaves] = n
    return n_leaves


@numba.njit(cache=True, nogil=True, fastmath=True)
def _join_leaves(x, order, starts, n_leaves, owner, n_owners, dist, idx, flag):
    """Offer every pair of points sharing a leaf to the lists of this thread's points."""
    for leaf in range(n_leaves):
        lo, hi = starts[leaf], starts[leaf + 1]
        for a in range(lo, hi):
            p = order[a]
            p_mine = p % n_owners == owner
            for b in range(a + 1, hi):
                q = order[b]
                q_mine = q % n_owners == owner
                if not (p_mine or q_mine):
                    continue
                d = _sqdist(x, p, q)
                if p_mine:
                    _push(dist, idx, flag, p, d, q)
                if q_mine:
                    _push(dist, idx, flag, q, d, p)


@numba.njit(inline="always")
def _offer_candidate(cand, prio, v, u, pr):
    """Keep the ``M`` candidates of v with the smallest hash priority (a random sample)."""
    m = cand.shape[1]
    if pr >= prio[v, 0]:
        return
    for t in range(m):
        if cand[v, t] == u:
            return
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= m:
            break
        if c + 1 < m and prio[v, c + 1] > prio[v, c]:
            c += 1
        if prio[v, c] <= pr:
            break
        prio[v, pos], cand[v, pos] = prio[v, c], cand[v, c]
        pos = c
    prio[v, pos], cand[v, pos] = pr, u


@numba.njit(cache=True, nogil=True)
def _candidates(idx, flag, seed, owner, n_owners, new, new_prio, old, old_prio):
    """New and old candidates (neighbours and reverse neighbours, hash-sampled) of this thread's nodes."""
    n, k = idx.shape
    max_prio = np.uint64(0xFFFFFFFFFFFFFFFF)
    for v in range(owner, n, n_owners):
        for t in range(new.shape[1]):
            new[v, t], old[v, t] = -1, -1
            new_prio[v, t], old_prio[v, t] = max_prio, max_prio
    for v in range(n):
        for t in range(k):
            u = idx[v, t]
            if u < 0:
                continue
            pr = _mix(seed ^ (np.uint64(v) * GOLDEN) ^ np.uint64(u))
            if flag[v, t]:
                if v % n_owners == owner:
                    _offer_candidate(new, new_prio, v, u, pr)
                if u % n_owners == owner:
                    _offer_candidate(new, new_prio, u, v, pr)
            else:
                if v % n_owners == owner:
                    _offer_candidate(old, old_prio, v, u, pr)
                if u % n_owners == owner:
                    _offer_candidate(old, old_prio, u, v, pr)


@numba.njit(cache=True, nogil=True)
def _mark_sampled(idx, flag, new, owner, n_owners):
    """New neighbours of this thread's nodes that were sampled as candidates become old."""
    n, k = idx.shape
    for v in range(owner, n, n_owners):
        for t in range(k):
            if flag[v, t]:
                u = idx[v, t]
                for c in range(new.shape[1]):
                    if new[v, c] == u:
                        flag[v, t] = 0
                        break


@numba.njit(cache=True, nogil=True, fastmath=True)
def _local_join(x, new, old, owner, n_owners, dist, idx, flag):
    """Offer every new–new and new–old candidate pair of every node to this thread's lists;
    returns the number of list changes."""
    n, m = new.shape
    changes = 0
    for v in range(n):
        for a in range(m):
            p = new[v, a]
            if p < 0:
                continue
            p_mine = p % n_owners == owner
            for b in range(a + 1, m + m):
                q = new[v, b] if b < m else old[v, b - m]
                if q < 0 or q == p:
                    continue
                q_mine = q % n_owners == owner
                if not (p_mine or q_mine):
                    continue
                d = _sqdist(x, p, q)
                if p_mine:
                    changes += _push(dist, idx, flag, p, d, q)
                if q_mine:
                    changes += _push(dist, idx, flag, q, d, p)
    return changes


def nndescent_knn(points: np.ndarray, k: int, metric: str = "euclidean", seed: int = 0, n_jobs: int = 1,
                  n_trees: int = 8, leaf_size: int = 32, n_iters: int = 10, max_candidates: int = 24,
                  delta: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """k nearest other points of every point: ``(indices int64 [N, k], distances float32 [N, k])``.

    Rows sorted by distance (euclidean, or cosine distance ``1 - cos``); the point itself is
    never its own neighbour. ``n_jobs`` threads (numba kernels without the GIL).
    """
    x = np.ascontiguousarray(points, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    w = max(1, int(n_jobs))
    dist = np.full((n, k), _BIG, dtype=np.float32)
    idx = np.full((n, k), -1, dtype=np.int32)
    flag = np.zeros((n, k), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**63, size=n_trees + n_iters)
    m = max_candidates
    with ThreadPoolExecutor(max_workers=w) as pool:
        def on_all(fn, *args):  # fn(*args, owner, n_owners) on every thread; returns the results
            return list(pool.map(lambda o: fn(*args, o, w), range(w)))

        for first in range(0, n_trees, w):  # w trees built at a time, then joined by all threads
            trees = range(first, min(n_trees, first + w))
            order = np.empty((len(trees), n), dtype=np.int64)
            starts = np.empty((len(trees), n + 1), dtype=np.int64)
            n_leaves = list(pool.map(lambda t: _rp_tree(x, seeds[t], leaf_size, order[t - first], starts[t - first]),
                                     trees))
            for t in range(len(trees)):
                on_all(lambda *a: _join_leaves(x, order[t], starts[t], n_leaves[t], *a, dist, idx, flag))
        del order, starts
        new, old = np.empty((n, m), np.int32), np.empty((n, m), np.int32)
        new_prio, old_prio = np.empty((n, m), np.uint64), np.empty((n, m), np.uint64)
        for it in range(n_iters):
            s = np.uint64(seeds[n_trees + it])
            on_all(lambda *a: _candidates(idx, flag, s, *a, new, new_prio, old, old_prio))
            on_all(lambda *a: _mark_sampled(idx, flag, new, *a))
            changes = sum(on_all(lambda *a: _local_join(x, new, old, *a, dist, idx, flag)))
            if changes <= delta * n * k:
                break
    missing = np.flatnonzero((idx < 0).any(axis=1))
    if missing.size:  # a point offered fewer than k candidates (tiny inputs): exact search for it
        d2 = ((x[missing, None, :] - x[None, :, :]) ** 2).sum(-1) if missing.size * n <= 2**26 else None
        for r, i in enumerate(missing):
            row = d2[r] if d2 is not None else ((x - x[i]) ** 2).sum(1)
            row[i] = np.inf
            best = np.argsort(row, kind="stable")[:k]
            idx[i], dist[i] = best, row[best]
    order = np.lexsort((idx, dist), axis=1)
    idx = np.take_along_axis(idx, order, axis=1).astype(np.int64)
    d = np.sqrt(np.take_along_axis(dist, order, axis=1))
    return idx, (d * d / 2 if metric == "cosine" else d).astype(np.float32)
