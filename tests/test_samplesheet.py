"""Sample sheets and the url / samplesheet / file sources, downloading from 127.0.0.1."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.sparse as sp
from fixtures_10x import http_server, small_counts, write_10x_h5, write_10x_mtx

from cellgnn.data.samplesheet import load_samplesheet
from cellgnn.data.sources import infection_labels, load_source
from cellgnn.errors import CellgnnInputError

HEADER = "sample\turl\tpath\tsha256\tcondition\tdonor\ttime\tformat\n"
DL = {"retries": 2, "backoff": 0.01, "timeout": 5, "progress": False}
VIRAL = "scv2_orf1-10"


def _organoid_sample(seed, infected_frac):
    """A sample whose last gene is the viral gene; ``infected_frac`` of cells get >= 10 viral UMIs."""
    genes = [f"GENE{j}" for j in range(27)] + ["MT-CO1", "MT-ND1", VIRAL]
    a = small_counts(40, 30, seed=seed, genes=genes)
    X = a.X.toarray()
    n_inf = int(round(infected_frac * a.n_obs))
    X[:, -1] = 0
    X[:n_inf, -1] = 10 + np.arange(n_inf)
    X[n_inf:n_inf + 3, -1] = 9  # just below the threshold: bystanders
    a.X = sp.csr_matrix(X)
    return a


def _sheet(path, rows):
    path.write_text(HEADER + "".join("\t".join(r) + "\n" for r in rows))
    return path


def _serve_dir(folder, prefix=""):
    return {f"/{prefix}{f.name}": f.read_bytes() for f in sorted(folder.iterdir())}


def test_organoid_samplesheet_over_http(tmp_path):
    files, rows = {}, []
    for i, (name, time, frac) in enumerate([("mock", "", 0.0), ("d1", "1dpi", 0.1), ("d3", "3dpi", 0.5)]):
        folder = write_10x_mtx(_organoid_sample(i, frac), tmp_path / "src" / name, prefix=f"GSM{i}_{name}_")
        files.update(_serve_dir(folder, prefix=f"{name}/"))
    with http_server(files) as srv:
        for name, time, cond in [("mock", "", "mock"), ("d1", "1dpi", "infected"), ("d3", "3dpi", "infected")]:
            urls = ";".join(f"{srv.base}/{name}/GSM{['mock', 'd1', 'd3'].index(name)}_{name}_{k}"
                            for k in ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz"))
            rows.append([name, urls, "", "", cond, "", time, "10x_mtx"])
        sheet = _sheet(tmp_path / "s.tsv", rows)
        cfg = {"source": "samplesheet", "samplesheet": {"path": str(sheet), "label": "infection_time"},
               "download": DL}
        adata = load_source(cfg, tmp_path / "resources" / "organoid")
        n_req = len(srv.requests)
        load_source(cfg, tmp_path / "resources" / "organoid")  # second run: verified, nothing fetched
        assert len(srv.requests) == n_req
    counts = adata.obs["label"].value_counts().to_dict()
    assert counts == {"mock": 40, "bystander_1dpi": 36, "infected_1dpi": 4, "bystander_3dpi": 20, "infected_3dpi": 20}
    assert VIRAL not in adata.var_names and adata.uns["viral_genes"] == [VIRAL]
    assert set(adata.obs["donor"]) == {"mock", "d1", "d3"}
    assert adata.obs_names[0].startswith("mock_")
    src = adata.uns["cellgnn"]["source"]
    assert src["kind"] == "samplesheet" and len(src["sha256"]) == 9  # 3 files x 3 samples recorded
    # each downloaded file has its recorded sum
    assert (tmp_path / "resources/organoid/d1/GSM1_d1_matrix.mtx.gz.sha256").exists()


def test_viral_gene_kept_when_switched_off_and_mock_viral_dropped():
    a = _organoid_sample(0, 0.2)
    a.obs["condition"], a.obs["time"], a.obs["sample"] = "mock", "", "m"
    b = _organoid_sample(1, 0.2)
    b.obs["condition"], b.obs["time"], b.obs["sample"] = "infected", "2dpi", "i"
    import anndata as ad

    both = ad.concat([a, b], index_unique="-")
    icfg = {"viral_gene_regex": "^scv2", "min_viral_umi": 10, "mock_condition": "mock",
            "exclude_viral_genes": False, "drop_mock_viral": True}
    out = infection_labels(both, icfg)
    assert VIRAL in out.var_names
    assert (out.obs["label"] == "mock").sum() == 32  # 8 mock cells with >= 10 viral UMIs dropped
    assert (out.obs["label"] == "infected_2dpi").sum() == 8
    with pytest.raises(CellgnnInputError, match="no gene matches the viral pattern"):
        infection_labels(both, {**icfg, "viral_gene_regex": "^HIV"})


def test_balf_h5_samplesheet_condition_labels_with_sums(tmp_path):
    files, sums = {}, {}
    for i, s in enumerate(["C51", "C141", "C143"]):
        p = write_10x_h5(small_counts(30, 20, seed=i), tmp_path / f"{s}.h5")
        files[f"/{s}.h5"] = p.read_bytes()
        sums[s] = hashlib.sha256(files[f"/{s}.h5"]).hexdigest()
    with http_server(files) as srv:
        rows = [[s, f"{srv.base}/{s}.h5", "", sums[s], c, "", "", "10x_h5"]
                for s, c in [("C51", "control"), ("C141", "moderate"), ("C143", "severe")]]
        sheet = _sheet(tmp_path / "balf.tsv", rows)
        adata = load_source({"source": "samplesheet", "samplesheet": {"path": str(sheet), "label": "condition"},
                             "download": DL}, tmp_path / "res")
    assert adata.n_obs == 90
    assert adata.obs.groupby("donor", observed=True)["label"].nunique().max() == 1  # donor = sample
    assert set(adata.obs["label"]) == {"control", "moderate", "severe"}


def test_url_and_file_sources(tmp_path):
    ref = small_counts(25, 12)
    ref.obs["cond"] = ["a", "b"] * 12 + ["a"]
    ref.write_h5ad(tmp_path / "x.h5ad")
    with http_server({"/d/x.h5ad": (tmp_path / "x.h5ad").read_bytes()}) as srv:
        a = load_source({"source": "url", "url": {"url": f"{srv.base}/d/x.h5ad"}, "download": DL}, tmp_path / "r")
    assert (tmp_path / "r" / "x.h5ad").exists() and (tmp_path / "r" / "x.h5ad.sha256").exists()
    assert a.n_obs == 25 and list(a.obs["cond"][:2]) == ["a", "b"]
    b = load_source({"source": "file", "file": {"path": str(write_10x_mtx(ref, tmp_path / "m"))}})
    assert b.n_obs == 25 and b.uns["cellgnn"]["source"]["kind"] == "file"
    with pytest.raises(CellgnnInputError, match="data.url.url"):
        load_source({"source": "url", "url": {"url": ""}}, tmp_path)


def test_samplesheet_missing_file_row(tmp_path):
    sheet = _sheet(tmp_path / "s.tsv", [["a", "", str(tmp_path / "nope.h5"), "", "control", "", "", ""]])
    with pytest.raises(CellgnnInputError, match=r"row 2 \(sample 'a'\).*does not exist") as ei:
        load_samplesheet(sheet)
    assert "s.tsv" in str(ei.value)


def test_samplesheet_duplicate_ids(tmp_path):
    p = write_10x_h5(small_counts(5, 5), tmp_path / "a.h5")
    sheet = _sheet(tmp_path / "s.tsv", [["a", "", str(p), "", "x", "", "", ""], ["a", "", str(p), "", "y", "", "", ""]])
    with pytest.raises(CellgnnInputError, match=r"duplicated sample ids: \['a'\]"):
        load_samplesheet(sheet)


@pytest.mark.parametrize("row,match", [
    (["a b", "", "p", "", "x", "", "", ""], "does not match"),
    (["a", "ftp:/bad url", "", "", "x", "", "", ""], "does not match"),
    (["a", "http://h/x", "", "zz", "x", "", "", ""], "does not match"),
    (["a", "", "", "", "x", "", "", ""], "exactly one of 'url' and 'path'"),
    (["a", "http://h/x;http://h/y", "", "a" * 64, "x", "", "", ""], "2 URLs but 1 sha256"),
    (["a", "http://h/x", "", "", "", "", "", ""], "should be non-empty|too short"),
    (["a", "http://h/x", "", "", "x", "", "", "csv"], "is not one of"),
])
def test_samplesheet_schema_errors(tmp_path, row, match):
    with pytest.raises(CellgnnInputError, match=match):
        load_samplesheet(_sheet(tmp_path / "s.tsv", [row]))


def test_unknown_column_rejected(tmp_path):
    (tmp_path / "s.tsv").write_text("sample\tpath\tcondition\tcolour\na\tp\tx\tred\n")
    with pytest.raises(CellgnnInputError, match="Additional properties"):
        load_samplesheet(tmp_path / "s.tsv")


def test_genes_duplicated_across_samples(tmp_path):
    a = small_counts(10, 4, genes=["A", "B", "A", "MT-CO1"], seed=0)  # 'A' twice -> A, A-1
    b = small_counts(10, 4, genes=["A", "B", "C", "MT-CO1"], seed=1)
    b.var["gene_ids"] = ["ENSG00000000002", "ENSG00000000001", "ENSG00000000009", "ENSG00000000003"]
    pa, pb = write_10x_h5(a, tmp_path / "a.h5"), write_10x_h5(b, tmp_path / "b.h5")
    sheet = _sheet(tmp_path / "s.tsv", [["a", "", str(pa), "", "x", "", "", ""], ["b", "", str(pb), "", "y", "", "", ""]])
    with pytest.raises(CellgnnInputError, match="'A' is duplicated across samples with different gene ids"):
        load_source({"source": "samplesheet", "samplesheet": {"path": str(sheet)}}, tmp_path)


def test_download_failure_keeps_other_samples(tmp_path):
    good = write_10x_h5(small_counts(10, 5), tmp_path / "g.h5").read_bytes()
    with http_server({"/g.h5": good}) as srv:
        sheet = _sheet(tmp_path / "s.tsv", [["g", f"{srv.base}/g.h5", "", "", "x", "", "", ""],
                                            ["m", f"{srv.base}/missing.h5", "", "", "y", "", "", ""]])
        with pytest.raises(CellgnnInputError, match="HTTP 404"):
            load_source({"source": "samplesheet", "samplesheet": {"path": str(sheet)}, "download": DL}, tmp_path / "r")
    assert (tmp_path / "r" / "g" / "g.h5").read_bytes() == good


@pytest.mark.parametrize("name,n,conds", [("organoid", 4, {"mock": 1, "infected": 3}),
                                          ("balf", 12, {"control": 3, "moderate": 3, "severe": 6})])
def test_shipped_samplesheets_validate(name, n, conds):
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "config" / f"{name}.yaml").read_text())
    sheet = load_samplesheet(root / cfg["data"]["samplesheet"]["path"])
    assert len(sheet) == n and sheet["condition"].value_counts().to_dict() == conds
    assert all(u.startswith("https://ftp.ncbi.nlm.nih.gov/geo/samples/GSM") for u in sheet["url"])
    if name == "organoid":
        assert all(len(u.split(";")) == 3 for u in sheet["url"])


def test_pooled_samples_with_per_cell_metadata_as_geo_lists_them(tmp_path):
    """Kang-style: two pooled 10x MTX samples under GEO's file names (``*_2.1.mtx.gz``, a series-level
    ``*.genes.tsv.gz``), donors and cell types from a per-cell table joined by barcode within the
    sample (a barcode occurs in both samples); cells without a row are dropped."""
    import gzip

    import pandas as pd

    files, rows = {}, []
    barcodes = {}
    for i, cond in enumerate(["ctrl", "stim"]):
        a = small_counts(30, 20, seed=i)  # both samples use the same barcodes AAAC...
        folder = write_10x_mtx(a, tmp_path / "src" / cond, prefix=f"GSM{i}_")
        (folder / f"GSM{i}_matrix.mtx.gz").rename(folder / f"GSM{i}_2.{i + 1}.mtx.gz")
        (folder / f"GSM{i}_features.tsv.gz").rename(folder / "GSE1_batch2.genes.tsv.gz")
        files.update(_serve_dir(folder, prefix=f"{cond}/"))
        barcodes[cond] = list(a.obs_names)
    meta = pd.DataFrame([(b, f"donor{j % 3}", cond, "T" if j % 2 else "B")
                         for cond, bcs in barcodes.items() for j, b in enumerate(bcs[:25])],
                        columns=["", "ind", "stim", "cell"])
    files["/GSE1_batch2.total.tsne.df.tsv.gz"] = gzip.compress(meta.to_csv(sep="\t", index=False).encode())
    with http_server(files) as srv:
        for i, cond in enumerate(["ctrl", "stim"]):
            urls = ";".join(f"{srv.base}/{cond}/{n}" for n in (f"GSM{i}_2.{i + 1}.mtx.gz", "GSE1_batch2.genes.tsv.gz",
                                                                f"GSM{i}_barcodes.tsv.gz"))
            rows.append([cond, urls, "", "", cond, "pool", "", "10x_mtx"])
        cfg = {"source": "samplesheet", "download": DL,
               "samplesheet": {"path": str(_sheet(tmp_path / "s.tsv", rows)), "label": "condition",
                               "cell_metadata": {"url": f"{srv.base}/GSE1_batch2.total.tsne.df.tsv.gz",
                                                 "sample_column": "stim", "match": "condition"}}}
        adata = load_source(cfg, tmp_path / "resources" / "kang")
    assert adata.n_obs == 50  # 25 annotated cells per sample; 5 each dropped
    assert set(adata.obs["ind"]) == {"donor0", "donor1", "donor2"} and set(adata.obs["cell"]) == {"T", "B"}
    stim = adata.obs[adata.obs["sample"] == "stim"]
    first = stim.index[0].split("_", 1)[1]
    assert stim.loc[f"stim_{first}", "ind"] == meta[(meta["stim"] == "stim") & (meta[""] == first)]["ind"].iloc[0]
    assert (tmp_path / "resources" / "kang" / "cell_metadata" / "GSE1_batch2.total.tsne.df.tsv.gz").exists()
