"""node2vec without compiled extensions: biased random walks in NumPy, skip-gram in torch.

Walks follow Grover & Leskovec (2016): from node v reached from t, the next node x
is drawn with probability ∝ w_vx · α(t, x), α = 1/p if x == t, 1 if x is a neighbour
of t, 1/q otherwise. All walkers advance together (one vectorized step per walk
position); the bias is applied by rejection sampling (proposal ∝ w_vx, accepted
with α / max α), as torch-cluster does. Self-loops are dropped from the walk graph.

The skip-gram uses negative sampling (Mikolov et al. 2013): for every (centre,
context) pair within ``window`` positions, ``negatives`` nodes drawn from the
unigram^0.75 distribution of the walks; plain SGD with word2vec's linear learning-rate
decay and hand-written gradients (no autograd: a step costs about one forward pass).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

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


def random_walks(adj: sp.csr_matrix, walk_length: int, walks_per_node: int, p: float = 1.0,
                 q: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Biased second-order random walks.

    adj: CSR ``[N, N]`` with positive weights and sorted indices. Returns int32
    ``[N * walks_per_node, walk_length]``; walk r starts at node ``r % N``. A walk that
    reaches a node without neighbours stays there (isolated nodes repeat themselves).
    """
    rng = rng or np.random.default_rng(0)
    n = adj.shape[0]
    indptr, indices = adj.indptr.astype(np.int64), adj.indices.astype(np.int64)
    weights = adj.data.astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(weights)])  # cum[k] = sum of weights before slot k
    deg = np.diff(indptr)
    row_lo, row_w = cum[indptr[:-1]], cum[indptr[1:]] - cum[indptr[:-1]]
    # sorted (src * n + dst) keys to test "x is a neighbour of t"
    rows = np.repeat(np.arange(n, dtype=np.int64), deg)
    keys = rows * n + indices
    biased = not (p == 1.0 and q == 1.0)
    alpha_max = max(1.0 / p, 1.0, 1.0 / q)

    def propose(v: np.ndarray) -> np.ndarray:
        u = rng.random(v.shape[0])
        target = row_lo[v] + u * row_w[v]
        slot = np.searchsorted(cum, target, side="right") - 1
        slot = np.clip(slot, indptr[v], indptr[v + 1] - 1)
        return indices[slot]

    starts = np.tile(np.arange(n, dtype=np.int64), walks_per_node)
    walks = np.empty((starts.shape[0], walk_length), dtype=np.int32)
    walks[:, 0] = starts
    cur, prev = starts.copy(), None
    for step in range(1, walk_length):
        nxt = cur.copy()
        movable = np.flatnonzero(deg[cur] > 0)
        if prev is None or not biased:
            nxt[movable] = propose(cur[movable])
        else:
            todo = movable
            while todo.size:
                v, t = cur[todo], prev[todo]
                x = propose(v)
                is_back = x == t
                pos = np.searchsorted(keys, t * n + x)
                is_nb = (pos < keys.size) & (keys[np.minimum(pos, keys.size - 1)] == t * n + x)
                alpha = np.where(is_back, 1.0 / p, np.where(is_nb, 1.0, 1.0 / q))
                ok = rng.random(todo.size) * alpha_max < alpha
                nxt[todo[ok]] = x[ok]
                todo = todo[~ok]
        walks[:, step] = nxt
        prev, cur = cur, nxt
    return walks


class SkipGram:
    """Skip-gram with negative sampling trained by plain SGD with hand-written gradients.

    Tables ``emb`` (node embeddings) and ``ctx`` (context vectors), float32 ``[N, dim]``.
    As in word2vec, each pair's gradient is added to the rows it touches
    (``index_add_``, deterministic on CPU); no autograd, so a step costs about one forward.
    """

    def __init__(self, num_nodes: int, dim: int, generator: torch.Generator, device="cpu"):
        self.emb = ((torch.rand(num_nodes, dim, generator=generator) - 0.5) / dim).to(device)
        self.ctx = torch.zeros(num_nodes, dim, device=device)

    def step(self, centre: torch.Tensor, context: torch.Tensor, negative: torch.Tensor, lr: float) -> float:
        """One SGD step on pairs ``centre, context [B]`` with ``negative [B, K]``; returns the mean loss."""
        zc, zo, zn = self.emb[centre], self.ctx[context], self.ctx[negative]
        pos = (zc * zo).sum(-1)                                  # [B]
        neg = torch.bmm(zn, zc.unsqueeze(-1)).squeeze(-1)         # [B, K]
        g_pos = torch.sigmoid(pos) - 1.0                          # d loss / d pos
        g_neg = torch.sigmoid(neg)                                # d loss / d neg
        grad_c = g_pos.unsqueeze(-1) * zo + torch.bmm(g_neg.unsqueeze(1), zn).squeeze(1)
        self.emb.index_add_(0, centre, grad_c, alpha=-lr)
        self.ctx.index_add_(0, context, g_pos.unsqueeze(-1) * zc, alpha=-lr)
        self.ctx.index_add_(0, negative.reshape(-1), (g_neg.unsqueeze(-1) * zc.unsqueeze(1)).reshape(-1, zc.shape[1]),
                            alpha=-lr)
        loss = -(torch.nn.functional.logsigmoid(pos) + torch.nn.functional.logsigmoid(-neg).sum(-1))
        return float(loss.mean())


def skipgram_pairs(walks: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """All (centre, context) pairs at offsets 1..window in both directions; int64 ``[P]`` each."""
    c, o = [], []
    for d in range(1, min(window, walks.shape[1] - 1) + 1):
        a, b = walks[:, :-d].ravel(), walks[:, d:].ravel()
        c += [a, b]
        o += [b, a]
    if not c:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(c).astype(np.int64), np.concatenate(o).astype(np.int64)


def node2vec_embeddings(edge_index: np.ndarray, edge_weight: np.ndarray | None, num_nodes: int, *,
                        dim: int = 16, walk_length: int = 80, walks_per_node: int = 10,
                        p: float = 1.0, q: float = 1.0, window: int = 5, negatives: int = 5,
                        epochs: int = 1, batch_size: int = 16384, lr: float = 0.025,
                        seed: int = 0, device: torch.device | str = "cpu") -> np.ndarray:
    """Node embeddings float32 ``[N, dim]`` from walks + skip-gram with negative sampling.

    Each epoch draws fresh walks, visits them in a random order and takes one SGD
    step per chunk of walks holding about ``batch_size`` (centre, context) pairs
    (memory O(walks), not O(pairs)); the learning rate decays linearly from ``lr``
    to ``lr``/100 over training, as in word2vec. Negatives come from a unigram^0.75
    table of the walks' node counts.
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    adj = walk_graph(edge_index, edge_weight, num_nodes)
    model = SkipGram(num_nodes, dim, gen, device)
    pairs_per_walk = max(1, 2 * sum(max(0, walk_length - d) for d in range(1, window + 1)))
    walks_per_step = max(1, batch_size // pairs_per_walk)
    n_walks = num_nodes * walks_per_node
    total_steps = max(1, epochs * ((n_walks + walks_per_step - 1) // walks_per_step))
    done = 0
    for epoch in range(epochs):
        walks = random_walks(adj, walk_length, walks_per_node, p, q, rng)
        table = _unigram_table(walks, num_nodes)
        order = torch.randperm(walks.shape[0], generator=gen).numpy()
        total, n_pairs = 0.0, 0
        for start in tqdm(range(0, order.shape[0], walks_per_step), mininterval=10, leave=False,
                          desc=f"node2vec epoch {epoch + 1}/{epochs}"):
            centre, context = skipgram_pairs(walks[order[start:start + walks_per_step]], window)
            done += 1
            if centre.size == 0:
                continue
            neg = table[torch.randint(0, table.numel(), (centre.shape[0], negatives), generator=gen)]
            step_lr = lr * max(0.01, 1.0 - done / total_steps)
            loss = model.step(torch.as_tensor(centre, device=device), torch.as_tensor(context, device=device),
                              neg.to(device), step_lr)
            total += loss * centre.shape[0]
            n_pairs += centre.shape[0]
        LOG.info("node2vec epoch %d/%d: %d walks, %d pairs, mean loss %.4f", epoch + 1, epochs,
                 walks.shape[0], n_pairs, total / max(1, n_pairs))
    return model.emb.cpu().numpy().astype(np.float32)


def _unigram_table(walks: np.ndarray, num_nodes: int, size: int = 2**20) -> torch.Tensor:
    """Node ids int64 ``[size]`` in proportion to (visit count)^0.75: uniform draws from it are negatives."""
    freq = np.bincount(walks.ravel(), minlength=num_nodes).astype(np.float64) ** 0.75
    counts = np.floor(freq / freq.sum() * size).astype(np.int64)
    table = np.repeat(np.arange(num_nodes, dtype=np.int64), counts)
    if table.size == 0:
        table = np.arange(num_nodes, dtype=np.int64)
    return torch.from_numpy(table)


def edge_dot(emb: np.ndarray, edge_index: np.ndarray) -> np.ndarray:
    """⟨z_src, z_dst⟩ per row of ``edge_index``: float64 ``[E]``."""
    src, dst = np.asarray(edge_index[0]), np.asarray(edge_index[1])
    z = emb.astype(np.float64)
    return np.einsum("ed,ed->e", z[src], z[dst])
