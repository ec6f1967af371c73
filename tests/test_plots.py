"""UMAP embedding and figure: seeded, and a figure refuses an embedding of other cells."""
import pandas as pd
import pytest

from cellgnn.errors import CellgnnInputError
from cellgnn.plots import plot_umap, umap_embedding
from sim_config import GRAPH_CFG


def _predictions(obs: pd.DataFrame) -> pd.DataFrame:
    split = ["test" if i % 3 == 0 else "train" for i in range(len(obs))]
    return pd.DataFrame({"cell_id": obs.index, "split": split, "true": obs["label"].astype(str),
                         "pred": obs["label"].astype(str)})


def test_umap_embedding_is_seeded(pre):
    adata, _ = pre
    a, b = umap_embedding(adata, seed=0, graph=GRAPH_CFG), umap_embedding(adata, seed=0, graph=GRAPH_CFG)
    assert list(a.columns) == ["umap1", "umap2"] and a.index.name == "cell_id"
    assert list(a.index) == list(adata.obs_names)
    pd.testing.assert_frame_equal(a, b)


def test_plot_umap_writes_and_checks_cells(pre, tmp_path):
    adata, _ = pre
    emb = umap_embedding(adata, seed=0, graph=GRAPH_CFG)
    obs = adata.obs
    png, pdf = tmp_path / "umap.png", tmp_path / "umap.pdf"
    plot_umap(obs, emb, _predictions(obs), str(png), str(pdf), "gat")
    assert png.stat().st_size > 10_000 and pdf.stat().st_size > 1_000
    with pytest.raises(CellgnnInputError, match="no UMAP coordinates.*rerun rule umap_embedding"):
        plot_umap(obs, emb.iloc[10:], _predictions(obs), str(tmp_path / "x.png"), None, "gat")
    assert not (tmp_path / "x.png").exists()


def test_umap_epochs_shrink_above_100k_cells():
    from cellgnn.plots import umap_epochs

    assert umap_epochs(5_000) is None and umap_epochs(100_000) is None
    assert umap_epochs(200_000) == 100 and umap_epochs(1_000_000) == 50 and umap_epochs(10_000_000) == 50
    assert umap_epochs(1_000_000, 300) == 300
