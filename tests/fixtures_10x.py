"""Test helpers: write small count matrices in the real on-disk formats, and a local HTTP server.

Formats: 10x MTX directory (gzipped, CellRanger v3 names, optional GEO-style prefix),
10x HDF5 (CellRanger v3 ``/matrix`` layout written with h5py), ``.h5ad``.
The server (``http.server`` in a thread on 127.0.0.1, random port) serves byte strings
by path, honours ``Range`` requests, and can misbehave on purpose per path:
``drop`` (first answer cut halfway, connection closed), ``wrong`` (other bytes),
``no_range`` (ignores Range).
"""

from __future__ import annotations

import gzip
import http.server
import io
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp


def small_counts(n_cells: int = 40, n_genes: int = 30, seed: int = 0, genes=None, prefix: str = "AAAC"):
    """AnnData with integer gamma-Poisson counts (csr float32), gene ids ENSG…, barcodes …-1."""
    rng = np.random.default_rng(seed)
    mu = rng.gamma(0.5, 2.0, size=(1, n_genes))
    X = rng.poisson(rng.gamma(2.0, mu / 2.0, size=(n_cells, n_genes))).astype(np.float32)
    genes = list(genes) if genes is not None else [f"GENE{j}" for j in range(n_genes - 2)] + ["MT-CO1", "MT-ND1"]
    var = pd.DataFrame({"gene_ids": [f"ENSG{j:011d}" for j in range(n_genes)]}, index=pd.Index(genes))
    obs = pd.DataFrame(index=[f"{prefix}{i:08d}-1" for i in range(n_cells)])
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=var)


def write_10x_mtx(adata, folder: str | Path, prefix: str = "") -> Path:
    """CellRanger v3 MTX (genes × cells, gzipped) into ``folder`` with an optional name prefix."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    scipy.io.mmwrite(buf, sp.coo_matrix(adata.X.T.astype(np.int64)), field="integer")
    (folder / f"{prefix}matrix.mtx.gz").write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    feats = "".join(f"{i}\t{n}\tGene Expression\n" for i, n in zip(adata.var["gene_ids"], adata.var_names))
    (folder / f"{prefix}features.tsv.gz").write_bytes(gzip.compress(feats.encode(), mtime=0))
    bcs = "".join(f"{b}\n" for b in adata.obs_names)
    (folder / f"{prefix}barcodes.tsv.gz").write_bytes(gzip.compress(bcs.encode(), mtime=0))
    return folder


def write_10x_h5(adata, path: str | Path, genome: str = "GRCh38") -> Path:
    """CellRanger v3 HDF5: ``/matrix/{data,indices,indptr,shape,barcodes,features/...}``."""
    path = Path(path)
    csc = sp.csc_matrix(adata.X.T.astype(np.int32))  # genes x cells, CSC = per-cell columns
    n_genes, n_cells = csc.shape
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("data", data=csc.data.astype(np.int32))
        g.create_dataset("indices", data=csc.indices.astype(np.int64))
        g.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([n_genes, n_cells], dtype=np.int32))
        g.create_dataset("barcodes", data=np.array(adata.obs_names, dtype="S"))
        fg = g.create_group("features")
        fg.create_dataset("id", data=np.array(adata.var["gene_ids"], dtype="S"))
        fg.create_dataset("name", data=np.array(adata.var_names, dtype="S"))
        fg.create_dataset("feature_type", data=np.array(["Gene Expression"] * n_genes, dtype="S"))
        fg.create_dataset("genome", data=np.array([genome] * n_genes, dtype="S"))
        fg.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
    return path


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        mode = srv.modes.get(self.path, "ok")
        if mode == "wrong":
            body = bytes(b ^ 0xFF for b in body)
        start = 0
        rng = self.headers.get("Range")
        if rng and mode != "no_range":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode == "drop" and srv.drops.get(self.path, 0) > 0:
            srv.drops[self.path] -= 1
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(chunk)


@contextmanager
def http_server(files: dict[str, bytes], modes: dict[str, str] | None = None, drops: int = 1):
    """Serve ``files`` (URL path → bytes) on 127.0.0.1; yields the server (``.base`` = base URL)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files = dict(files)
    srv.modes = dict(modes or {})
    srv.drops = {p: drops for p, m in srv.modes.items() if m == "drop"}
    srv.requests = []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
