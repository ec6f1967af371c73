"""Bad input, in one place: every case ends with a CellgnnInputError naming the file (where
there is one), the field and the fix, before any output is written.

Cases (issue 8): corrupt or truncated .h5ad; NaN or infinite values; negative or non-integer
counts; duplicated gene or cell names; missing label / donor / cell-type columns; a label with
one class; a split without some class; config with unknown keys, wrong types, out-of-range
values; more threads or GPUs than exist; a checkpoint from another dataset.
"""
import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import yaml

from cellgnn.config import validate_config
from cellgnn.data import load_dataset
from cellgnn.errors import CellgnnInputError
from cellgnn.graph import load_graph, save_graph, split_cells
from cellgnn.io import read_h5ad, torch_save, write_h5ad
from cellgnn.preprocess import preprocess
from test_workflow import TINY, snakemake

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*names are not unique:UserWarning")
PRE = dict(expect_counts=True, min_genes=1, min_cells=1, max_mito_fraction=1.0, target_sum=1e4,
           transform="log1p", hvg=None, n_pcs=5)
KEYS = {"label": "label", "donor": "donor", "cell_type": "cell_type"}


def clear(err: pytest.ExceptionInfo, *, file=None, field=None) -> str:
    """The message names the file and field and says how to fix it."""
    msg = str(err.value)
    assert "Fix:" in msg and len(msg.split("Fix:")[1].strip()) > 10, msg
    if file is not None:
        assert str(file) in msg, msg
    if field is not None:
        assert field in msg, msg
    return msg


def nothing_written(folder: Path) -> None:
    assert not folder.exists() or list(folder.rglob("*")) == [], list(folder.rglob("*"))


def counts_adata(n=60, g=30, seed=0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(2.0, (n, g)).astype(np.float32)))
    a.obs_names = [f"c{i}" for i in range(n)]
    a.var_names = [f"G{i}" for i in range(g)]
    a.obs["label"] = pd.Categorical(["a", "b", "c"] * (n // 3))
    a.obs["donor"] = pd.Categorical([f"d{i % 4}" for i in range(n)])
    a.obs["cell_type"] = pd.Categorical(["t1", "t2"] * (n // 2))
    return a


def data_stage(path: Path, out: Path, keys=KEYS) -> None:
    """What rule data does: read the file, standardize obs, write raw.h5ad."""
    cfg = {"source": "file", "file": {"path": str(path), "format": "auto", "layer": None}, "keys": keys}
    write_h5ad(load_dataset(cfg), out / "raw.h5ad")


# ---------------------------------------------------------------- data files
def _corrupt(p):
    p.write_bytes(np.random.default_rng(0).bytes(4096))


def _truncated(p):
    counts_adata().write_h5ad(p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p):
    p.write_bytes(b"")


def _with_x(mutate):
    def make(p):
        a = counts_adata()
        X = a.X.toarray()
        mutate(X)
        a.X = sp.csr_matrix(X)
        a.write_h5ad(p)
    return make


def _nan(X):
    X[3, 4] = np.nan


def _inf(X):
    X[3, 4] = np.inf


def _negative(X):
    X[3, 4] = -2


def _fraction(X):
    X[:] = np.log1p(X)


def _with_obs(edit):
    def make(p):
        a = counts_adata()
        edit(a)
        a.write_h5ad(p)
    return make


def _dup_genes(a):
    a.var_names = ["G0"] * 2 + list(a.var_names[2:])


def _dup_cells(a):
    a.obs_names = ["c0"] * 2 + list(a.obs_names[2:])


def _one_class(a):
    a.obs["label"] = pd.Categorical(["a"] * a.n_obs)


def _drop(col):
    return lambda a: a.obs.drop(columns=[col], inplace=True)


DATA_CASES = {
    "corrupt_h5ad": (_corrupt, "truncated or not an AnnData", None),
    "truncated_h5ad": (_truncated, "truncated or not an AnnData", None),
    "empty_h5ad": (_empty, "truncated or not an AnnData", None),
    "nan_counts": (_with_x(_nan), "NaN or infinite", "'X'"),
    "infinite_counts": (_with_x(_inf), "NaN or infinite", "'X'"),
    "negative_counts": (_with_x(_negative), "negative", "'X'"),
    "non_integer_counts": (_with_x(_fraction), "not integers", "'X'"),
    "duplicated_cells": (_with_obs(_dup_cells), "duplicated cell names", "obs_names"),
    "missing_label_column": (_with_obs(_drop("label")), "column 'label' not found", "data.keys.label"),
    "missing_donor_column": (_with_obs(_drop("donor")), "column 'donor' not found", "data.keys.donor"),
    "missing_cell_type_column": (_with_obs(_drop("cell_type")), "column 'cell_type' not found",
                                 "data.keys.cell_type"),
    "one_class_label": (_with_obs(_one_class), "single class", "obs.label"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_file(case, tmp_path):
    make, problem, field = DATA_CASES[case]
    path = tmp_path / "in" / "study.h5ad"
    path.parent.mkdir()
    make(path)
    out = tmp_path / "results"
    with pytest.raises(CellgnnInputError) as e:
        data_stage(path, out)
    assert problem in clear(e, file=path, field=field)
    nothing_written(out)


def test_duplicated_gene_names_refused_when_asked(tmp_path):
    """10x-style repeated symbols are made unique with a warning by default; `duplicates: error` refuses;
    AnnData built in memory with repeated names is refused by the data stage."""
    from cellgnn.data import standardize_obs
    from cellgnn.data.readers import read_counts

    path = tmp_path / "dup.h5ad"
    _with_obs(_dup_genes)(path)
    with pytest.raises(CellgnnInputError) as e:
        read_counts(path, duplicates="error")
    assert "occur more than once" in clear(e, file=path, field="var_names")
    a = counts_adata()
    a.var_names = ["G0"] * 2 + list(a.var_names[2:])
    with pytest.raises(CellgnnInputError) as e:
        standardize_obs(a, KEYS, where="mine.h5ad")
    assert "duplicated gene names" in clear(e, file="mine.h5ad", field="var_names")


def test_truncated_stage_output_is_named(tmp_path):
    """A raw.h5ad cut short (disk full, killed copy) read by the next stage."""
    path = tmp_path / "raw.h5ad"
    _truncated(path)
    with pytest.raises(CellgnnInputError) as e:
        read_h5ad(path, "rule data")
    assert "rerun rule data" in clear(e, file=path)


@pytest.mark.parametrize("mutate,problem", [
    (_nan, "NaN or infinite"), (_inf, "NaN or infinite"), (_negative, "expected raw UMI counts"),
    (_fraction, "expected raw UMI counts"),
])
def test_preprocess_refuses_bad_values(mutate, problem, tmp_path):
    a = counts_adata()
    X = a.X.toarray()
    mutate(X)
    a.X = X  # dense, as an .h5ad written by another tool may hold
    out = tmp_path / "results"
    with pytest.raises(CellgnnInputError) as e:
        adata, qc = preprocess(a, dict(PRE), source="raw.h5ad")
        write_h5ad(adata, out / "preprocessed.h5ad")
    assert problem in clear(e, file="raw.h5ad", field="X")
    nothing_written(out)


def test_nan_refused_even_without_counts(tmp_path):
    a = counts_adata()
    X = np.log1p(a.X.toarray())
    X[0, 0] = np.nan
    a.X = X
    with pytest.raises(CellgnnInputError) as e:
        preprocess(a, dict(PRE, expect_counts=False), source="raw.h5ad")
    assert "NaN" in clear(e, file="raw.h5ad", field="X")


# ---------------------------------------------------------------- splits
def test_split_without_some_class():
    """A class seen in one donor only cannot be in both train and test when donors are held out."""
    obs = pd.DataFrame({"label": ["a", "b"] * 30 + ["rare"] * 6,
                        "donor": [f"d{(i // 2) % 4}" for i in range(60)] + ["d0"] * 6})
    with pytest.raises(CellgnnInputError) as e:
        split_cells(obs, "donors", {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    assert "class 'rare' occurs in one donor only" in clear(e, field="graph.split_modes")


def test_class_too_small_for_three_splits():
    obs = pd.DataFrame({"label": ["a"] * 30 + ["b"] * 2, "donor": ["d"] * 32})
    with pytest.raises(CellgnnInputError) as e:
        split_cells(obs, "cells", {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    assert "too few" in clear(e, field="obs.label")


def test_training_refuses_graph_with_test_split_lacking_a_class(graphs, tmp_path):
    from cellgnn.train import run_train

    g = dict(graphs["cells"])
    y = g["y"]
    moved = g["test_mask"] & (y == 0)  # move every test cell of class 0 to train
    g["test_mask"], g["train_mask"] = g["test_mask"] & ~moved, g["train_mask"] | moved
    path = tmp_path / "cells.pt"
    save_graph(g, path)
    out = tmp_path / "models"
    with pytest.raises(CellgnnInputError) as e:
        run_train(str(path), "mlp", [0], {"max_epochs": 2, "patience": 2}, "cpu", _outputs(out))
    assert g["classes"][0] in clear(e, file=path, field="test_mask")
    nothing_written(out)


# ---------------------------------------------------------------- config
def _default():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


CONFIG_CASES = {
    "unknown_top_level_key": (lambda c: c.update(datset="x"), "(top level)", "datset"),
    "unknown_nested_key": (lambda c: c["train"].update(max_epoch=3), "train", "max_epoch"),
    "wrong_type": (lambda c: c["graph"].update(k="ten"), "graph.k", "not of type"),
    "wrong_type_list": (lambda c: c["train"].update(seeds=0), "train.seeds", "not of type"),
    "k_below_one": (lambda c: c["graph"].update(k=0), "graph.k", "less than the minimum"),
    "fraction_out_of_range": (lambda c: c["graph"]["fractions"].update(train=1.5), "graph.fractions.train",
                              "maximum"),
    "fractions_not_summing_to_one": (lambda c: c["graph"].update(fractions={"train": 0.6, "val": 0.2,
                                                                            "test": 0.3}),
                                     "graph.fractions", "sum to 1.1"),
    "unknown_enum_value": (lambda c: c.update(device="tpu"), "device", "tpu"),
    "unknown_model": (lambda c: c["train"].update(models=["gat", "gta"]), "train.models", "gta"),
    "checkpoint_every_zero": (lambda c: c["train"].update(checkpoint_every=0), "train.checkpoint_every",
                              "minimum"),
    "mask_fraction_zero": (lambda c: c.update(pretrain={"mask_fraction": 0}), "pretrain.mask_fraction", "minimum"),
    "mask_fraction_one": (lambda c: c.update(pretrain={"mask_fraction": 1.0}), "pretrain.mask_fraction", "maximum"),
    "unknown_graph_features": (lambda c: c["graph"].update(features="umap"), "graph.features", "umap"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config(case):
    mutate, field, problem = CONFIG_CASES[case]
    cfg = copy.deepcopy(_default())
    mutate(cfg)
    with pytest.raises(CellgnnInputError) as e:
        validate_config(cfg, source="my.yaml")
    assert problem in clear(e, file="my.yaml", field=field)


# ---------------------------------------------------------------- resources
def test_more_threads_than_cpus(tmp_path):
    """Through run_rule, as a rule script: one-line exit naming threads and the fix; main never runs."""
    from cellgnn.utils import available_cpus, run_rule

    ran = []
    smk = SimpleNamespace(log=[str(tmp_path / "logs" / "job.log")], threads=available_cpus() + 1)
    stderr = sys.stderr
    try:
        with pytest.raises(SystemExit) as e:
            run_rule(lambda s: ran.append(1), smk)
    finally:
        sys.stderr = stderr
    assert e.value.code == 1 and not ran
    lines = [ln for ln in (tmp_path / "logs" / "job.log").read_text().splitlines() if "threads asked for" in ln]
    assert len(lines) == 1, lines  # once, as the failure report finds it
    assert lines[0].startswith("cellgnn: ") and "field 'threads'" in lines[0] and "--cores" in lines[0]


def test_more_gpus_than_visible():
    from cellgnn.utils import get_device

    with pytest.raises(CellgnnInputError) as e:
        get_device("cuda", gpus=torch.cuda.device_count() + 1)
    assert "GPU" in clear(e, field="device")


# ---------------------------------------------------------------- checkpoints and stage files
def _outputs(folder: Path):
    return SimpleNamespace(model=[str(folder / "model.pt")], metrics=[str(folder / "metrics.json")],
                           predictions=[str(folder / "predictions.csv")])


@pytest.fixture(scope="module")
def mlp_ckpt(graphs, tmp_path_factory):
    from cellgnn.train import checkpoint, train_model

    g = graphs["cells"]
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch_save(checkpoint(train_model(g, "mlp", {"max_epochs": 3, "patience": 3}, seed=0), "mlp", g, 0), path)
    return path


def test_checkpoint_from_another_dataset(mlp_ckpt, graphs):
    """Same genes and classes (two simulations), different cells: refused."""
    from cellgnn.train import load_model

    other = dict(graphs["cells"], cell_ids=[f"other{i}" for i in range(len(graphs["cells"]["cell_ids"]))])
    with pytest.raises(CellgnnInputError) as e:
        load_model(mlp_ckpt, other)
    assert "another dataset" in clear(e, file=mlp_ckpt, field="graph_fingerprint")
    with pytest.raises(CellgnnInputError) as e:  # the other split mode of the same dataset
        load_model(mlp_ckpt, graphs["donors"])
    clear(e, file=mlp_ckpt)


def test_checkpoint_with_other_genes_or_corrupt(mlp_ckpt, graphs, tmp_path):
    from cellgnn.train import load_model

    g = graphs["cells"]
    with pytest.raises(CellgnnInputError) as e:
        load_model(mlp_ckpt, dict(g, genes=[f"X{i}" for i in range(len(g["genes"]))]))
    clear(e, file=mlp_ckpt, field="genes")
    bad = tmp_path / "model.pt"
    bad.write_bytes(mlp_ckpt.read_bytes()[:100])
    with pytest.raises(CellgnnInputError) as e:
        load_model(bad, g)
    clear(e, file=bad)


def test_truncated_graph_file(graphs, tmp_path):
    path = tmp_path / "cells.pt"
    save_graph(graphs["cells"], path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CellgnnInputError) as e:
        load_graph(path)
    assert "rerun the graph stage" in clear(e, file=path)


def test_edge_features_of_another_graph(graphs, tmp_path):
    from cellgnn.train import run_train

    gpath = tmp_path / "cells.pt"
    save_graph(graphs["cells"], gpath)
    e_other = graphs["donors"]["edge_index"]
    ef = {"edge_attr": torch.zeros(e_other.shape[1], 2), "edge_index": e_other, "columns": ["a", "b"],
          "groups": {"curvature": [0, 1]}}
    efpath = tmp_path / "ef.pt"
    torch_save(ef, efpath)
    out = tmp_path / "models"
    with pytest.raises(CellgnnInputError) as e:
        run_train(str(gpath), "gat_ef", [0], {"max_epochs": 2, "patience": 2}, "cpu", _outputs(out),
                     edge_features=str(efpath))
    clear(e, file=efpath)
    nothing_written(out)


# ---------------------------------------------------------------- pretraining (issue 21)
def test_pretraining_refuses_a_mask_fraction_outside_0_1(pre):
    from cellgnn.pretrain import fit_pretrain

    for frac in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(CellgnnInputError) as e:
            fit_pretrain(pre[0].layers["counts"], {"mask_fraction": frac, "epochs": 1})
        assert "outside (0, 1)" in clear(e, field="pretrain.mask_fraction")


def test_pretraining_refuses_values_that_are_not_counts(pre, tmp_path):
    """A preprocessed file whose counts layer holds normalized values: refused before training, nothing written."""
    from cellgnn.pretrain import run_pretrain

    adata = pre[0].copy()
    adata.layers["counts"] = adata.X.copy()  # log-normalized, not counts
    path = tmp_path / "preprocessed.h5ad"
    write_h5ad(adata, path)
    out = tmp_path / "pretrain"
    with pytest.raises(CellgnnInputError) as e:
        run_pretrain(str(path), str(out / "embedding.h5ad"), str(out / "model.pt"), {"epochs": 1}, "cpu")
    assert "non-integer" in clear(e, file=path, field="layers.counts")
    nothing_written(out)
    negative = adata.copy()
    negative.layers["counts"] = -pre[0].layers["counts"]
    with pytest.raises(CellgnnInputError) as e:
        from cellgnn.pretrain import fit_pretrain

        fit_pretrain(negative.layers["counts"], {"epochs": 1}, where="mine.h5ad")
    assert "negative" in clear(e, file="mine.h5ad", field="layers.counts")


def test_embedding_of_other_cells_is_refused(pre, tmp_path):
    """An embedding written for another dataset (other or fewer cells): refused by the graph stage's reader;
    the graph stage asked to use an embedding it was not given: refused too."""
    from cellgnn.graph import build_graph
    from cellgnn.pretrain import OBSM_KEY, load_embedding
    from sim_config import GRAPH_CFG

    adata = pre[0]
    n = adata.n_obs
    for ids in ([f"other{i}" for i in range(n)], list(adata.obs_names[:-1])):
        emb = ad.AnnData(obs=pd.DataFrame(index=ids))
        emb.obsm[OBSM_KEY] = np.zeros((len(ids), 4), np.float32)
        path = tmp_path / "embedding.h5ad"
        write_h5ad(emb, path)
        with pytest.raises(CellgnnInputError) as e:
            load_embedding(path, adata.obs_names)
        assert "not the dataset's" in clear(e, file=path, field="obs_names")
    with pytest.raises(CellgnnInputError) as e:
        build_graph(adata, dict(GRAPH_CFG, features="pretrain"), "cells", seed=0)
    clear(e, field="graph.features")
    with pytest.raises(CellgnnInputError) as e:
        build_graph(adata, dict(GRAPH_CFG, node_features="pretrain"), "cells", seed=0, embedding=np.zeros((n - 1, 4)))
    clear(e, field="X_cellgnn_pretrain")


# ---------------------------------------------------------------- the real workflow
def test_workflow_refuses_corrupt_h5ad_with_one_clear_message(tmp_path):
    """Refused when Snakemake starts (its obs cannot be read), before any job."""
    path = tmp_path / "study.h5ad"
    _truncated(path)
    before = path.read_bytes()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "broken", "data": {"source": "file", "file": {"path": str(path)}},
                                   "graph": {"split_modes": ["cells"]}}))
    res = snakemake("--cores", "1", "--configfile", str(cfg), "--directory", str(tmp_path),
                    "results/broken/raw.h5ad", check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert f"cellgnn: {path}: cannot read obs" in out and "truncated or not an AnnData" in out and "Fix:" in out, \
        out[-3000:]
    assert not (tmp_path / "results").exists()  # nothing written
    assert path.read_bytes() == before  # the input is never touched
