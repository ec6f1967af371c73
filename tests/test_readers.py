"""Readers for .h5ad, 10x .h5 and 10x MTX directories, on files written in the real formats."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from fixtures_10x import small_counts, write_10x_h5, write_10x_mtx

from cellgnn.data.readers import read_counts, validate_counts
from cellgnn.errors import CellgnnInputError


def _same(a, b):
    assert list(a.var_names) == list(b.var_names)
    assert list(a.obs_names) == list(b.obs_names)
    assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())


@pytest.mark.parametrize("kind", ["h5ad", "10x_h5", "10x_mtx", "10x_mtx_prefixed"])
def test_roundtrip_each_format(tmp_path, kind):
    ref = small_counts(50, 25, seed=1)
    if kind == "h5ad":
        path = tmp_path / "x.h5ad"
        ref.write_h5ad(path)
    elif kind == "10x_h5":
        path = write_10x_h5(ref, tmp_path / "x.h5")
    elif kind == "10x_mtx":
        path = write_10x_mtx(ref, tmp_path / "mtx")
    else:
        path = write_10x_mtx(ref, tmp_path / "geo", prefix="GSM5082289_mock_")
    got = read_counts(path)
    _same(got, ref)
    if kind != "h5ad":
        assert list(got.var["gene_ids"]) == list(ref.var["gene_ids"])


def test_mtx_file_path_and_genes_tsv(tmp_path):
    ref = small_counts(20, 10)
    d = write_10x_mtx(ref, tmp_path / "m")
    (d / "features.tsv.gz").rename(d / "genes.tsv.gz")
    _same(read_counts(d / "matrix.mtx.gz"), ref)


def test_duplicate_genes_made_unique_with_warning_or_error(tmp_path):
    genes = ["A", "B", "A", "C", "MT-CO1"]
    ref = small_counts(10, 5, genes=genes)
    path = write_10x_h5(ref, tmp_path / "d.h5")
    with pytest.warns(UserWarning, match="made unique"):
        got = read_counts(path)
    assert list(got.var_names) == ["A", "B", "A-1", "C", "MT-CO1"]
    with pytest.raises(CellgnnInputError, match="occur more than once"):
        read_counts(path, duplicates="error")


@pytest.mark.parametrize("bad,match", [(-1.0, "negative"), (0.5, "not integers"), (np.nan, "NaN")])
def test_non_counts_refused(tmp_path, bad, match):
    ref = small_counts(10, 6)
    X = ref.X.toarray()
    X[0, 0] = bad
    ref.X = sp.csr_matrix(X)
    path = tmp_path / "bad.h5ad"
    ref.write_h5ad(path)
    with pytest.raises(CellgnnInputError, match=match) as ei:
        read_counts(path)
    assert str(path) in str(ei.value)


def test_h5ad_layer_choice(tmp_path):
    ref = small_counts(10, 6)
    ref.layers["counts"] = ref.X.copy()
    ref.X = ref.X * 0.37
    path = tmp_path / "n.h5ad"
    ref.write_h5ad(path)
    with pytest.raises(CellgnnInputError, match="data.file.layer"):
        read_counts(path)
    np.testing.assert_array_equal(read_counts(path, layer="counts").X.toarray(), ref.layers["counts"].toarray())
    with pytest.raises(CellgnnInputError, match="layer 'nope' not found"):
        read_counts(path, layer="nope")


@pytest.mark.parametrize("kind", ["h5ad", "10x_h5", "10x_mtx"])
def test_truncated_file_clear_error(tmp_path, kind):
    ref = small_counts(200, 60)
    if kind == "h5ad":
        path = tmp_path / "t.h5ad"
        ref.write_h5ad(path)
        victim = path
    elif kind == "10x_h5":
        path = write_10x_h5(ref, tmp_path / "t.h5")
        victim = path
    else:
        path = write_10x_mtx(ref, tmp_path / "t")
        victim = path / "matrix.mtx.gz"
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CellgnnInputError, match="truncated|corrupt") as ei:
        read_counts(path)
    assert str(path) in str(ei.value)


def test_corrupt_gzip_and_mismatched_mtx(tmp_path):
    ref = small_counts(20, 10)
    d = write_10x_mtx(ref, tmp_path / "m")
    (d / "barcodes.tsv.gz").write_bytes(gzip.compress(b"only-one-barcode\n"))
    with pytest.raises(CellgnnInputError, match="barcodes.tsv.gz has 1\\b"):
        read_counts(d)
    (d / "matrix.mtx.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(CellgnnInputError, match="truncated or corrupt"):
        read_counts(d)


def test_mtx_dir_with_two_samples_refused(tmp_path):
    ref = small_counts(10, 5)
    write_10x_mtx(ref, tmp_path / "m", prefix="a_")
    write_10x_mtx(ref, tmp_path / "m", prefix="b_")
    with pytest.raises(CellgnnInputError, match="exactly one matrix file"):
        read_counts(tmp_path / "m")


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(CellgnnInputError, match="does not exist"):
        read_counts(tmp_path / "nope.h5ad")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CellgnnInputError, match="cannot tell the format"):
        read_counts(tmp_path / "x.csv")


def test_validate_counts_dense_int_ok():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = validate_counts(np.array([[0, 2], [3, 0]], dtype=np.int64))
    assert X.dtype == np.float32 and X.nnz == 2
