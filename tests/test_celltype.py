"""Cell-type stage (N-ACT-style): it finds the simulator's cell types, reads their markers off
the attention, is deterministic, refuses bad input, and runs as a Snakemake rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from cellgnn import celltype as ct
from cellgnn.data import simulate
from cellgnn.errors import CellgnnInputError
from cellgnn.preprocess import preprocess

FAST = {"epochs": 15, "n_pcs": 20, "max_genes": 300}
N_MARKERS, MARKER_START = 25, 13  # cellgnn.data.simulate: 25 marker genes per type after the 13 MT- genes


@pytest.fixture(scope="module")
def small():
    raw = simulate(n_cells=600, n_genes=400, n_donors=3, seed=2)
    pre, _ = preprocess(raw, {"expect_counts": True, "min_genes": 20, "min_cells": 3, "max_mito_fraction": 0.2,
                              "target_sum": 1e4, "transform": "log1p", "hvg": None, "n_pcs": 20})
    types = list(raw.obs["cell_type"].cat.categories)
    markers = pd.DataFrame([(t, raw.var_names[MARKER_START + N_MARKERS * c + i])
                            for c, t in enumerate(types) for i in range(N_MARKERS)], columns=["cell_type", "gene"])
    return pre, markers


def test_finds_the_simulated_cell_types_and_their_markers(small):
    pre, markers = small
    res = ct.run_celltype(pre, FAST, markers=markers)
    m = res.metrics
    assert m["known_cell_types"]["ari"] > 0.9, m["known_cell_types"]
    assert m["classifier"]["val_accuracy"] > 0.9
    # every cluster's top 10 salient genes are markers of its majority type, and its name is that type
    hits = m["marker_hits_known_types"]
    assert hits["n_types_hit"] == hits["n_types"] == pre.obs["cell_type"].nunique()
    for k, info in hits["by_cluster"].items():
        assert len(info["hits"]) >= 6, (k, info)  # a random ranking: 10 * 25 / ~380 genes = 0.7
    assert m["named_types"]["accuracy"] > 0.9 and m["named_types"]["ari"] > 0.9
    a = res.assignments
    assert list(a.columns) == ["cell_id", "cluster", "cellgnn_cell_type", "confidence"]
    assert a["cell_id"].tolist() == pre.obs_names.tolist()
    assert a["confidence"].between(0, 1).all() and a["confidence"].median() > 2 / m["n_clusters"]  # chance: 1 / K
    assert list(res.salient.columns) == ["cluster", "cell_type", "gene", "score", "rank"]
    assert (res.salient.groupby("cluster")["rank"].max() == FAST.get("top_k", ct.resolve_params({})["top_k"])).all()


def test_names_go_where_markers_are_specific_and_same_names_merge():
    genes = ["LYZ", "CD14", "CST3", "FCER1A", "IL7R", "CCR7", "HLA-DRA-ENSG00000204287", "G1", "G2", "G3", "G4"]
    markers = pd.DataFrame([("Mono", "LYZ"), ("Mono", "CD14"), ("DC", "FCER1A"), ("DC", "CST3"), ("T", "IL7R"),
                            ("T", "CCR7"), ("B", "HLA-DRA")], columns=["cell_type", "gene"])
    order = {  # genes by salience, most salient first, per cluster
        0: ["CST3", "LYZ", "G1", "CD14", "G2", "G3", "IL7R", "CCR7", "FCER1A", "HLA-DRA-ENSG00000204287", "G4"],  # monocytes
        1: ["FCER1A", "CST3", "G1", "LYZ", "G2", "G3", "IL7R", "CCR7", "CD14", "HLA-DRA-ENSG00000204287", "G4"],  # DCs
        2: ["IL7R", "CCR7", "G1", "G2", "G3", "LYZ", "CD14", "CST3", "FCER1A", "HLA-DRA-ENSG00000204287", "G4"],  # T
        3: ["CCR7", "IL7R", "G2", "G1", "G3", "LYZ", "CD14", "CST3", "FCER1A", "HLA-DRA-ENSG00000204287", "G4"],  # T
        4: ["HLA-DRA-ENSG00000204287", "G1", "G2", "G3", "LYZ", "CD14", "CST3", "FCER1A", "IL7R", "CCR7", "G4"],  # B
        5: ["G1", "G2", "G3", "G4", "LYZ", "CD14", "CST3", "FCER1A", "IL7R", "CCR7", "HLA-DRA-ENSG00000204287"]}
    salience = np.zeros((len(order), len(genes)))
    for k, ranked in order.items():
        salience[k, [genes.index(g) for g in ranked]] = np.arange(len(genes), 0, -1)
    names, scores = ct.name_clusters(salience, genes, markers, name_top_k=4)
    # CST3 is cluster 0's top gene, but the DC markers are most specific to cluster 1
    assert names == ["Mono", "DC", "T", "T", "B", "cluster_5"], scores
    assert ct.gene_symbol("HLA-DRA-ENSG00000204287") == "HLA-DRA" and ct.gene_symbol("MT-CO1") == "MT-CO1"


def test_marker_genes_join_the_classifier_genes(small):
    pre, markers = small
    low_var = str(pre.var_names[np.argsort(pre.X.toarray().var(axis=0))[0]])
    idx = ct.select_genes(pre, 50, np.fromiter(ct.marker_var_index(pre.var_names, pd.DataFrame(
        {"cell_type": ["x"], "gene": [low_var]})).values(), dtype=np.int64))
    assert idx.size == 51 and pre.var_names.get_loc(low_var) in idx and np.all(np.diff(idx) > 0)


def test_same_seed_same_assignments_and_no_markers_means_cluster_names(small):
    pre, _ = small
    a = ct.run_celltype(pre, {**FAST, "epochs": 3}).assignments
    b = ct.run_celltype(pre, {**FAST, "epochs": 3}).assignments
    pd.testing.assert_frame_equal(a, b)
    assert set(a["cellgnn_cell_type"]) == {f"cluster_{k}" for k in a["cluster"].unique()}
    c = ct.run_celltype(pre, {**FAST, "epochs": 3, "seed": 5}).assignments
    assert not np.allclose(a["confidence"], c["confidence"])  # the seed reaches the classifier


def test_refuses_too_few_cells_and_bad_settings(small, tmp_path):
    pre, _ = small
    with pytest.raises(CellgnnInputError, match="celltype.min_cells"):
        ct.run_celltype(pre[:30].copy(), FAST)
    with pytest.raises(CellgnnInputError, match="celltype.integrate"):
        ct.run_celltype(pre, {**FAST, "integrate": ["batch"]})
    with pytest.raises(CellgnnInputError, match="unknown celltype key"):
        ct.run_celltype(pre, {**FAST, "resolutoin": 1.0})
    bad = tmp_path / "markers.tsv"
    bad.write_text("type\tgene\nB\tMS4A1\n")
    with pytest.raises(CellgnnInputError, match="cell_type"):
        ct.read_markers(bad)
    with pytest.raises(CellgnnInputError, match="not found"):
        ct.read_markers(tmp_path / "absent.tsv")


def test_apply_cell_types(small, tmp_path):
    pre, _ = small
    table = pd.DataFrame({"cell_id": pre.obs_names[::-1], "cluster": 1, "cellgnn_cell_type": "B cells",
                          "confidence": 0.9})
    path = tmp_path / "assignments.csv"
    table.to_csv(path, index=False)
    out = ct.apply_cell_types(pre, path)
    assert (out.obs["cellgnn_cell_type"] == "B cells").all() and out.obs["cellgnn_cell_type"].dtype == "category"
    assert "cellgnn_cell_type" not in pre.obs  # not in place
    with pytest.raises(CellgnnInputError, match="no assignment"):
        ct.apply_cell_types(pre, table.iloc[1:])


def test_leiden_merges_small_clusters_and_numbers_by_size():
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(0, 0.3, (200, 5)), rng.normal(5, 0.3, (120, 5)), rng.normal(-5, 0.3, (6, 5))])
    labels = ct.leiden_clusters(emb.astype(np.float32), 10, 0.1, seed=0, min_cluster_size=10)
    assert np.bincount(labels).tolist()[:2] == sorted(np.bincount(labels).tolist(), reverse=True)[:2]
    assert np.bincount(labels).min() >= 10
    assert len(set(labels[:200])) == 1 and len(set(labels[200:320])) == 1 and labels[0] != labels[200]


def test_unknown_celltype_key_is_refused():
    with pytest.raises(CellgnnInputError, match="unknown celltype key"):
        ct.resolve_params({"resolutoin": 0.5})


def test_snakemake_rule_celltype(tmp_path):
    from test_workflow import TINY, snakemake

    cfg = yaml.safe_load(TINY.read_text())
    cfg["celltype"] = {"enabled": True, "epochs": 3, "n_pcs": 10, "max_genes": 200}
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    snakemake("--cores", "1", "--configfile", str(conf), "--directory", str(tmp_path),
              "results/tiny/celltype/metrics.json")
    out = tmp_path / "results" / "tiny" / "celltype"
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_clusters"] >= 2 and m["known_cell_types"]["ari"] > 0.5
    a = pd.read_csv(out / "assignments.csv")
    assert list(a.columns) == ct.ASSIGNMENT_COLUMNS and len(a) == m["n_cells"]
    assert (tmp_path / "logs" / "tiny" / "celltype.log").exists()


def test_workflow_without_cell_types_takes_them_from_the_celltype_stage(tmp_path):
    from cellgnn.graph import load_graph
    from test_workflow import TINY, snakemake

    cfg = yaml.safe_load(TINY.read_text())
    cfg["data"]["keys"] = {"cell_type": None}
    cfg["celltype"] = {"epochs": 3, "n_pcs": 10, "max_genes": 200}  # enabled: auto
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    plan = snakemake("--cores", "1", "--configfile", str(conf), "--directory", str(tmp_path), "-n", "--quiet",
                     "rules").stdout
    assert "celltype" in plan  # part of the default target
    snakemake("--cores", "1", "--configfile", str(conf), "--directory", str(tmp_path), "results/tiny/graph/cells.pt")
    a = pd.read_csv(tmp_path / "results" / "tiny" / "celltype" / "assignments.csv", dtype={"cell_id": str})
    g = load_graph(tmp_path / "results" / "tiny" / "graph" / "cells.pt")
    assert g["has_cell_types"] and sorted(g["cell_types"]) == sorted(a["cellgnn_cell_type"].unique())
    calls = np.asarray(g["cell_types"])[g["cell_type"].numpy()]
    np.testing.assert_array_equal(calls, a.set_index("cell_id").loc[g["cell_ids"], "cellgnn_cell_type"].to_numpy())

    cfg["celltype"]["enabled"] = False  # no stage, no cell types
    conf.write_text(yaml.safe_dump(cfg))
    plan = snakemake("--cores", "1", "--configfile", str(conf), "--directory", str(tmp_path / "off"), "-n", "--quiet",
                     "rules").stdout
    assert "celltype" not in plan
