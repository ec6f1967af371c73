"""Masked-count pretraining (cellgnn.pretrain): masking hides what is predicted, the loss falls, a
killed run resumes to the same weights, the rule's embedding and the graph stage's use of it."""
import copy
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellgnn.pretrain import (OBSM_KEY, MaskedCountEncoder, embed, fit_pretrain, load_embedding, make_batch,
                              masked_loss, run_pretrain)
from interrupt import kill_when_written

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"dim": 8, "n_latents": 4, "heads": 2, "batch_size": 64}


@pytest.fixture(scope="module")
def counts(sim):
    return sp.csr_matrix(sim.X, dtype=np.float32)[:300]


def _masked(b, i):
    """Gene ids masked in cell i of a training batch: hidden but with a non-zero count."""
    return torch.nonzero(b.hidden[i] & (b.counts[i] > 0)).view(-1).tolist()


def test_masked_values_never_reach_the_encoder(counts):
    """Same masks, the masked counts changed: every encoder input, the latents and the predictions are
    unchanged; only the scored counts (and so the loss) differ."""
    rows = np.arange(64)
    b1 = make_batch(counts, rows, 0.3, 1024, np.random.default_rng(5))
    changed = counts.copy().tolil()
    for i in range(len(rows)):
        masked = _masked(b1, i)
        assert masked and not set(b1.genes[i][~b1.pad[i]].tolist()) & set(masked)  # absent from the tokens
        for g in masked:
            changed[rows[i], g] = changed[rows[i], g] * 7 + 3
    b2 = make_batch(changed.tocsr(), rows, 0.3, 1024, np.random.default_rng(5))
    assert not torch.equal(b1.counts, b2.counts)
    for f in ("genes", "values", "pad", "lib", "hidden"):
        assert torch.equal(getattr(b1, f), getattr(b2, f)), f
    torch.manual_seed(0)
    model = MaskedCountEncoder(counts.shape[1], 8, 4, 2, 1).eval()
    with torch.no_grad():
        assert torch.equal(model.encode(b1.genes, b1.values, b1.pad), model.encode(b2.genes, b2.values, b2.pad))
        assert torch.equal(model(b1), model(b2))
        assert not torch.equal(masked_loss(model, b1), masked_loss(model, b2))


def test_changing_a_visible_count_changes_the_encoding(counts):
    """The control for the test above: the encoder does read the visible values."""
    rows = np.arange(8)
    b1 = make_batch(counts, rows, 0.3, 1024, np.random.default_rng(5))
    changed = counts.copy().tolil()
    g = int(b1.genes[0][0])
    changed[0, g] = changed[0, g] * 7 + 3
    b2 = make_batch(changed.tocsr(), rows, 0.3, 1024, np.random.default_rng(5))
    model = MaskedCountEncoder(counts.shape[1], 8, 4, 2, 1).eval()
    with torch.no_grad():
        assert not torch.equal(model.encode(b1.genes, b1.values, b1.pad)[0],
                               model.encode(b2.genes, b2.values, b2.pad)[0])


def test_mask_counts_and_max_genes(counts):
    rows = np.arange(50)
    nnz = np.diff(counts[rows].indptr)
    b = make_batch(counts, rows, 0.2, 40, np.random.default_rng(0))
    n_mask = np.array([len(_masked(b, i)) for i in range(50)])
    n_vis = (~b.pad).sum(1).numpy()
    assert (n_mask >= np.clip(np.rint(0.2 * nnz), 1, nnz - 1)).all()  # masked, plus those beyond max_genes
    np.testing.assert_array_equal(n_vis, np.minimum(nnz - np.clip(np.rint(0.2 * nnz), 1, nnz - 1), 40))
    np.testing.assert_array_equal(n_mask + n_vis, nnz)
    np.testing.assert_array_equal((~b.hidden).sum(1).numpy(), n_vis)
    full = make_batch(counts, rows, 0.2, 10_000, None)  # embedding: nothing masked, every gene visible
    assert full.hidden is None
    np.testing.assert_array_equal((~full.pad).sum(1).numpy(), nnz)
    np.testing.assert_allclose(full.lib.numpy(), np.asarray(counts[rows].sum(1)).ravel())


def test_loss_falls_on_a_small_dataset(counts):
    """The masked-count NLL on fixed masks falls well below the start, and below the trained model's own
    gene-level part (decoder weights zeroed: every cell predicted alike), so the cells' latents carry it."""
    res = fit_pretrain(counts, dict(SMALL, epochs=6, batch_size=32), seed=0)
    fixed = make_batch(counts, np.arange(300), 0.15, 1024, np.random.default_rng(123))
    fresh = fit_pretrain(counts, dict(SMALL, epochs=1, lr=1e-9), seed=0).model  # the starting point
    genes_only = copy.deepcopy(res.model)
    with torch.no_grad():
        genes_only.decoder.weight.zero_()
        before, after = float(masked_loss(fresh, fixed)), float(masked_loss(res.model, fixed))
        no_cells = float(masked_loss(genes_only, fixed))
    print(f"\nmasked-count NLL on fixed masks: start {before:.4f}, after 6 epochs {after:.4f}, "
          f"its decoder zeroed {no_cells:.4f}")
    assert after < before - 0.05, (before, after, res.history)
    assert after < no_cells - 0.001, (after, no_cells)
    assert res.history[-1]["loss"] < res.history[0]["loss"]


CHILD = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {src!r})
import scipy.sparse as sp
from cellgnn.pretrain import fit_pretrain
fit_pretrain(sp.load_npz({counts!r}), {cfg!r}, seed=0, resume={resume!r})
"""


def test_killed_pretraining_resumes_to_identical_weights(counts, tmp_path):
    cfg = dict(SMALL, epochs=6, checkpoint_every=2, batch_size=32)
    ref = fit_pretrain(counts, cfg, seed=0)
    path = tmp_path / "counts.npz"
    sp.save_npz(path, counts)
    ck = tmp_path / "resume.pt"
    code = CHILD.format(src=str(ROOT / "src"), counts=str(path), cfg=cfg, resume=str(ck))
    kill_when_written(code, ck, "pretraining")
    killed_at = torch.load(ck, weights_only=False)["epoch"]
    assert 0 < killed_at < cfg["epochs"] - 1
    resumed = fit_pretrain(counts, cfg, seed=0, resume=ck)
    assert resumed.resumed_from_epoch == killed_at + 1
    assert resumed.history == ref.history
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    np.testing.assert_array_equal(embed(resumed.model, counts), embed(ref.model, counts))


def test_rule_writes_the_embedding_and_the_graph_uses_it(pre, tmp_path):
    """run_pretrain → embedding.h5ad (obsm X_cellgnn_pretrain, the dataset's cells); the graph stage
    builds its kNN graph and node features from it when configured, and PCA otherwise."""
    from cellgnn.graph import build_graph
    from cellgnn.io import write_h5ad
    from sim_config import GRAPH_CFG

    adata = pre[0]
    path = tmp_path / "preprocessed.h5ad"
    write_h5ad(adata, path)
    out = tmp_path / "pretrain"
    run_pretrain(str(path), str(out / "embedding.h5ad"), str(out / "model.pt"), dict(SMALL, epochs=1), "cpu")
    assert sorted(p.name for p in out.iterdir()) == ["embedding.h5ad", "model.pt"]  # resume.pt removed
    emb = load_embedding(out / "embedding.h5ad", adata.obs_names)
    assert emb.shape == (adata.n_obs, 4 * 8) and np.isfinite(emb).all()

    base = build_graph(adata, dict(GRAPH_CFG), "cells", seed=0)
    on_emb = build_graph(adata, dict(GRAPH_CFG, features="pretrain"), "cells", seed=0, embedding=emb)
    both = build_graph(adata, dict(GRAPH_CFG, features="pretrain", node_features="pretrain"), "cells", seed=0,
                       embedding=emb)
    assert torch.equal(base["train_mask"], on_emb["train_mask"])  # the split does not depend on the features
    assert not torch.equal(base["edge_index"], on_emb["edge_index"])
    assert torch.equal(on_emb["edge_index"], both["edge_index"])
    assert torch.equal(base["x"], on_emb["x"]) and on_emb["genes"] == base["genes"]
    assert both["x"].shape == (adata.n_obs, 32) and both["genes"][0] == "pretrain_0"
    assert float(both["x"][both["train_mask"]].min()) == 0.0 and float(both["x"][both["train_mask"]].max()) == 1.0
    # a kNN graph on the embedding: each cell's neighbours are its nearest cells there
    from sklearn.neighbors import NearestNeighbors

    tr = np.flatnonzero(on_emb["train_mask"].numpy())
    _, nbr = NearestNeighbors(n_neighbors=GRAPH_CFG["k"] + 1).fit(emb[tr]).kneighbors(emb[tr[:1]])
    src = on_emb["edge_index"][0][on_emb["edge_index"][1] == int(tr[0])].numpy()
    assert set(tr[nbr[0][1:]].tolist()) <= set(src.tolist())


def test_workflow_runs_pretrain_only_when_asked(tmp_path):
    """Dry runs: the pretrain job and the graph's extra input appear with graph.features: pretrain only."""
    import yaml
    from test_workflow import TINY, snakemake

    base = yaml.safe_load(TINY.read_text())
    for features, expect in (("pca", False), ("pretrain", True)):
        cfg = dict(base, graph=dict(base["graph"], features=features))
        path = tmp_path / f"{features}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = snakemake("-n", "--cores", "1", "--configfile", str(path), "--directory", str(tmp_path / features),
                        "results/tiny/graph/cells.pt")
        out = res.stdout + res.stderr
        assert ("rule pretrain:" in out) is expect, out[-2000:]


def test_embedding_node_features_leave_out_gene_level_stages():
    """graph.node_features: pretrain: the explanations (gene attributions) and gat_activa (ACTIVA cells in gene
    space) are left out, with a note; graph.features: pretrain alone keeps them."""
    from cellgnn.config import resolve_run, validate_config
    from cellgnn.preflight import preflight

    def run(graph):
        cfg = validate_config({"graph": {"split_modes": ["cells"], **graph}, "train": {"models": ["logreg", "gat"]}})
        plan = preflight(cfg)
        return resolve_run(cfg, plan), plan.notes

    on_genes, _ = run({"features": "pretrain"})
    assert on_genes["explain"]["run"] and on_genes["gat_activa_units"] == ["cells"]
    on_emb, notes = run({"features": "pretrain", "node_features": "pretrain"})
    assert not on_emb["explain"]["run"] and on_emb["gat_activa_units"] == []
    assert any("graph.node_features: pretrain" in n for n in notes)
