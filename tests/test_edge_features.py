import numpy as np
import pytest
import torch
from edgefeat_fixtures import make_graph, permute_edges

from cellgnn.edge_features import (GROUPS, check_edge_features, compute_edge_features, select_groups)
from cellgnn.edge_features.attention import AuxGAT, with_all_self_loops
from cellgnn.edge_features.curvature import forman_curvature, rescale_symmetric
from cellgnn.edge_features.node2vec import edge_dot, node2vec_embeddings, random_walks, walk_graph
from cellgnn.errors import CellgnnInputError

CFG = {"heads": 4, "aux_epochs": 5, "node2vec": {"dim": 8, "walk_length": 8, "walks_per_node": 2,
                                                  "window": 3, "epochs": 1, "batch_size": 512}}


def test_forman_curvature_matches_hand_computation():
    # path 0-1-2 with weights 1 and 4, both directions, plus loops
    ei = np.array([[0, 1, 1, 2, 0, 1, 2], [1, 0, 2, 1, 0, 1, 2]])
    w = np.array([1.0, 1.0, 4.0, 4.0, 1.0, 1.0, 1.0])
    c = forman_curvature(ei, w, 3)
    s = {0: 1.0, 1: 1.0 + 0.5, 2: 0.5}
    assert c[0] == pytest.approx(4 - 1 * (s[0] + s[1]))
    assert c[1] == pytest.approx(c[0])
    assert c[2] == pytest.approx(4 - 2 * (s[1] + s[2]))
    assert np.isnan(c[4:]).all()
    c_orig = forman_curvature(ei, w, 3, include_self_loops=True)  # the original code counted loops
    assert c_orig[0] == pytest.approx(4 - 1 * (s[0] + 1 + s[1] + 1))


def test_rescale_symmetric_range_and_constant():
    v = rescale_symmetric(np.array([3.0, 5.0, 4.0, np.nan]))
    assert v[:3].tolist() == [-1.0, 1.0, 0.0] and np.isnan(v[3])
    assert rescale_symmetric(np.array([2.0, 2.0])).tolist() == [0.0, 0.0]


def test_walks_stay_on_edges_and_respect_bias():
    g = make_graph(n=40)
    adj = walk_graph(g["edge_index"].numpy(), g["edge_weight"].numpy(), 40)
    w = random_walks(adj, 6, 3, p=1.0, q=1.0, rng=np.random.default_rng(0))
    assert w.shape == (120, 6) and (w[:, 0] == np.tile(np.arange(40), 3)).all()
    a = adj.toarray() > 0
    assert a[w[:, :-1].ravel(), w[:, 1:].ravel()].all()  # every step follows an edge, never a loop
    # p tiny: the walk returns to where it came from almost always
    back = random_walks(adj, 6, 3, p=1e-3, q=1.0, rng=np.random.default_rng(0))
    frac_back = (back[:, 2:] == back[:, :-2]).mean()
    frac_back_unbiased = (w[:, 2:] == w[:, :-2]).mean()
    assert frac_back > 0.95 > frac_back_unbiased


def test_node2vec_separates_communities():
    rng = np.random.default_rng(0)
    edges = set()
    for block in (range(0, 30), range(30, 60)):  # two dense communities joined by one bridge
        nodes = list(block)
        for a in nodes:
            for b in rng.choice(nodes, 6, replace=False):
                if a != b:
                    edges |= {(a, int(b)), (int(b), a)}
    edges |= {(0, 30), (30, 0)}
    ei = np.array(sorted(edges)).T
    emb = node2vec_embeddings(ei, None, 60, dim=8, walk_length=10, walks_per_node=10, window=3,
                              epochs=3, batch_size=2048, seed=0)
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = z @ z.T
    same = np.equal.outer(np.arange(60) < 30, np.arange(60) < 30)
    assert sim[same].mean() > sim[~same].mean() + 0.5
    again = node2vec_embeddings(ei, None, 60, dim=8, walk_length=10, walks_per_node=10, window=3,
                                epochs=3, batch_size=2048, seed=0)
    assert np.array_equal(emb, again)  # seeded
    assert edge_dot(emb, ei).shape == (ei.shape[1],)


def test_node2vec_same_bytes_for_any_thread_count():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 300, 2000)
    dst = (src + rng.integers(1, 20, 2000)) % 300
    ei = np.vstack([np.r_[src, dst], np.r_[dst, src]])
    w = rng.random(ei.shape[1]) + 0.1
    kw = dict(dim=8, walk_length=12, walks_per_node=3, p=0.5, q=2.0, window=3, batch_size=512, seed=3)
    one = node2vec_embeddings(ei, w, 300, threads=1, **kw)
    for t in (2, 3):
        assert np.array_equal(node2vec_embeddings(ei, w, 300, threads=t, **kw), one)


def test_contract_shapes_groups_and_ranges():
    g = make_graph()
    ef = compute_edge_features(g, CFG, seed=0)
    e = g["edge_index"].shape[1]
    assert ef["edge_attr"].shape == (e, 4 + 4 + 1 + 1) and ef["edge_attr"].dtype == torch.float32
    assert torch.equal(ef["edge_index"], g["edge_index"])
    assert ef["groups"] == {"celltype_attention": [0, 1, 2, 3], "donor_attention": [4, 5, 6, 7],
                            "curvature": [8], "node2vec": [9]}
    assert ef["columns"][8:] == ["curvature", "node2vec"]
    loop = g["edge_index"][0] == g["edge_index"][1]
    assert torch.equal(ef["self_loop"], loop)
    for c in (8, 9):  # rescaled over non-loop edges to exactly [-1, 1]; loops are exactly 0
        v = ef["edge_attr"][:, c]
        assert v[~loop].min() == pytest.approx(-1) and v[~loop].max() == pytest.approx(1)
        assert (v[loop] == 0).all()
    # attention of each head sums to one over each node's incoming edges (incl. its loop)
    sums = torch.zeros(g["x"].shape[0], 4).index_add_(0, g["edge_index"][1], ef["edge_attr"][:, :4])
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    check_edge_features(ef, g)
    check_edge_features(compute_edge_features(g, CFG, seed=0), g)
    assert torch.equal(compute_edge_features(g, CFG, seed=0)["edge_attr"], ef["edge_attr"])  # deterministic


def test_node2vec_beside_the_aux_gats_gives_the_same_column():
    g = make_graph()
    t1, t2, before = {}, {}, torch.get_num_threads()
    one = compute_edge_features(g, CFG, seed=0, threads=1, timings=t1)  # groups in turn
    two = compute_edge_features(g, CFG, seed=0, threads=2, timings=t2)  # node2vec in a background thread
    assert set(t1) == set(t2) == set(GROUPS)
    assert one["columns"] == two["columns"] and one["groups"] == two["groups"]
    assert torch.equal(two["edge_attr"][:, 8:], one["edge_attr"][:, 8:])  # curvature, node2vec: same bytes
    assert torch.allclose(two["edge_attr"][:, :8], one["edge_attr"][:, :8], atol=1e-5)
    assert torch.equal(compute_edge_features(g, CFG, seed=0, threads=2)["edge_attr"], two["edge_attr"])
    assert torch.get_num_threads() == before  # the aux GATs' thread count is restored


def test_permuting_edges_permutes_features_identically():
    g = make_graph()
    ef = compute_edge_features(g, CFG, seed=3)
    perm = torch.randperm(g["edge_index"].shape[1], generator=torch.Generator().manual_seed(1))
    ef_p = compute_edge_features(permute_edges(g, perm), CFG, seed=3)
    assert torch.allclose(ef_p["edge_attr"], ef["edge_attr"][perm], atol=1e-4)
    # and a wrong alignment would be caught by the test: the features are not permutation-constant
    assert not torch.allclose(ef["edge_attr"][perm], ef["edge_attr"], atol=1e-4)


def test_graph_without_self_loops_gets_loops_only_inside_aux_gat():
    g = make_graph(self_loops=False)
    e = g["edge_index"].shape[1]
    ef = compute_edge_features(g, {**CFG, "groups": ["celltype_attention"]}, seed=0)
    assert ef["edge_attr"].shape == (e, 4) and not ef["self_loop"].any()
    ei2 = with_all_self_loops(g["edge_index"], 60)
    assert torch.equal(ei2[:, :e], g["edge_index"]) and ei2.shape[1] == e + 60
    # attention to neighbours sums to < 1: the rest went to the appended self-loop
    sums = torch.zeros(60, 4).index_add_(0, g["edge_index"][1], ef["edge_attr"])
    assert (sums < 1 - 1e-4).all()


def test_aux_gat_returns_one_attention_row_per_edge():
    g = make_graph(n=20)
    m = AuxGAT(12, 3, heads=2)
    _, alpha = m(g["x"], g["edge_index"])
    assert alpha.shape == (g["edge_index"].shape[1], 2)


def test_select_groups_for_ablation():
    g = make_graph()
    ef = compute_edge_features(g, {**CFG, "groups": ["curvature", "node2vec", "donor_attention"]}, seed=0)
    sub = select_groups(ef, ["node2vec", "donor_attention"])
    assert sub["columns"] == ef["columns"][1:]
    assert torch.equal(sub["edge_attr"], ef["edge_attr"][:, 1:])
    assert sub["groups"] == {"node2vec": [0], "donor_attention": [1, 2, 3, 4]}
    with pytest.raises(CellgnnInputError):
        select_groups(ef, ["celltype_attention"])


def test_row_count_mismatch_is_a_clear_error():
    g = make_graph()
    ef = compute_edge_features(g, {**CFG, "groups": ["curvature"]}, seed=0)
    bad = dict(ef, edge_attr=ef["edge_attr"][:-1])
    with pytest.raises(CellgnnInputError, match="rows but the graph has"):
        check_edge_features(bad, g, file="ef.pt")
    perm = torch.arange(g["edge_index"].shape[1]).flip(0)
    with pytest.raises(CellgnnInputError, match="misaligned"):
        check_edge_features(dict(ef, edge_index=g["edge_index"][:, perm]), g)


@pytest.mark.parametrize("change, match", [
    (lambda g: g.update(cell_types=["unknown"]), "needs cell types"),
    (lambda g: g.pop("cell_type"), "needs cell types"),
    (lambda g: g.update(donor=torch.zeros(60, dtype=torch.long)), ">= 2 donors"),
])
def test_bad_graph_fails_before_training(change, match):
    g = make_graph()
    change(g)
    with pytest.raises(CellgnnInputError, match=match):
        compute_edge_features(g, CFG, seed=0)


def test_unknown_group_rejected():
    with pytest.raises(CellgnnInputError, match="groups"):
        compute_edge_features(make_graph(), {"groups": ["pagerank"]}, seed=0)
