"""node2vec: biased random walks and a skip-gram with negative sampling, compiled with numba.

Walks follow Grover & Leskovec (2016): from node v reached from t, the next node x
is drawn with probability ∝ w_vx · α(t, x), α = 1/p if x == t, 1 if x is a neighbour
of t, 1/q otherwise. The bias is applied by rejection sampling (proposal ∝ w_vx,
accepted with α / max α), as torch-cluster does. Self-loops are dropped from the walk graph.

The skip-gram uses negative sampling (Mikolov et al. 2013): for every (centre,
context) pair within ``window`` positions, ``negatives`` nodes drawn from the
unigram^0.75 distribution of the walks. Training is mini-batch SGD with word2vec's
linear learning-rate decay: a step's gradients are all taken at the same parameters
and their sum is applied (as ``index_add`` would), with hand-written gradients.

Both run in compiled loops that release the GIL. The walks are spread over ``threads``
numba threads (each walk depends on the seed and its own index only); the skip-gram runs
single-threaded (a step is too short for a barrier per step to pay, and its rows
depend on the previous step's).
Determinism: every random draw comes from a counter-based generator (splitmix64) keyed
by the seed and the walk (or pair) it belongs to, so a seed gives the same bytes with any
number of threads.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from ..splitmix import GOLDEN
from ..splitmix import mix as _mix
from ..splitmix import uniform as _uniform

LOG = logging.getLogger(__name__)


def walk_graph(edge_index: np.ndarray, edge_weight: np.ndarray | None, num_nodes: int) -> sp.csr_matrix:
    """CSR adjacency ``[N, N]`` (row = source) without self-loops; duplicate edges summed."""
    src, dst = np.asarray(edge_index[0]), np.asarray(edge_index[1])
    w = np.ones(src.shape[0]) if edge_weight is None else np.asarray(edge_weight, dtype=np.float64)
    keep = src != dst
    a = sp.csr_matrix((w[keep], (src[keep], dst[keep])), shape=(num_nodes, num_nodes))
    a.sum_duplicates()
    a.sort_indices()
    return a


# ------------------------------------------------------------------ walks
@numba.njit(cache=True, inline="always")
def _propose(v, indptr, indices, cum, u):
    """Neighbour of v drawn ∝ edge weight by inverse CDF (binary search in v's slice of ``cum``)."""
    lo, hi = indptr[v], indptr[v + 1] - 1
    target = cum[lo] + u * (cum[hi + 1] - cum[lo])
    while lo < hi:  # smallest slot s with cum[s + 1] > target
        mid = (lo + hi) // 2
        if cum[mid + 1] > target:
            hi = mid
        else:
            lo = mid + 1
    return indices[lo]


@numba.njit(cache=True, inline="always")
def _is_neighbour(t, x, indptr, indices):
    lo, hi = indptr[t], indptr[t + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if indices[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < indptr[t + 1] and indices[lo] == x


@numba.njit(cache=True, parallel=True, nogil=True)
def _walks_kernel(indptr, indices, cum, n, walk_length, n_walks, inv_p, inv_q, alpha_max, biased, seed, out):
    for r in numba.prange(n_walks):  # walk r depends on (seed, r) only
        state = _mix(seed ^ (np.uint64(r) * GOLDEN))
        cur = r % n
        prev = -1
        out[r, 0] = cur
        for step in range(1, walk_length):
            if indptr[cur + 1] == indptr[cur]:  # isolated node: stay
                out[r, step] = cur
                continue
            while True:
                state, u = _uniform(state)
                x = _propose(cur, indptr, indices, cum, u)
                if prev < 0 or not biased:
                    break
                if x == prev:
                    alpha = inv_p
                elif _is_neighbour(prev, x, indptr, indices):
                    alpha = 1.0
                else:
                    alpha = inv_q
                state, u = _uniform(state)
                if u * alpha_max < alpha:
                    break
            out[r, step] = x
            prev, cur = cur, x


def random_walks(adj: sp.csr_matrix, walk_length: int, walks_per_node: int, p: float = 1.0,
                 q: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Biased second-order random walks.

    adj: CSR ``[N, N]`` with positive weights and sorted indices. Returns int32
    ``[N * walks_per_node, walk_length]``; walk r starts at node ``r % N``. A walk that
    reaches a node without neighbours stays there (isolated nodes repeat themselves).
    ``rng`` gives the seed of the walks' counter-based generator.
    """
    rng = rng or np.random.default_rng(0)
    seed = np.uint64(rng.integers(0, 2**63))
    n = adj.shape[0]
    indptr, indices = adj.indptr.astype(np.int64), adj.indices.astype(np.int32)
    cum = np.concatenate([[0.0], np.cumsum(adj.data.astype(np.float64))])  # cum[s] = weight before slot s
    n_walks = n * walks_per_node
    walks = np.empty((n_walks, walk_length), dtype=np.int32)
    _walks_kernel(indptr, indices, cum, n, walk_length, n_walks, 1.0 / p, 1.0 / q, max(1.0 / p, 1.0, 1.0 / q),
                  not (p == 1.0 and q == 1.0), seed, walks)
    return walks


# ------------------------------------------------------------------ skip-gram
@numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _sgns_steps(walks, order, first_step, n_steps, walks_per_step, window, negatives, table, tab, lr0, done,
                total_steps, seed, loss_every, pool, pool_ctx, pool_grad, touched, rows, ec, neu):
    """Steps ``first_step .. first_step + n_steps - 1`` of mini-batch SGD; returns (sampled loss sum, samples).

    ``tab [N, 4, dim]`` holds per node its embedding, context vector and their step gradients
    (adjacent in memory: a node costs one page walk). Step s visits the walks
    ``order[s * walks_per_step: (s + 1) * walks_per_step]``; each walk position is a centre c
    whose pairs (c, o), o within ``window``, share ``negatives`` draws weighted by the number
    of pairs. Draws come from a pool of ``pool.size`` unigram^0.75 draws made for the step
    (their rows stay in cache). All gradients of a step are taken at the step's tables and
    summed per row, then applied. ``touched`` / ``rows``: flags and list of the nodes with
    gradients; ``ec``, ``neu``: ``[dim]`` scratch; ``done``: steps of earlier epochs.
    """
    length, dim, n_pool = walks.shape[1], tab.shape[2], pool.shape[0]
    one = np.float32(1.0)
    loss_sum, loss_n = 0.0, 0
    for step in range(first_step, first_step + n_steps):
        lr = np.float32(lr0 * max(0.01, 1.0 - (done + step + 1) / total_steps))
        state = _mix(seed ^ (np.uint64(step) * GOLDEN))
        for q in range(n_pool):  # the draws, then the rows: their (cache-missing) loads overlap
            state, u = _uniform(state)
            pool[q] = table[int(u * table.shape[0])]
        for q in range(n_pool):
            v = pool[q]
            for f in range(dim):
                pool_ctx[q, f] = tab[v, 1, f]
        pool_grad[:] = 0.0
        j = 0
        n_rows = 0
        for a in range(step * walks_per_step, min((step + 1) * walks_per_step, order.shape[0])):
            w = walks[order[a]]
            for i in range(length):
                c = w[i]
                if not touched[c]:
                    touched[c] = True
                    rows[n_rows] = c
                    n_rows += 1
                lo, hi = max(0, i - window), min(length, i + window + 1)
                n_ctx = hi - lo - 1
                if n_ctx < 1:
                    continue
                sample = j % loss_every == 0
                j += n_ctx
                for f in range(dim):
                    ec[f] = tab[c, 0, f]
                    neu[f] = 0.0
                for jp in range(lo, hi):
                    if jp == i:
                        continue
                    o = w[jp]
                    s = np.float32(0.0)
                    for f in range(dim):
                        s += ec[f] * tab[o, 1, f]
                    g = one / (one + np.exp(-s)) - one
                    if sample:
                        loss_sum += np.log1p(np.exp(-np.float64(s)))
                    for f in range(dim):
                        neu[f] += g * tab[o, 1, f]
                        tab[o, 3, f] += g * ec[f]
                for k in range(negatives):
                    state, u = _uniform(state)
                    q = int(u * n_pool)
                    s = np.float32(0.0)
                    for f in range(dim):
                        s += ec[f] * pool_ctx[q, f]
                    g = np.float32(n_ctx) / (one + np.exp(-s))
                    if sample:
                        loss_sum += n_ctx * np.log1p(np.exp(np.float64(s)))
                    for f in range(dim):
                        neu[f] += g * pool_ctx[q, f]
                        pool_grad[q, f] += g * ec[f]
                if sample:
                    loss_n += n_ctx
                for f in range(dim):
                    tab[c, 2, f] += neu[f]
        for r in range(n_rows):
            v = rows[r]
            touched[v] = False
            for f in range(dim):
                tab[v, 0, f] -= lr * tab[v, 2, f]
                tab[v, 1, f] -= lr * tab[v, 3, f]
                tab[v, 2, f] = 0.0
                tab[v, 3, f] = 0.0
        for q in range(n_pool):
            for f in range(dim):
                tab[pool[q], 1, f] -= lr * pool_grad[q, f]
    return loss_sum, loss_n


def pairs_per_walk(walk_length: int, window: int) -> int:
    """(centre, context) pairs of one walk: offsets 1..window, both directions."""
    return 2 * sum(max(0, walk_length - d) for d in range(1, window + 1))


def node2vec_embeddings(edge_index: np.ndarray, edge_weight: np.ndarray | None, num_nodes: int, *,
                        dim: int = 16, walk_length: int = 80, walks_per_node: int = 10,
                        p: float = 1.0, q: float = 1.0, window: int = 5, negatives: int = 5,
                        epochs: int = 1, batch_size: int = 16384, lr: float = 0.025, pool_size: int = 2048,
                        seed: int = 0, device=None, threads: int | None = None) -> np.ndarray:
    """Node embeddings float32 ``[N, dim]`` from walks + skip-gram with negative sampling.

    Each epoch draws fresh walks, visits them in a random order and takes one SGD
    step per chunk of walks holding about ``batch_size`` (centre, context) pairs; the
    learning rate decays linearly from ``lr`` to ``lr``/100 over training, as in word2vec.
    Negatives: a unigram^0.75 table of the walks' node counts, ``pool_size`` draws per step.
    Nodes are renumbered internally in reverse Cuthill–McKee order (graph neighbours
    get nearby rows, so a walk's rows share cache lines and pages); the result is in
    the caller's numbering. Runs on CPU (``device`` is accepted and ignored); the walks
    use ``threads`` numba threads (default: numba's current count; capped at numba's
    maximum). The result is the same bytes for any ``threads``.
    """
    threads = numba.get_num_threads() if threads is None else max(1, int(threads))
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return _node2vec(edge_index, edge_weight, num_nodes, dim, walk_length, walks_per_node, p, q, window,
                         negatives, epochs, batch_size, lr, pool_size, seed)
    finally:
        numba.set_num_threads(before)


def _node2vec(edge_index, edge_weight, num_nodes, dim, walk_length, walks_per_node, p, q, window, negatives,
              epochs, batch_size, lr, pool_size, seed):
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    rng = np.random.default_rng(seed)
    adj = walk_graph(edge_index, edge_weight, num_nodes)
    perm = reverse_cuthill_mckee(adj, symmetric_mode=True)  # internal row r is node perm[r]
    adj = adj[perm][:, perm].tocsr()
    adj.sort_indices()
    tab = np.zeros((num_nodes, 4, dim), dtype=np.float32)  # per node: embedding, context, their gradients
    tab[:, 0] = (rng.random((num_nodes, dim), dtype=np.float32) - 0.5) / dim
    ppw = pairs_per_walk(walk_length, window)
    walks_per_step = max(1, batch_size // max(1, ppw))
    n_walks = num_nodes * walks_per_node
    steps_per_epoch = (n_walks + walks_per_step - 1) // walks_per_step
    total_steps = max(1, epochs * steps_per_epoch)
    bufs = (np.empty(pool_size, np.int32), np.empty((pool_size, dim), np.float32),
            np.empty((pool_size, dim), np.float32), np.zeros(num_nodes, np.bool_), np.empty(num_nodes, np.int64),
            np.empty(dim, np.float32), np.empty(dim, np.float32))
    steps_per_call = max(1, 2**20 // max(1, walks_per_step * ppw))  # about a million pairs per compiled call
    for epoch in range(epochs):
        walks = random_walks(adj, walk_length, walks_per_node, p, q, rng)
        table = _unigram_table(walks, num_nodes)
        order = rng.permutation(n_walks).astype(np.int64)
        seed_neg = np.uint64(rng.integers(0, 2**63))
        total, n_loss = 0.0, 0
        bar = tqdm(total=steps_per_epoch, mininterval=10, leave=False, unit="step",
                   desc=f"node2vec epoch {epoch + 1}/{epochs}")
        for first in range(0, steps_per_epoch if ppw else 0, steps_per_call):
            n_steps = min(steps_per_call, steps_per_epoch - first)
            s, c = _sgns_steps(walks, order, first, n_steps, walks_per_step, window, negatives, table, tab, lr,
                               epoch * steps_per_epoch, total_steps, seed_neg, 16, *bufs)
            total += s
            n_loss += c
            bar.update(n_steps)
        bar.close()
        LOG.info("node2vec epoch %d/%d: %d walks, %d pairs, mean loss %.4f (every 16th pair)", epoch + 1, epochs,
                 n_walks, n_walks * ppw, total / max(1, n_loss))
    out = np.empty((num_nodes, dim), dtype=np.float32)
    out[perm] = tab[:, 0]
    return out


def _unigram_table(walks: np.ndarray, num_nodes: int, size: int = 2**20) -> np.ndarray:
    """Node ids int32 ``[size]`` in proportion to (visit count)^0.75: uniform draws from it are negatives."""
    freq = np.bincount(walks.ravel(), minlength=num_nodes).astype(np.float64) ** 0.75
    counts = np.floor(freq / freq.sum() * size).astype(np.int64)
    table = np.repeat(np.arange(num_nodes, dtype=np.int32), counts)
    if table.size == 0:
        table = np.arange(num_nodes, dtype=np.int32)
    return table


def edge_dot(emb: np.ndarray, edge_index: np.ndarray) -> np.ndarray:
    """⟨z_src, z_dst⟩ per row of ``edge_index``: float64 ``[E]``."""
    src, dst = np.asarray(edge_index[0]), np.asarray(edge_index[1])
    z = emb.astype(np.float64)
    return np.einsum("ed,ed->e", z[src], z[dst])
