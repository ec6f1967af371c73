"""Benchmark: ms per full-batch training epoch of the graph models on the default graph, PyG vs ours.

    python bench/gat_epoch.py [--graph results/demo/graph/cells.pt] [--threads 1] [--epochs 20] [--rounds 5]

One epoch is what ``cellgnn.train._fit_torch`` does per epoch with ``batching: full``: a
training step on the training block (forward, class-weighted cross-entropy, backward, Adam
step) and a no-grad forward of the validation block for early stopping. Models: ``gat`` and
``gat_ef`` with the default hyperparameters (residual layers), ``gcn``, ``gat_edge``, ``gcn_ef``.

"before" is a copy of the same model (same parameters) running the code as it was before
the speed-up, kept in this script: PyG's ``GATConv`` / ``GCNConv`` (the layers
:class:`cellgnn.models.fast_conv.FastGATConv` / ``FastGCNConv`` subclass) and the previous forward of the
Set Transformer blocks and of the edge-set branch (structure rebuilt every call). Both run in this process, in alternating blocks of
``--epochs`` epochs for ``--rounds`` rounds, so a busy machine slows both alike; the median
block gives ms/epoch. The script also checks that both give the same losses (same seed: same
dropout masks) over the first epochs. ``gat_ef`` / ``gat_edge`` get 18 random edge-feature
columns when the graph has no edge-feature file beside it (timing does not depend on values).

The graph is the default config's graph stage output (run ``snakemake --cores 1
results/demo/graph/cells.pt`` first, or pass ``--graph``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def blocks_of(graph, edge_attr):
    """(train x, edge_index, edge_attr, y), (val ...) as ``_fit_torch`` builds them in inductive mode."""
    import torch
    from torch_geometric.utils import subgraph

    out = []
    for key in ("train_mask", "val_mask"):
        nodes = graph[key].nonzero().view(-1)
        ei, ea = subgraph(nodes, graph["edge_index"], edge_attr, relabel_nodes=True, num_nodes=graph["x"].shape[0])
        if graph["graph_mode"] != "inductive":
            nodes = torch.arange(graph["x"].shape[0])
            ei, ea = graph["edge_index"], edge_attr
        out.append((graph["x"][nodes], ei, ea, graph["y"][nodes]))
    return out


# ------------------------------------------------------------------ the implementation before
def _mab_forward_before(self, x, y, mask=None):
    """MAB.forward as it was: three projections, masked softmax written out."""
    import math

    import torch

    b, nq, nk, h = x.shape[0], x.shape[1], y.shape[1], self.num_heads
    q = self.fc_q(x)
    k, v = self.fc_k(y), self.fc_v(y)
    dh = self.dim_v // h
    qh = q.view(b, nq, h, dh).transpose(1, 2)
    kh = k.view(b, nk, h, dh).transpose(1, 2)
    vh = v.view(b, nk, h, dh).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(self.dim_v)
    if mask is not None:
        keep = mask[:, None, None, :]
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        att = torch.softmax(scores, dim=-1) * keep
    else:
        att = torch.softmax(scores, dim=-1)
    o = qh + att @ vh
    o = o.transpose(1, 2).reshape(b, nq, self.dim_v)
    o = self.ln0(o)
    return self.ln1(o + torch.relu(self.fc_o(o)))


def _sets_before(index, edge_attr, nodes):
    import torch

    deg = index.deg[nodes]
    d_max = max(1, int(deg.max())) if nodes.numel() else 1
    row = torch.repeat_interleave(torch.arange(nodes.numel(), device=deg.device), deg)
    start = torch.cumsum(deg, 0) - deg
    pos = torch.arange(row.numel(), device=deg.device) - start[row]
    rows = index.order[index.ptr[nodes][row] + pos]
    sets = edge_attr.new_zeros(nodes.numel(), d_max, edge_attr.shape[1])
    mask = torch.zeros(nodes.numel(), d_max, dtype=torch.bool, device=deg.device)
    sets[row, pos] = edge_attr[rows]
    mask[row, pos] = True
    return sets, mask


def _set_branch_forward_before(self, edge_index, edge_attr, num_nodes):
    """EdgeSetBranch.forward as it was: edge grouping and degree buckets rebuilt every call."""
    import torch

    from cellgnn.models.edge_models import EdgeIndex

    index = EdgeIndex(edge_index, num_nodes)
    groups = self.buckets(index.deg)
    res = [self.encoder(*_sets_before(index, edge_attr, nodes)) for nodes in groups]
    inverse = torch.empty(num_nodes, dtype=torch.long, device=edge_index.device)
    inverse[torch.cat(groups)] = torch.arange(num_nodes, device=edge_index.device)
    return torch.cat(res, 0)[inverse]


def as_before(model):
    """A copy of ``model`` (same parameters) running the code before this change: PyG's GATConv
    and GCNConv, and the previous forward of the Set Transformer blocks and the set branch."""
    import types

    from torch_geometric.nn import GATConv, GCNConv

    from cellgnn.models.edge_models import EdgeSetBranch
    from cellgnn.models.fast_conv import FastGATConv, FastGCNConv
    from cellgnn.models.set_transformer import MAB

    old = copy.deepcopy(model)
    for m in old.modules():
        if isinstance(m, FastGATConv):
            m.__class__ = GATConv
        elif isinstance(m, FastGCNConv):
            m.__class__ = GCNConv
        elif isinstance(m, MAB):
            m.forward = types.MethodType(_mab_forward_before, m)
        elif isinstance(m, EdgeSetBranch):
            m.forward = types.MethodType(_set_branch_forward_before, m)
    return old


def run_epochs(model, opt, loss_fn, train, val, n):
    import torch

    losses = []
    for _ in range(n):
        model.train()
        opt.zero_grad()
        loss = loss_fn(model(train[0], train[1], train[2]), train[3])
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            losses.append((float(loss), float(loss_fn(model(val[0], val[1], val[2]), val[3]))))
    return losses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", type=Path, default=ROOT / "results" / "demo" / "graph" / "cells.pt")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=20, help="epochs per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="alternating blocks per implementation")
    ap.add_argument("--models", default="gat,gat_ef,gcn,gat_edge,gcn_ef")
    args = ap.parse_args(argv)

    import torch

    from cellgnn.models import MODELS, build_model
    from cellgnn.train import OPTIMIZERS, model_params

    torch.set_num_threads(args.threads)
    if not args.graph.exists():
        sys.exit(f"{args.graph} not found: run `snakemake --cores 1 {args.graph.relative_to(ROOT)}` first")
    graph = torch.load(args.graph, weights_only=False)
    n_cls = len(graph["classes"])
    ef_path = args.graph.parent.parent / "edge_features" / args.graph.name
    e = graph["edge_index"].shape[1]
    edge_attr = (torch.load(ef_path, weights_only=False)["edge_attr"] if ef_path.exists()
                 else torch.rand(e, 18, generator=torch.Generator().manual_seed(0)))
    print(f"graph {args.graph}: {graph['x'].shape[0]} cells x {graph['x'].shape[1]} genes, {e} edges, "
          f"{graph['graph_mode']}; edge features {'from ' + str(ef_path) if ef_path.exists() else 'random'}; "
          f"{args.threads} torch thread(s); {args.rounds} alternating blocks of {args.epochs} epochs", flush=True)
    rows = []
    for name in args.models.split(","):
        spec = MODELS[name]
        ea = edge_attr if spec.edge_features else None
        train, val = blocks_of(graph, ea)
        counts = torch.bincount(graph["y"][graph["train_mask"]], minlength=n_cls).float()
        loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / counts.clamp(min=1) / n_cls)
        params = model_params(name, {})  # the schema's defaults
        optim = {k: params.pop(k) for k in ("optimizer", "lr", "weight_decay")}
        torch.manual_seed(0)
        new = build_model(name, graph["x"].shape[1], n_cls, edge_dim=ea.shape[1] if ea is not None else 0, **params)
        old = as_before(new)
        impl = {}
        for tag, model in (("before", old), ("after", new)):
            opt = OPTIMIZERS[optim["optimizer"]](model.parameters(), lr=float(optim["lr"]),
                                                 weight_decay=float(optim["weight_decay"]))
            impl[tag] = (model, opt)
        # same seed, same dropout masks: the first epochs' losses agree up to float rounding
        torch.manual_seed(1)
        l_old = run_epochs(*impl["before"], loss_fn, train, val, 3)
        torch.manual_seed(1)
        l_new = run_epochs(*impl["after"], loss_fn, train, val, 3)
        diff = max(abs(a - b) for pa, pb in zip(l_old, l_new) for a, b in zip(pa, pb))
        times = {"before": [], "after": []}
        for _ in range(args.rounds):
            for tag in ("before", "after"):
                t = time.perf_counter()
                run_epochs(*impl[tag], loss_fn, train, val, args.epochs)
                times[tag].append((time.perf_counter() - t) / args.epochs * 1000)
        before, after = statistics.median(times["before"]), statistics.median(times["after"])
        rows.append((name, before, after, diff))
        print(f"{name:<9} before {before:7.1f} ms/epoch   after {after:7.1f} ms/epoch   "
              f"ratio {before / after:5.2f}x   max |loss difference| over 3 epochs {diff:.1e}", flush=True)
    print("\nmodel     before ms/epoch  after ms/epoch  speed-up")
    for name, b, a, _ in rows:
        print(f"{name:<9} {b:15.1f} {a:15.1f} {b / a:9.2f}x")


if __name__ == "__main__":
    main()
