"""FastGATConv / FastGCNConv compute what PyG's GATConv / GCNConv compute (values and gradients)."""

import pytest
import torch
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.nn import GATConv, GCNConv

from cellgnn.models.fast_conv import FastGATConv, FastGCNConv
from cellgnn.models.set_transformer import MAB


def _graph(n=120, k=5, loops=True, shuffle=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.stack([torch.randint(0, n, (n * k,), generator=g), torch.arange(n).repeat_interleave(k)])
    if loops:
        ei = torch.cat([ei, torch.arange(n).repeat(2, 1)], 1)
    if shuffle:
        ei = ei[:, torch.randperm(ei.shape[1], generator=g)]
    return ei


def _pair(cls_pyg, cls_fast, *args, **kw):
    torch.manual_seed(3)
    a = cls_pyg(*args, **kw)
    torch.manual_seed(3)
    b = cls_fast(*args, **kw)
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    return a, b


def _run(conv, x, seed, *args, **kw):
    x = x.detach().clone().requires_grad_(True)
    conv.zero_grad()
    torch.manual_seed(seed)
    out = conv(x, *args, **kw)
    main = out[0] if isinstance(out, tuple) else out
    main.backward(torch.linspace(-1, 1, main.numel()).view_as(main))
    return out, x.grad, [p.grad.clone() for p in conv.parameters()]


@pytest.mark.parametrize("kw", [dict(heads=4, dropout=0.4), dict(heads=4, dropout=0.4, residual=True),
                                dict(heads=3, concat=False, dropout=0.4, residual=True),
                                dict(heads=2, add_self_loops=False, edge_dim=3, residual=True, dropout=0.3)])
@pytest.mark.parametrize("loops,shuffle", [(True, False), (False, True)])
@pytest.mark.parametrize("train", [True, False])
def test_fast_gat_matches_pyg(kw, loops, shuffle, train):
    """Same values and gradients as PyG's layer in training mode without attention dropout (the
    masks are drawn differently) and in eval mode; with dropout, a seed fixes the masks."""
    ei = _graph(loops=loops or not kw.get("add_self_loops", True), shuffle=shuffle)
    ea = torch.randn(ei.shape[1], 3) if "edge_dim" in kw else None
    a, b = _pair(GATConv, FastGATConv, 10, 7, **kw)
    a.train(train)
    b.train(train)
    p_drop = a.dropout
    a.dropout = b.dropout = 0.0
    x = torch.randn(120, 10)
    (oa, (eia, aa)), ga, pa = _run(a, x, 5, ei, ea, return_attention_weights=True)
    (ob, (eib, ab)), gb, pb = _run(b, x, 5, ei, ea, return_attention_weights=True)
    assert torch.equal(eia, eib)  # same edges, same order
    assert torch.allclose(oa, ob, atol=1e-5) and torch.allclose(aa, ab, atol=1e-6)
    assert torch.allclose(ga, gb, atol=1e-5)
    assert all(torch.allclose(p, q, atol=1e-4, rtol=1e-4) for p, q in zip(pa, pb))
    b.dropout = p_drop
    if train and p_drop:
        first = _run(b, x, 5, ei, ea)[0]
        assert torch.equal(first, _run(b, x, 5, ei, ea)[0])
        assert not torch.allclose(_run(b, x, 6, ei, ea)[0], first, atol=1e-3)


def test_fast_gcn_matches_pyg():
    ei = _graph(loops=False, shuffle=True)
    a, b = _pair(GCNConv, FastGCNConv, 10, 6)
    x = torch.randn(120, 10)
    oa, ga, pa = _run(a, x, 0, ei)
    ob, gb, pb = _run(b, x, 0, ei)
    assert torch.allclose(oa, ob, atol=1e-6) and torch.allclose(ga, gb, atol=1e-6)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(pa, pb))


def test_structure_cache_follows_the_edge_index():
    a, b = _pair(GATConv, FastGATConv, 10, 4, heads=2)
    a.eval()
    b.eval()
    x = torch.randn(120, 10)
    ei = _graph()
    assert torch.allclose(a(x, ei), b(x, ei), atol=1e-5)
    ei[0] = ei[0].flip(0)  # in place: the cached structure of the old edges must not be reused
    assert torch.allclose(a(x, ei), b(x, ei), atol=1e-5)
    other = _graph(seed=1)
    assert torch.allclose(a(x, other), b(x, other), atol=1e-5)


@pytest.mark.parametrize("pyg,fast,kw", [(GATConv, FastGATConv, {"heads": 2}),
                                         (GATConv, FastGATConv, {"heads": 2, "add_self_loops": False}),
                                         (GCNConv, FastGCNConv, {})])
def test_explainer_masks_give_pyg_outputs_and_gradients(pyg, fast, kw):
    a, b = _pair(pyg, fast, 10, 4, **kw)
    a.eval()
    b.eval()
    x, ei = torch.randn(120, 10), _graph()
    full = b(x, ei)
    masks = []
    for conv in (a, b):
        mask = torch.linspace(-2, 2, ei.shape[1]).requires_grad_(True)
        set_masks(conv, mask, ei, apply_sigmoid=True)  # as GNNExplainer does
        out = conv(x, ei)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        masks.append((out.detach(), mask.grad))
        clear_masks(conv)
    (oa, ga), (ob, gb) = masks
    assert torch.allclose(oa, ob, atol=1e-5) and torch.allclose(ga, gb, atol=1e-5)
    assert not torch.allclose(full, ob, atol=1e-3)
    assert torch.allclose(b(x, ei), full)


def test_mab_fused_attention_matches_masked_softmax_and_empty_sets():
    torch.manual_seed(0)
    mab = MAB(6, 6, 8, 2).eval()
    x = torch.randn(5, 7, 6)
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True
    ref = _manual_mab(mab, x, mask)
    assert torch.allclose(mab(x, x, mask), ref, atol=1e-5)
    mask[2] = False  # an empty set attends to nothing (output = projected queries, normalised)
    assert torch.allclose(mab(x, x, mask), _manual_mab(mab, x, mask), atol=1e-5)


def _manual_mab(mab, x, mask):
    b, n, h = x.shape[0], x.shape[1], mab.num_heads
    q, k, v = mab.fc_q(x), mab.fc_k(x), mab.fc_v(x)
    qh, kh, vh = (t.view(b, n, h, -1).transpose(1, 2) for t in (q, k, v))
    s = qh @ kh.transpose(-1, -2) / mab.dim_v ** 0.5
    keep = mask[:, None, None, :]
    att = torch.softmax(s.masked_fill(~keep, torch.finfo(s.dtype).min), -1) * keep
    o = mab.ln0((qh + att @ vh).transpose(1, 2).reshape(b, n, -1))
    return mab.ln1(o + torch.relu(mab.fc_o(o)))


@pytest.mark.parametrize("p", [0.1, 0.4, 0.5, 0.9])
def test_dropout_mask_drops_p_and_keeps_the_mean(p):
    from cellgnn.models.dropout import Dropout, dropout, dropout_mask

    torch.manual_seed(0)
    m = dropout_mask((1000, 997), p, torch.float32, torch.device("cpu"))
    values = torch.unique(m).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - p))]
    assert abs(float((m == 0).float().mean()) - p) < 0.003  # 1e6 draws: sd 0.0005
    assert abs(float(m.mean()) - 1.0) < 0.01
    x = torch.randn(50, 30, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, p, True)
    y.sum().backward()
    torch.manual_seed(1)
    assert torch.equal(x.grad, dropout_mask(x.shape, p, x.dtype, x.device))
    assert dropout(x, p, False) is x and torch.equal(Dropout(p).eval()(x), x)


@pytest.mark.parametrize("with_edge,with_dropout", [(False, False), (True, True), (False, True)])
def test_compiled_edge_softmax_matches_torch_ops(with_edge, with_dropout):
    """The compiled edge softmax (CPU) against the same function in torch operations (the GPU path):
    values and gradients, with dropout scales and edge terms; and torch's numerical gradient check."""
    from cellgnn.models.dropout import dropout_mask
    from cellgnn.models.fast_conv import _EdgeSoftmax, _Structure

    n, heads = 60, 3
    st = _Structure(_graph(n=n, k=4, shuffle=True), n, add_self_loops=True)
    conv = FastGATConv(5, 2, heads=heads, negative_slope=0.2)
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(n, heads, generator=g, dtype=torch.float64).requires_grad_(True) for _ in range(2)]
    if with_edge:
        inputs.append(torch.randn(st.num_edges, heads, generator=g, dtype=torch.float64).requires_grad_(True))
    keep = dropout_mask((st.num_edges, heads), 0.4, torch.float64, torch.device("cpu")) if with_dropout else None

    def compiled(a_src, a_dst, a_edge=None):
        return _EdgeSoftmax.apply(a_src, a_dst, a_edge, keep, st, 0.2)

    def reference(a_src, a_dst, a_edge=None):
        return conv._edge_softmax(a_src, a_dst, a_edge, keep, st)

    upstream = torch.randn(heads, st.num_edges, generator=g, dtype=torch.float64)
    results = []
    for fn in (compiled, reference):
        out = fn(*inputs)
        grads = torch.autograd.grad(out, inputs, upstream)
        results.append((out.detach(), grads))
    (out_c, grads_c), (out_r, grads_r) = results
    assert out_c.shape == (heads, st.num_edges)
    assert torch.allclose(out_c, out_r, atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads_c, grads_r))
    assert torch.autograd.gradcheck(compiled, tuple(inputs))
