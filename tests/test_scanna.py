"""scANNA-style attention classifier: attention is a distribution over genes, it ranks a
planted marker first, every read-out variant has the documented shape and meaning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellgnn.models import build_model
from cellgnn.models.scanna import ScANNA, salient_genes


def toy(n=300, g=40, seed=0):
    """Three classes over ``g`` genes in [0, 1]; class 1 raises gene 7, class 2 raises gene 23."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    x = rng.uniform(0, 0.4, (y.size, g)).astype(np.float32)
    x[y == 1, 7] += 0.5
    x[y == 2, 23] += 0.5
    return torch.from_numpy(x), torch.from_numpy(y).long()


def fit(model, x, y, epochs=150, lr=0.05):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-3)
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("params", [{}, {"context_rank": 4}, {"n_blocks": 2, "hidden": 16, "ff_dim": 16}])
def test_attention_sums_to_one_per_cell(params):
    torch.manual_seed(1)
    model = ScANNA(50, 3, **params)
    for p in model.parameters():  # away from the uniform initialization
        torch.nn.init.normal_(p, std=0.5)
    x = torch.rand(17, 50) * 3
    att = model.gene_attention(x)
    assert att.shape == (17, 50) and bool((att >= 0).all())
    torch.testing.assert_close(att.sum(1), torch.ones(17))
    assert att.std(1).min() > 0  # not uniform: the rows really are computed per cell
    assert model(x, torch.zeros(2, 0, dtype=torch.long)).shape == (17, 3)


def test_uniform_attention_at_initialization_passes_x_through():
    model = ScANNA(30, 2, dropout=0.0, context_rank=3)
    x = torch.rand(5, 30)
    torch.testing.assert_close(model.gene_attention(x), torch.full((5, 30), 1 / 30))
    torch.testing.assert_close(model(x), model.readout(x))


def test_attention_ranks_the_planted_marker_first():
    x, y = toy()
    model = fit(build_model("scanna", x.shape[1], 3), x, y)
    acc = float((model(x).argmax(1) == y).float().mean())
    assert acc > 0.95
    for ref in ("rest", 0):
        s = salient_genes(model, x, y, reference=ref)
        assert int(s[1].argmax()) == 7 and int(s[2].argmax()) == 23, ref
    # the cells of class 1 attend to gene 7 more than the other classes' cells do
    att = model.gene_attention(x).detach()
    assert att[y == 1, 7].mean() > 2 * att[y != 1, 7].mean()


def test_salient_genes_reference_and_absent_class():
    x, y = toy(n=90)
    model = fit(ScANNA(x.shape[1], 4), x, y, epochs=5)
    raw = salient_genes(model, x, y, reference=None, correct_only=False)
    att = model.gene_attention(x).detach()
    torch.testing.assert_close(raw[1], att[y == 1].mean(0))
    vs0 = salient_genes(model, x, y, reference=0, correct_only=False)
    torch.testing.assert_close(vs0[2], att[y == 2].mean(0) - att[y == 0].mean(0))
    torch.testing.assert_close(vs0[0], att[y == 0].mean(0) - att[y != 0].mean(0))  # the reference itself: vs the rest
    assert bool((vs0[3] == 0).all())  # class 3 has no cells
