"""``GATConv`` and ``GCNConv`` with sparse-matrix kernels: the same layers, parameters and outputs as PyG's.

PyG's layers build per-edge messages (``[E, heads, C]`` for GAT) and sum them with scatter
operations; on CPU those gathers and scatters dominate an epoch. :class:`FastGATConv` and
:class:`FastGCNConv` subclass them (same ``__init__``, parameter names, initialisation and
``state_dict``). ``FastGCNConv`` multiplies by the normalised adjacency (PyG's ``gcn_norm``)
held as a CSR matrix; ``FastGATConv`` computes the same function as ``GATConv`` with

- one matrix product for the message and residual projections (``lin`` and ``res`` stacked),
- the edge softmax (LeakyReLU, softmax over each target's incoming edges, attention dropout) in one
  compiled pass over the edges grouped by target (CSR order), forward and backward, for float32
  and float64 on CPU (on other devices, the same function as torch segment reductions),
- aggregation ``out_i = Σ_j α_ij Θx_j`` as one sparse (CSR) × dense product over a
  block-diagonal matrix holding every head, with a hand-written backward: the gradient of
  α is a sampled dense–dense product (SDDMM) on the graph's pattern, that of Θx a product
  with the transposed matrix.

Without attention dropout (or in eval mode) the outputs differ from PyG's only by float
rounding (summation order); attention dropout draws its mask with
:func:`cellgnn.models.dropout.dropout_mask` (cheaper than ``F.dropout``'s), so a seeded
training step drops other edges than PyG's layer would. The graph structure (edge
order, CSR pointers, normalised adjacency) is computed once per ``edge_index`` tensor and
cached while that tensor lives. Explainer edge masks (``set_masks``, as GNNExplainer sets them)
scale the attention-weighted messages as PyG's ``explain_message`` does. Anything else (bipartite
input, ``SparseTensor`` adjacency, hooks, self-loop filling with edge features, edge weights) takes PyG's
own path.
"""

from __future__ import annotations

import warnings
import weakref

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parameter import is_lazy
from torch_geometric.nn import GATConv, GCNConv, MessagePassing
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from .dropout import dropout_mask

_CACHE: dict = {}


def _index_dtype(largest: int) -> torch.dtype:
    """int32 for sparse indices up to ``largest`` when it fits, else int64."""
    return torch.int32 if largest < 2**31 - 1 else torch.int64


def _csr(crow: Tensor, col: Tensor, values: Tensor, n: int) -> Tensor:
    """CSR ``[n, n]`` without invariant checks (the indices are built here) or torch's beta notice.
    Indices are int32 when they fit: torch's CPU kernels convert int64 ones on every product."""
    index = _index_dtype(max(n, col.numel()))
    crow, col = crow.to(index), col.to(index)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


class _Structure:
    """Edges of one ``edge_index`` in PyG's order and grouped by target.

    ``pyg_ei [2, E]``: the edges PyG's layer would use (self-loops removed and appended
    when ``add_self_loops``); ``perm [E]``: PyG position of the k-th edge in target order;
    ``src, dst``: endpoints in target order; ``deg [N]``: in-degrees; ``perm_t``: target-order
    positions sorted by source (for the transposed matrix).
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, add_self_loops: bool):
        ei = edge_index
        if add_self_loops:
            keep = ei[0] != ei[1]
            loops = torch.arange(num_nodes, device=ei.device).repeat(2, 1)
            ei = torch.cat([ei[:, keep], loops], dim=1)
        self.pyg_ei = ei
        dst = ei[1]
        self.sorted = bool((dst[1:] >= dst[:-1]).all()) if dst.numel() > 1 else True
        self.perm = None if self.sorted else torch.sort(dst, stable=True).indices
        self.src = ei[0] if self.sorted else ei[0, self.perm]
        self.dst = dst if self.sorted else dst[self.perm]
        self.num_nodes, self.num_edges = num_nodes, ei.shape[1]
        self.deg = torch.bincount(self.dst, minlength=num_nodes)
        self.ptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=ei.device)
        self.ptr[1:] = torch.cumsum(self.deg, 0)
        self.perm_t = torch.sort(self.src, stable=True).indices
        self.ptr_t = torch.zeros(num_nodes + 1, dtype=torch.long, device=ei.device)
        self.ptr_t[1:] = torch.cumsum(torch.bincount(self.src, minlength=num_nodes), 0)
        self._blocks: dict = {}
        self._numpy_csr: tuple[np.ndarray, np.ndarray] | None = None

    def numpy_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR pointers ``[N + 1]`` and sources ``[E]`` (target order) as NumPy arrays (CPU structures)."""
        if self._numpy_csr is None:
            self._numpy_csr = (self.ptr.numpy(), self.src.contiguous().numpy())
        return self._numpy_csr

    def to_target_order(self, t: Tensor) -> Tensor:
        return t if self.perm is None else t[self.perm]

    def to_pyg_order(self, t: Tensor) -> Tensor:
        if self.perm is None:
            return t
        out = torch.empty_like(t)
        out[self.perm] = t
        return out

    def blocks(self, heads: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """CSR (crow, col) of the block-diagonal ``[heads·N, heads·N]`` matrix (head-major) and
        of its transpose; values of head k, edge e sit at ``k·E + e`` (target order) in the
        first and at ``k·E + perm_t[e]`` in the second."""
        if heads not in self._blocks:
            n, e = self.num_nodes, self.num_edges
            off_e = torch.arange(heads, device=self.ptr.device) * e
            off_n = torch.arange(heads, device=self.ptr.device) * n

            def block(ptr, col):
                crow = torch.cat([(ptr[:-1][None, :] + off_e[:, None]).reshape(-1),
                                  ptr.new_tensor([heads * e])])
                return crow, (col[None, :] + off_n[:, None]).reshape(-1)

            index = _index_dtype(heads * max(n, e))  # as _csr would convert them, once here
            self._blocks[heads] = tuple(t.to(index) for t in (*block(self.ptr, self.src),
                                                               *block(self.ptr_t, self.dst[self.perm_t])))
        return self._blocks[heads]


def cached(edge_index: Tensor, key: tuple, build):
    """``build()``, computed once per ``(edge_index, key)`` while that tensor lives unmodified.

    Full-batch training passes the same ``edge_index`` tensor every epoch, so per-graph
    structures (sort orders, CSR pointers, degree buckets) are built once.
    """
    full = (id(edge_index), edge_index._version, *key)
    hit = _CACHE.get(full)
    if hit is not None and hit[0]() is edge_index:
        return hit[1]
    value = build()
    _CACHE[full] = (weakref.ref(edge_index, lambda _ref, k=full, c=_CACHE: c.pop(k, None)), value)
    return value


def _structure(edge_index: Tensor, num_nodes: int, add_self_loops: bool) -> _Structure:
    return cached(edge_index, ("gat", num_nodes, add_self_loops),
                  lambda: _Structure(edge_index, num_nodes, add_self_loops))


class _Aggregate(torch.autograd.Function):
    """``out [N, H, C]``, ``out_i = Σ_{e: dst_e = i} α_e · h[src_e]`` per head.

    alpha: ``[H, E]`` (head-major) in target order; h: ``[N, H, C]``.
    """

    @staticmethod
    def forward(ctx, alpha: Tensor, h: Tensor, st: _Structure) -> Tensor:
        n, heads, c = h.shape
        crow, col, _, _ = st.blocks(heads)
        h_t = h.permute(1, 0, 2).reshape(heads * n, c)
        alpha = alpha.contiguous()
        a = _csr(crow, col, alpha.view(-1), heads * n)
        ctx.save_for_backward(alpha, h_t)
        ctx.st = st
        return (a @ h_t).view(heads, n, c).permute(1, 0, 2)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        alpha, h_t = ctx.saved_tensors
        st = ctx.st
        n, heads, c = grad_out.shape
        e = st.num_edges
        crow, col, crow_t, col_t = st.blocks(heads)
        g_t = grad_out.permute(1, 0, 2).reshape(heads * n, c)
        grad_alpha = grad_h = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(crow, col, alpha.new_zeros(heads * e), heads * n)
            pad = -c % 8  # the CPU kernel is far faster on widths that are multiples of 8; zeros add nothing
            g_p, h_p = (F.pad(g_t, (0, pad)), F.pad(h_t, (0, pad))) if pad else (g_t, h_t)
            grad_alpha = torch.sparse.sampled_addmm(pattern, g_p, h_p.t(), beta=0.0).values().view(heads, e)
        if ctx.needs_input_grad[1]:
            a_t = _csr(crow_t, col_t, alpha.index_select(1, st.perm_t).view(-1), heads * n)
            grad_h = (a_t @ g_t).view(heads, n, c).permute(1, 0, 2)
        return grad_alpha, grad_h, None


@numba.njit(cache=True, nogil=True)
def _edge_softmax_forward(ptr, src, a_src, a_dst, a_edge, keep, slope, alpha, out):  # pragma: no cover - compiled
    """Per target i (edges ``ptr[i]:ptr[i+1]``) and head h: ``alpha[h, e]`` = softmax over i's edges of
    LeakyReLU(a_src[src_e, h] + a_dst[i, h] (+ a_edge[e, h])), and ``out = alpha * keep`` (the dropout
    scale ``[E, H]``). An empty ``a_edge`` / ``keep`` (shape ``(0, 0)``) means none. Arithmetic in the
    arrays' precision, as torch's kernels."""
    heads = a_src.shape[1]
    has_edge, has_keep = a_edge.shape[0] > 0, keep.shape[0] > 0
    slope = alpha.dtype.type(slope)
    for i in range(ptr.shape[0] - 1):
        lo, hi = ptr[i], ptr[i + 1]
        for h in range(heads):
            top = alpha.dtype.type(-np.inf)
            for k in range(lo, hi):
                z = a_src[src[k], h] + a_dst[i, h]
                if has_edge:
                    z += a_edge[k, h]
                z = z if z >= 0 else z * slope
                alpha[h, k] = z
                top = max(top, z)
            total = alpha.dtype.type(0.0)
            for k in range(lo, hi):
                v = np.exp(alpha[h, k] - top)
                alpha[h, k] = v
                total += v
            total += alpha.dtype.type(1e-16)
            for k in range(lo, hi):
                v = alpha[h, k] / total
                alpha[h, k] = v
                out[h, k] = v * keep[k, h] if has_keep else v


@numba.njit(cache=True, nogil=True)
def _edge_softmax_backward(ptr, src, a_src, a_dst, a_edge, keep, slope, alpha, grad,
                           d_src, d_dst, d_edge):  # pragma: no cover - compiled
    """Gradients of :func:`_edge_softmax_forward` for ``grad [H, E]`` of ``out``: adds into ``d_src``,
    ``d_dst`` ``[N, H]`` (zeros on entry), writes ``d_edge [E, H]`` when there is ``a_edge``."""
    heads = a_src.shape[1]
    has_edge, has_keep = a_edge.shape[0] > 0, keep.shape[0] > 0
    slope = alpha.dtype.type(slope)
    for i in range(ptr.shape[0] - 1):
        lo, hi = ptr[i], ptr[i + 1]
        for h in range(heads):
            dot = alpha.dtype.type(0.0)
            for k in range(lo, hi):
                g = grad[h, k] * keep[k, h] if has_keep else grad[h, k]
                dot += alpha[h, k] * g
            acc = alpha.dtype.type(0.0)
            for k in range(lo, hi):
                g = grad[h, k] * keep[k, h] if has_keep else grad[h, k]
                dz = alpha[h, k] * (g - dot)
                z = a_src[src[k], h] + a_dst[i, h]
                if has_edge:
                    z += a_edge[k, h]
                if z < 0:
                    dz *= slope
                acc += dz
                d_src[src[k], h] += dz
                if has_edge:
                    d_edge[k, h] = dz
            d_dst[i, h] += acc


class _EdgeSoftmax(torch.autograd.Function):
    """Attention ``[H, E]`` (head-major, target order) from ``a_src``, ``a_dst`` ``[N, H]``, ``a_edge``
    ``[E, H]`` (target order) or None, dropout scale ``keep [E, H]`` or None: the compiled kernels above."""

    @staticmethod
    def forward(ctx, a_src: Tensor, a_dst: Tensor, a_edge: Tensor | None, keep: Tensor | None, st: _Structure,
                slope: float) -> Tensor:
        none = a_src.new_empty(0, 0)
        a_src, a_dst = a_src.detach().contiguous(), a_dst.detach().contiguous()
        a_edge = none if a_edge is None else a_edge.detach().contiguous()
        keep = none if keep is None else keep.contiguous()
        alpha = a_src.new_empty(a_src.shape[1], st.num_edges)
        out = alpha if keep.numel() == 0 else torch.empty_like(alpha)
        ptr, src = st.numpy_csr()
        _edge_softmax_forward(ptr, src, a_src.numpy(), a_dst.numpy(), a_edge.numpy(), keep.numpy(), slope,
                              alpha.numpy(), out.numpy())
        ctx.save_for_backward(a_src, a_dst, a_edge, keep, alpha)
        ctx.st, ctx.slope = st, slope
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        a_src, a_dst, a_edge, keep, alpha = ctx.saved_tensors
        d_src, d_dst, d_edge = torch.zeros_like(a_src), torch.zeros_like(a_dst), torch.empty_like(a_edge)
        ptr, src = ctx.st.numpy_csr()
        _edge_softmax_backward(ptr, src, a_src.numpy(), a_dst.numpy(), a_edge.numpy(), keep.numpy(), ctx.slope,
                               alpha.numpy(), grad.contiguous().numpy(), d_src.numpy(), d_dst.numpy(),
                               d_edge.numpy())
        return d_src, d_dst, (d_edge if a_edge.numel() else None), None, None, None


def _segment(src: Tensor, reduce: str, st: _Structure) -> Tensor:
    return torch.segment_reduce(src, reduce, lengths=st.deg, axis=0, unsafe=True)


class FastGATConv(GATConv):
    """PyG ``GATConv`` (same arguments and parameters) computed with sparse-matrix kernels.

    ``forward(x [N, F], edge_index [2, E], edge_attr [E, D] | None)``; see the module docstring
    for which inputs take PyG's own path.
    """

    # PyG compiles ``propagate`` per class on first use and keeps the uncompiled one for
    # explainers; without these, a subclass created after a GATConv would inherit GATConv's
    # compiled version as its "uncompiled" one and ignore explainer edge masks
    propagate = MessagePassing.propagate
    edge_updater = MessagePassing.edge_updater

    def _pyg_path(self, x, edge_index, edge_attr, size) -> bool:
        return (not isinstance(x, Tensor) or not isinstance(edge_index, Tensor) or edge_index.is_sparse
                or edge_index.layout != torch.strided or size is not None
                or (getattr(self, "explain", False) and self._edge_mask is None) or edge_index.shape[1] == 0 or (self.add_self_loops and edge_attr is not None)
                or self.lin is None or bool(self._propagate_forward_pre_hooks) or bool(self._propagate_forward_hooks)
                or bool(self._edge_update_forward_pre_hooks) or bool(self._edge_update_forward_hooks))

    def _explainer_mask(self, st: _Structure) -> Tensor:
        """An explainer's edge mask ``[E', 1]`` in target order, as PyG's ``explain_message`` applies it
        to the messages: sigmoid when asked, and 1 on the self-loops the layer adds."""
        mask = self._edge_mask.sigmoid() if self._apply_sigmoid else self._edge_mask
        if mask.numel() != st.num_edges:
            mask = torch.cat([mask[self._loop_mask], mask.new_ones(st.num_nodes)])
        return st.to_target_order(mask).unsqueeze(1)

    def _stackable(self) -> bool:
        """Message and residual maps are bias-free linear maps of x: one product computes both."""
        lin, res = self.lin, self.res
        return (res is not None and hasattr(res, "weight") and getattr(res, "bias", None) is None
                and getattr(lin, "bias", None) is None and not is_lazy(lin.weight) and not is_lazy(res.weight))

    def _edge_softmax(self, a_src, a_dst, a_edge, keep, st: _Structure) -> Tensor:
        """:class:`_EdgeSoftmax` in torch operations (GPU): segment reductions over target order."""
        alpha = a_src.index_select(0, st.src) + a_dst.index_select(0, st.dst)  # [E, H], target order
        if a_edge is not None:
            alpha = alpha + a_edge
        alpha = F.leaky_relu(alpha, self.negative_slope)
        top = _segment(alpha.detach(), "max", st).repeat_interleave(st.deg, 0)
        alpha = (alpha - top).exp()
        alpha = alpha / (_segment(alpha, "sum", st).repeat_interleave(st.deg, 0) + 1e-16)
        return (alpha if keep is None else alpha * keep).t()

    def forward(self, x, edge_index, edge_attr=None, size=None, return_attention_weights=None):
        if self._pyg_path(x, edge_index, edge_attr, size):
            return super().forward(x, edge_index, edge_attr, size, return_attention_weights)
        heads, c, n = self.heads, self.out_channels, x.shape[0]
        st = _structure(edge_index, n, self.add_self_loops)
        res = None
        if self._stackable():
            both = x @ torch.cat([self.lin.weight, self.res.weight], 0).t()
            h, res = both[:, :heads * c], both[:, heads * c:]
        else:
            h = self.lin(x)
            if self.res is not None:
                res = self.res(x)
        h = h.reshape(n, heads, c)
        a_src = (h * self.att_src).sum(-1)
        a_dst = (h * self.att_dst).sum(-1)
        a_edge = None
        if edge_attr is not None and self.lin_edge is not None:
            ea = edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr
            a_edge = st.to_target_order((self.lin_edge(ea).view(-1, heads, c) * self.att_edge).sum(-1))
        keep = (dropout_mask((st.num_edges, heads), self.dropout, h.dtype, h.device)
                if self.training and self.dropout > 0 else None)
        if h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64):
            alpha = _EdgeSoftmax.apply(a_src, a_dst, a_edge, keep, st, float(self.negative_slope))  # [H, E]
        else:
            alpha = self._edge_softmax(a_src, a_dst, a_edge, keep, st)
        masked = alpha * self._explainer_mask(st).view(1, -1) if getattr(self, "explain", False) else alpha
        out = _Aggregate.apply(masked, h, st)
        out = out.reshape(n, heads * c) if self.concat else out.mean(dim=1)
        if res is not None:
            out = out + res
        if self.bias is not None:
            out = out + self.bias
        if return_attention_weights:
            return out, (st.pyg_ei, st.to_pyg_order(alpha.t()))
        return out


class _SpMM(torch.autograd.Function):
    """``a @ h`` for a constant CSR matrix ``a`` (its transpose ``a_t`` gives the backward)."""

    @staticmethod
    def forward(ctx, h: Tensor, a: Tensor, a_t: Tensor) -> Tensor:
        ctx.a_t = a_t
        return a @ h

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return ctx.a_t @ grad_out, None, None


def _gcn_matrices(edge_index: Tensor, num_nodes: int, conv: GCNConv, dtype) -> tuple[Tensor, Tensor]:
    """PyG's normalised adjacency (``gcn_norm``) as CSR ``[N, N]`` (row = target) and its transpose."""
    ei, w = gcn_norm(edge_index, None, num_nodes, conv.improved, conv.add_self_loops, conv.flow, dtype)

    def csr(rows, cols):
        order = torch.sort(rows, stable=True).indices
        crow = torch.zeros(num_nodes + 1, dtype=torch.long, device=ei.device)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=num_nodes), 0)
        return _csr(crow, cols[order], w[order], num_nodes)

    return csr(ei[1], ei[0]), csr(ei[0], ei[1])


class FastGCNConv(GCNConv):
    """PyG ``GCNConv`` (same arguments and parameters) as a CSR matrix product.

    ``forward(x [N, F], edge_index [2, E], edge_weight=None)``: ``Â (x Θ) + b`` with Â the
    normalised adjacency of ``gcn_norm`` (self-loops added, symmetric normalisation), built
    once per ``edge_index`` tensor. Edge weights, ``SparseTensor`` input, ``normalize=False``,
    ``flow='target_to_source'``, explainer masks and hooks take PyG's path.
    """

    propagate = MessagePassing.propagate  # see FastGATConv

    def forward(self, x, edge_index, edge_weight=None):
        if (edge_weight is not None or not isinstance(x, Tensor) or not isinstance(edge_index, Tensor)
                or edge_index.layout != torch.strided or not self.normalize or self.flow != "source_to_target"
                or getattr(self, "explain", False) or bool(self._propagate_forward_pre_hooks)
                or bool(self._propagate_forward_hooks)):
            return super().forward(x, edge_index, edge_weight)
        n = x.shape[0]
        a, a_t = cached(edge_index, ("gcn", n, self.improved, self.add_self_loops, x.dtype),
                        lambda: _gcn_matrices(edge_index, n, self, x.dtype))
        out = _SpMM.apply(self.lin(x), a, a_t)
        return out if self.bias is None else out + self.bias
