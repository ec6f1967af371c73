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
   a candidate neighbour pair. The points are first reordered leaf by leaf along the first
   tree, so that points close in space are close in memory for everything after it.
2. NN-descent rounds: each point's neighbour list (a bounded max-heap of the ``build_k``
   closest found so far, ``k + k // 2`` by default: a longer list than asked for reaches a
   higher recall of the first ``k``) and reverse list give at most ``max_candidates`` new and
   old candidates (a hash-priority sample); every new–new and new–old pair of one point's
   candidates is a candidate pair for both points ("local join"). Stop after ``n_iters``
   rounds or when fewer than ``delta · N · build_k`` list entries that entered during a round
   are still there at its end.

Threads: the pairs of a block of points are computed by all threads (point ``v`` by thread
``v mod W``) and kept when they beat the farthest entry of either list; then each thread
offers them to the lists it owns (node ``i`` belongs to thread ``i mod W``), so no two
threads write the same list. A list keeps the ``build_k`` closest of what it was offered
whatever the order (ties broken by index), so the result does not depend on the number of
threads. The random numbers come from a counter-based generator keyed by the seed.
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
def _before(a, i, b, j):
    """(a, i) < (b, j): ties in the key broken by the index, so heaps never depend on offer order."""
    return a < b or (a == b and i < j)


@numba.njit(inline="always")
def _push(dist, idx, flag, i, d, j):
    """Offer j at squared distance d to i's max-heap (root = farthest kept); 1 if it entered
    (flagged 2: entered this round)."""
    if not _before(d, j, dist[i, 0], idx[i, 0]):
        return 0
    k = dist.shape[1]
    found = False
    for t in range(k):  # no early exit: a branch-free scan vectorises
        found |= idx[i, t] == j
    if found:
        return 0
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= k:
            break
        if c + 1 < k and _before(dist[i, c], idx[i, c], dist[i, c + 1], idx[i, c + 1]):
            c += 1
        if not _before(d, j, dist[i, c], idx[i, c]):
            break
        dist[i, pos], idx[i, pos], flag[i, pos] = dist[i, c], idx[i, c], flag[i, c]
        pos = c
    dist[i, pos], idx[i, pos], flag[i, pos] = d, j, 2
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
        if mid - lo < max(1, size // 20) or hi - mid < max(1, size // 20):  # degenerate split (duplicates): halve
            mid = lo + size // 2
        stack_lo[top], stack_hi[top] = mid, hi
        stack_lo[top + 1], stack_hi[top + 1] = lo, mid
        top += 2
    starts[n_leaves] = n
    return n_leaves


@numba.njit(cache=True, nogil=True, fastmath=True)
def _leaf_pairs(x, order, starts, l0, l1, part, n_parts, dist, out_p, out_q, out_d):
    """Pairs of points sharing a leaf (leaves l0 + part, l0 + part + n_parts, ... < l1) that beat
    the farthest entry of either list, into ``out_*``; returns how many."""
    c = 0
    for leaf in range(l0 + part, l1, n_parts):
        lo, hi = starts[leaf], starts[leaf + 1]
        for a in range(lo, hi):
            p = order[a]
            for b in range(a + 1, hi):
                q = order[b]
                d = _sqdist(x, p, q)
                if d <= dist[p, 0] or d <= dist[q, 0]:
                    out_p[c], out_q[c], out_d[c] = p, q, d
                    c += 1
    return c


@numba.njit(inline="always")
def _offer_candidate(cand, prio, v, u, pr):
    """Keep the ``M`` candidates of v with the smallest hash priority (a random sample)."""
    m = cand.shape[1]
    if not _before(pr, u, prio[v, 0], cand[v, 0]):
        return
    found = False
    for t in range(m):
        found |= cand[v, t] == u
    if found:
        return
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= m:
            break
        if c + 1 < m and _before(prio[v, c], cand[v, c], prio[v, c + 1], cand[v, c + 1]):
            c += 1
        if not _before(pr, u, prio[v, c], cand[v, c]):
            break
        prio[v, pos], cand[v, pos] = prio[v, c], cand[v, c]
        pos = c
    prio[v, pos], cand[v, pos] = pr, u


@numba.njit(inline="always")
def _priority(seed, v, u):
    """Sampling priority of the pair {v, u}: the same both ways, so a candidate offered twice
    (as a neighbour and a reverse neighbour) is kept or dropped whatever the order."""
    a, b = min(v, u), max(v, u)
    return np.uint32(_mix(seed ^ (np.uint64(a) * GOLDEN) ^ np.uint64(b)) >> np.uint64(32))


@numba.njit(cache=True, nogil=True)
def _candidates(idx, flag, seed, owner, n_owners, own, new, new_prio, old, old_prio):
    """New candidates (new neighbours and reverse neighbours, hash-sampled) of this thread's
    nodes, then old ones of the nodes that have a new one (the others join nothing)."""
    n, k = idx.shape
    m = new.shape[1]
    max_prio = np.uint32(0xFFFFFFFF)
    for v in range(owner, n, n_owners):
        for t in range(m):
            new[v, t], old[v, t] = -1, -1
            new_prio[v, t], old_prio[v, t] = max_prio, max_prio
    for v in range(n):
        v_mine = own[v] == owner
        for t in range(k):
            if flag[v, t] == 0:
                continue
            u = idx[v, t]
            if v_mine:
                _offer_candidate(new, new_prio, v, u, _priority(seed, v, u))
            if own[u] == owner:
                _offer_candidate(new, new_prio, u, v, _priority(seed, v, u))
    has_new = np.zeros(n, np.bool_)
    for v in range(owner, n, n_owners):
        for t in range(m):
            has_new[v] |= new[v, t] >= 0
    for v in range(n):
        for t in range(k):
            u = idx[v, t]
            if flag[v, t] != 0 or u < 0:
                continue
            if has_new[v]:
                _offer_candidate(old, old_prio, v, u, _priority(seed, v, u))
            if has_new[u]:
                _offer_candidate(old, old_prio, u, v, _priority(seed, v, u))


@numba.njit(cache=True, nogil=True)
def _mark_sampled(idx, flag, new, owner, n_owners):
    """New neighbours of this thread's nodes that were sampled as candidates become old."""
    n, k = idx.shape
    m = new.shape[1]
    for v in range(owner, n, n_owners):
        for t in range(k):
            if flag[v, t]:
                u = idx[v, t]
                found = False
                for c in range(m):
                    found |= new[v, c] == u
                if found:
                    flag[v, t] = 0


@numba.njit(cache=True, nogil=True, fastmath=True)
def _join_pairs(x, new, old, v0, v1, part, n_parts, dist, out_p, out_q, out_d):
    """Local join of nodes v0 + part, v0 + part + n_parts, ... < v1: every new–new and new–old
    pair of a node's candidates that beats the farthest entry of either list, into ``out_*``."""
    m = new.shape[1]
    c = 0
    for v in range(v0 + part, v1, n_parts):
        for a in range(m):
            p = new[v, a]
            if p < 0:
                continue
            for b in range(a + 1, m + m):
                q = new[v, b] if b < m else old[v, b - m]
                if q < 0 or q == p:
                    continue
                d = _sqdist(x, p, q)
                if d <= dist[p, 0] or d <= dist[q, 0]:
                    out_p[c], out_q[c], out_d[c] = p, q, d
                    c += 1
    return c


@numba.njit(cache=True, nogil=True)
def _apply(out_p, out_q, out_d, counts, cap, owner, own, dist, idx, flag):
    """Offer every pair found by any thread to the lists of this thread's nodes."""
    for t in range(counts.size):
        for c in range(t * cap, t * cap + counts[t]):
            p, q, d = out_p[c], out_q[c], out_d[c]
            if own[p] == owner:
                _push(dist, idx, flag, p, d, q)
            if own[q] == owner:
                _push(dist, idx, flag, q, d, p)


@numba.njit(cache=True, nogil=True)
def _settle(flag, owner, n_owners):
    """Entries that entered this thread's lists during the round (flag 2) become plain new ones;
    returns how many."""
    n, k = flag.shape
    entered = 0
    for v in range(owner, n, n_owners):
        for t in range(k):
            if flag[v, t] == 2:
                flag[v, t] = 1
                entered += 1
    return entered


def nndescent_knn(points: np.ndarray, k: int, metric: str = "euclidean", seed: int = 0, n_jobs: int = 1,
                  n_trees: int = 8, leaf_size: int = 32, n_iters: int = 10, max_candidates: int = 40,
                  delta: float = 0.001, build_k: int | None = None,
                  block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """k nearest other points of every point: ``(indices int64 [N, k], distances float32 [N, k])``.

    Rows sorted by distance (euclidean, or cosine distance ``1 - cos``); the point itself is
    never its own neighbour. ``n_jobs`` threads (numba kernels without the GIL). Lists of
    ``build_k`` (default ``k + k // 2``) are searched and their first ``k`` returned; ``block``
    points are joined between two rounds of list updates (memory: about
    ``block · 1.5 · max_candidates² · 12`` bytes of pair buffers, besides ``N · (build_k · 9 +
    max_candidates · 16)`` bytes of lists and candidates and a reordered copy of the points).
    """
    x = np.ascontiguousarray(points, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    kb = min(n - 1, max(k, build_k if build_k is not None else k + k // 2))
    w = max(1, min(int(n_jobs), 65535))
    m = max_candidates
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**63, size=n_trees + n_iters)
    own = (np.arange(n) % w).astype(np.uint16)
    dist = np.full((n, kb), _BIG, dtype=np.float32)
    idx = np.full((n, kb), -1, dtype=np.int32)
    flag = np.zeros((n, kb), dtype=np.uint8)
    block = max(1, min(block, n))
    leaf_block = max(1, block // leaf_size)
    cap = max(-(-block // w) * (3 * m * m // 2), -(-leaf_block // w) * leaf_size * leaf_size // 2, 1)
    out_p, out_q = np.empty(cap * w, np.int32), np.empty(cap * w, np.int32)
    out_d = np.empty(cap * w, np.float32)
    counts = np.zeros(w, np.int64)

    order = np.empty((1, n), dtype=np.int64)
    starts = np.empty((1, n + 1), dtype=np.int64)
    n_leaves = [_rp_tree(x, seeds[0], leaf_size, order[0], starts[0])]
    perm = order[0].copy()  # the first tree's leaf order: neighbours in space, neighbours in memory
    x0, x = x, x[perm]
    order[0] = np.arange(n)
    with ThreadPoolExecutor(max_workers=w) as pool:
        def on_all(fn):  # fn(part) for part 0..w-1, one per thread; returns the results
            return list(pool.map(fn, range(w)))

        def offer(pairs):  # pairs(part, out_p, out_q, out_d) -> count; then every list takes its offers
            counts[:] = on_all(lambda o: pairs(o, out_p[o * cap:], out_q[o * cap:], out_d[o * cap:]))
            on_all(lambda o: _apply(out_p, out_q, out_d, counts, cap, o, own, dist, idx, flag))

        first = 1
        while True:
            for t in range(len(n_leaves)):
                for l0 in range(0, n_leaves[t], leaf_block):
                    l1 = min(n_leaves[t], l0 + leaf_block)
                    offer(lambda o, *out: _leaf_pairs(x, order[t], starts[t], l0, l1, o, w, dist, *out))
            if first >= n_trees:
                break
            trees = range(first, min(n_trees, first + w))  # w trees built at a time
            order = np.empty((len(trees), n), dtype=np.int64)
            starts = np.empty((len(trees), n + 1), dtype=np.int64)
            n_leaves = list(pool.map(lambda t: _rp_tree(x, seeds[t], leaf_size, order[t - first], starts[t - first]),
                                     trees))
            first += len(trees)
        del order, starts
        on_all(lambda o: _settle(flag, o, w))
        new, old = np.empty((n, m), np.int32), np.empty((n, m), np.int32)
        new_prio, old_prio = np.empty((n, m), np.uint32), np.empty((n, m), np.uint32)
        for it in range(n_iters):
            s = np.uint64(seeds[n_trees + it])
            on_all(lambda o: _candidates(idx, flag, s, o, w, own, new, new_prio, old, old_prio))
            on_all(lambda o: _mark_sampled(idx, flag, new, o, w))
            for v0 in range(0, n, block):
                v1 = min(n, v0 + block)
                offer(lambda o, *out: _join_pairs(x, new, old, v0, v1, o, w, dist, *out))
            if sum(on_all(lambda o: _settle(flag, o, w))) <= delta * n * kb:
                break
    order = np.lexsort((idx, dist), axis=1)[:, :k]
    idx = np.take_along_axis(idx, order, axis=1)
    dist = np.take_along_axis(dist, order, axis=1)
    result_idx = np.empty((n, k), dtype=np.int64)
    result_d2 = np.empty((n, k), dtype=np.float32)
    result_idx[perm] = np.where(idx >= 0, perm[np.maximum(idx, 0)], -1)
    result_d2[perm] = dist
    x = x0
    missing = np.flatnonzero((result_idx < 0).any(axis=1))
    if missing.size:  # a point offered fewer than k candidates (tiny inputs): exact search for it
        d2 = ((x[missing, None, :] - x[None, :, :]) ** 2).sum(-1) if missing.size * n <= 2**26 else None
        for r, i in enumerate(missing):
            row = d2[r] if d2 is not None else ((x - x[i]) ** 2).sum(1)
            row[i] = np.inf
            best = np.argsort(row, kind="stable")[:k]
            result_idx[i], result_d2[i] = best, row[best]
    order = np.lexsort((result_idx, result_d2), axis=1)
    result_idx = np.take_along_axis(result_idx, order, axis=1)
    d = np.sqrt(np.take_along_axis(result_d2, order, axis=1))
    return result_idx, (d * d / 2 if metric == "cosine" else d).astype(np.float32)
