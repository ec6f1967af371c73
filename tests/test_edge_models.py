import pytest
import torch
from edgefeat_fixtures import make_graph

from cellgnn.models.edge_models import GATEF, GCNEF, EdgeIndex, GATEdge, complete_self_loops
from cellgnn.models.set_transformer import ISAB, PMA, SAB, SetEncoder


def test_pma_is_permutation_invariant_and_ignores_padding():
    torch.manual_seed(0)
    pool = PMA(8, 2, num_seeds=1).eval()
    z = torch.randn(3, 5, 8)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(pool(z), pool(z[:, perm]), atol=1e-6)
    # padding: a 3-element set padded with garbage to 5 equals the unpadded set
    mask = torch.tensor([[True, True, True, False, False]] * 3)
    padded = torch.cat([z[:, :3], 100 * torch.randn(3, 2, 8)], 1)
    assert torch.allclose(pool(padded, mask), pool(z[:, :3]), atol=1e-5)
    # and it is not a trivial constant: different sets give different outputs
    assert not torch.allclose(pool(z)[0], pool(z)[1])


@pytest.mark.parametrize("block", ["sab", "isab"])
def test_set_encoder_permutation_invariant(block):
    torch.manual_seed(0)
    enc = SetEncoder(6, 8, 2, block=block, num_inds=4).eval()
    x = torch.randn(4, 7, 6)
    perm = torch.randperm(7)
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[0, 5:] = False
    assert torch.allclose(enc(x, mask), enc(x[:, perm], mask[:, perm]), atol=1e-5)
    assert enc(x).shape == (4, 8)


def test_sab_isab_are_equivariant():
    torch.manual_seed(0)
    x, perm = torch.randn(2, 6, 4), torch.randperm(6)
    for blk in (SAB(4, 8, 2).eval(), ISAB(4, 8, 2, 3).eval()):
        assert torch.allclose(blk(x)[:, perm], blk(x[:, perm]), atol=1e-5)


def test_incident_edge_sets_layout():
    ei = torch.tensor([[1, 2, 0, 0, 1], [0, 0, 1, 2, 1]])
    ea = torch.arange(5, dtype=torch.float32).view(5, 1)
    index = EdgeIndex(ei, 4)
    sets, mask = index.sets(ea, torch.arange(4))
    assert sets.shape == (4, 2, 1)
    assert sets[0, :, 0].tolist() == [0, 1] and sets[1, :, 0].tolist() == [2, 4]
    assert mask.tolist() == [[True, True], [True, True], [True, False], [False, False]]
    sub, m = index.sets(ea, torch.tensor([2, 1]))
    assert sub[:, :, 0].tolist() == [[3, 0], [2, 4]] and m.tolist() == [[True, False], [True, True]]


def test_complete_self_loops_keeps_existing_rows():
    ei = torch.tensor([[0, 1, 1], [1, 0, 1]])
    ea = torch.ones(3, 2)
    ei2, ea2 = complete_self_loops(ei, ea, 3)
    assert torch.equal(ei2[:, :3], ei) and ei2[:, 3:].tolist() == [[0, 2], [0, 2]]
    assert ea2[3:].abs().sum() == 0


@pytest.mark.parametrize("cls", [GATEF, GATEdge, GCNEF])
def test_edge_models_shapes_learn_and_need_edge_attr(cls):
    torch.manual_seed(0)
    g = make_graph(n=50)
    e = g["edge_index"].shape[1]
    ea = torch.randn(e, 5)
    model = cls(12, 2, edge_dim=5)
    out = model(g["x"], g["edge_index"], ea)
    assert out.shape == (50, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(g["x"], g["edge_index"], ea), g["y"])
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < first
    with pytest.raises(ValueError, match="needs edge features"):
        model(g["x"], g["edge_index"])


def test_gat_ef_degree_buckets_equal_one_bucket():
    torch.manual_seed(0)
    g = make_graph(n=50)
    ea = torch.randn(g["edge_index"].shape[1], 3)
    m = GATEF(12, 2, 3).eval()
    full = m(g["x"], g["edge_index"], ea)
    deg = torch.bincount(g["edge_index"][1], minlength=50)
    assert len(m.sets.buckets(deg)) == 1
    m.sets.max_scores = int(deg.max()) ** 2 * 3  # a few nodes per bucket
    buckets = m.sets.buckets(deg)
    assert len(buckets) >= 5 and sorted(torch.cat(buckets).tolist()) == list(range(50))
    assert torch.allclose(m(g["x"], g["edge_index"], ea), full, atol=1e-5)


def test_gat_ef_uses_edge_features():
    torch.manual_seed(0)
    g = make_graph(n=30)
    ea = torch.randn(g["edge_index"].shape[1], 3)
    m = GATEF(12, 2, 3).eval()
    assert not torch.allclose(m(g["x"], g["edge_index"], ea), m(g["x"], g["edge_index"], ea * 3))
