"""Pretrain stage: an Exceiver-style masked-count model trained on every cell, no labels.

Each cell is the set of its expressed genes. A token is a gene's identity embedding plus its
standardized value ``z`` times a second, per-gene value embedding; the value is
``log1p(count / L * target_sum)``, with ``L`` the cell's library size over the tokens the
encoder sees, standardized with the gene's mean and SD over the cells that express it. A small
array of learned latents cross-attends to the tokens (zero-count genes are never tokens), then
self-attends (``layers`` blocks). Pretraining hides a fraction ``mask_fraction`` of each cell's
non-zero genes from the encoder altogether (their values, their identities and their share of
the library size). A linear decoder reads the latents (flattened, standardized by a batch norm)
and gives every gene a log-rate ``r_g``; every gene the encoder did not see (the masked counts
and the cell's zero counts) is scored by a negative binomial (or Poisson) likelihood of mean
``L * exp(r_g)``: library size enters as this offset only. The cell embedding is the standardized
flattened latent array ``[N, n_latents * dim]`` the decoder reads, computed with every expressed
gene visible (training shows each cell at most ``max_genes`` of its unmasked genes, a random draw).

``fit_pretrain(counts, cfg, seed, device, resume)`` trains; ``embed(model, counts, ...)`` gives
the embedding; ``run_pretrain`` is the rule; ``load_embedding`` reads the rule's output for the
graph stage and checks that its cells are the dataset's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm import tqdm

from .errors import CellgnnInputError
from .io import load_resume

LOG = logging.getLogger(__name__)
OBSM_KEY = "X_cellgnn_pretrain"


# ---------------------------------------------------------------- batches
@dataclass
class Batch:
    """One batch of cells. T: most visible tokens of a cell.

    genes ``[B, T]`` int64 (index ``n_genes`` = the placeholder of a cell with no visible gene),
    values ``[B, T]`` float32 (``log1p(count / lib * target_sum)``), pad ``[B, T]`` bool (True = no
    token), lib ``[B]`` float32 (visible counts, at least 1). Training batches add the cells' counts
    ``[B, G]`` float32 and hidden ``[B, G]`` bool (True = a gene the encoder does not see: scored).
    """

    genes: torch.Tensor
    values: torch.Tensor
    pad: torch.Tensor
    lib: torch.Tensor
    counts: torch.Tensor | None = None
    hidden: torch.Tensor | None = None

    def to(self, device) -> "Batch":
        return Batch(*(None if getattr(self, f) is None else getattr(self, f).to(device)
                       for f in self.__dataclass_fields__))


def make_batch(counts: sp.csr_matrix, rows: np.ndarray, mask_fraction: float, max_genes: int | None,
               rng: np.random.Generator | None, target_sum: float = 1e4) -> Batch:
    """Tokens of cells ``rows`` of ``counts [N, G]`` (CSR, counts).

    With ``rng`` (training): each cell's non-zero genes are put in random order; the first
    ``round(mask_fraction * nnz)`` (at least 1, at most nnz - 1; none for a cell with fewer than
    2 genes) are masked, the next ``max_genes`` are visible (all the others when None), and the
    batch carries the counts and the hidden genes. Without ``rng`` (embedding): nothing is masked
    and the ``max_genes`` genes of highest count are visible (every expressed gene when None).
    """
    sub = counts[rows]
    nnz = np.diff(sub.indptr)
    b = len(rows)
    row = np.repeat(np.arange(b), nnz)
    data = sub.data.astype(np.float64)
    genes = sub.indices.astype(np.int64)
    if rng is None:
        order = np.lexsort((genes, -data, row))
        n_mask = np.zeros(b, dtype=np.int64)
    else:
        order = np.lexsort((rng.random(row.size), row))
        n_mask = np.where(nnz >= 2, np.clip(np.rint(mask_fraction * nnz), 1, np.maximum(nnz - 1, 1)), 0)
        n_mask = n_mask.astype(np.int64)
    row, data, genes = row[order], data[order], genes[order]
    rank = np.arange(row.size) - np.repeat(sub.indptr[:-1], nnz)
    visible = rank >= n_mask[row]
    if max_genes is not None:
        visible &= rank < n_mask[row] + max_genes
    n_vis = np.bincount(row[visible], minlength=b)
    lib = np.maximum(np.bincount(row[visible], weights=data[visible], minlength=b), 1.0)

    t = max(1, int(n_vis.max()) if b else 1)
    tok_genes = np.full((b, t), counts.shape[1], dtype=np.int64)
    tok_vals = np.zeros((b, t), dtype=np.float32)
    pad = np.ones((b, t), dtype=bool)
    r, pos = row[visible], rank[visible] - n_mask[row[visible]]
    tok_genes[r, pos] = genes[visible]
    tok_vals[r, pos] = np.log1p(data[visible] / lib[r] * target_sum)
    pad[r, pos] = False
    pad[n_vis == 0, 0] = False  # an empty cell attends to the placeholder token (value 0)
    batch = Batch(torch.from_numpy(tok_genes), torch.from_numpy(tok_vals), torch.from_numpy(pad),
                  torch.from_numpy(lib.astype(np.float32)))
    if rng is not None:
        hidden = np.ones((b, counts.shape[1]), dtype=bool)
        hidden[r, genes[visible]] = False
        batch.counts = torch.from_numpy(sub.toarray().astype(np.float32))
        batch.hidden = torch.from_numpy(hidden)
    return batch


# ---------------------------------------------------------------- model
class Attention(nn.Module):
    """Multi-head attention of ``q [B, Q, D]`` over ``kv [B, K, D]``; ``pad [B, K]`` True = no key."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, q, kv, pad=None):
        b, n_q, d = q.shape
        h, dh = self.heads, d // self.heads
        qh = self.q(q).view(b, n_q, h, dh).transpose(1, 2)
        k, v = self.kv(kv).view(b, kv.shape[1], 2, h, dh).permute(2, 0, 3, 1, 4)
        scores = qh @ k.transpose(-1, -2) / math.sqrt(dh)  # [B, h, Q, K]
        if pad is not None:
            scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        return self.out((torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, n_q, d))


class AttentionBlock(nn.Module):
    """Attention of ``q [B, Q, D]`` over ``kv [B, K, D]`` plus a feed-forward, both residual and
    pre-norm (``norm_kv``: also normalize the keys/values; the cross-attention over tokens does not,
    so that a token's value keeps its size)."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 2, norm_kv: bool = True):
        super().__init__()
        self.norm_q, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if norm_kv else nn.Identity()
        self.attn = Attention(dim, heads)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def forward(self, q, kv, kv_pad=None):
        h = q + self.attn(self.norm_q(q), self.norm_kv(kv), kv_pad)
        return h + self.ff(self.norm_ff(h))


class MaskedCountEncoder(nn.Module):
    """Exceiver-style encoder + masked-count decoder over ``n_genes`` genes.

    ``encode(genes, values, pad) -> latents [B, n_latents, dim]``; ``embed`` gives the cell
    embedding ``[B, n_latents * dim]`` (flattened latents, batch-normalized); ``forward(batch) ->
    log_rate [B, G]`` for every gene (expected count ``lib * exp(log_rate)``). Buffers
    ``value_mean``, ``value_sd [G + 1]``: per-gene statistics of the token values
    (:func:`value_stats`); ``log_theta [G]``: per-gene log inverse dispersion.
    """

    def __init__(self, n_genes: int, dim: int = 16, n_latents: int = 8, heads: int = 4, layers: int = 1):
        super().__init__()
        self.n_genes = n_genes
        self.gene_emb = nn.Embedding(n_genes + 1, dim)  # row n_genes: the empty cell's placeholder
        self.value_emb = nn.Embedding(n_genes + 1, dim)
        self.register_buffer("value_mean", torch.zeros(n_genes + 1))
        self.register_buffer("value_sd", torch.ones(n_genes + 1))
        self.latents = nn.Parameter(torch.randn(n_latents, dim) * 0.1)
        self.cross = AttentionBlock(dim, heads, norm_kv=False)
        self.process = nn.ModuleList(AttentionBlock(dim, heads) for _ in range(layers))
        self.norm = nn.BatchNorm1d(n_latents * dim, affine=False)
        self.decoder = nn.Linear(n_latents * dim, n_genes)
        self.gene_bias = nn.Parameter(torch.zeros(n_genes))
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def encode(self, genes: torch.Tensor, values: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        z = ((values - self.value_mean[genes]) / self.value_sd[genes]).clamp(-10, 10).masked_fill(pad, 0.0)
        tokens = self.gene_emb(genes) + z.unsqueeze(-1) * self.value_emb(genes)
        lat = self.cross(self.latents.expand(genes.shape[0], -1, -1), tokens, pad)
        for block in self.process:
            lat = block(lat, lat)
        return lat

    def embed(self, genes, values, pad) -> torch.Tensor:
        return self.norm(self.encode(genes, values, pad).flatten(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.decoder(self.embed(batch.genes, batch.values, batch.pad)) + self.gene_bias


def value_stats(counts: sp.csr_matrix, target_sum: float = 1e4) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD ``[G]`` of ``log1p(count / library * target_sum)`` over the cells expressing each
    gene (SD floored at 0.01; mean 0, SD 1 for a gene no cell expresses)."""
    lib = np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1.0)
    logn = np.log1p(counts.data / np.repeat(lib, np.diff(counts.indptr)) * target_sum)
    g = counts.indices
    n = np.bincount(g, minlength=counts.shape[1])
    mean = np.bincount(g, weights=logn, minlength=counts.shape[1]) / np.maximum(n, 1)
    var = np.bincount(g, weights=logn**2, minlength=counts.shape[1]) / np.maximum(n, 1) - mean**2
    sd = np.where(n > 0, np.sqrt(np.maximum(var, 0.0)), 1.0)
    return mean.astype(np.float32), np.maximum(sd, 0.01).astype(np.float32)


def count_nll(x: torch.Tensor, mu: torch.Tensor, log_theta: torch.Tensor | None) -> torch.Tensor:
    """Elementwise negative log-likelihood of counts ``x [B, G]`` under NB(mean ``mu [B, G]``, inverse
    dispersion ``exp(log_theta)``, ``[G]``, broadcast), or Poisson(mu) when ``log_theta`` is None."""
    if log_theta is None:
        return mu - x * torch.log(mu) + torch.lgamma(x + 1)
    theta = torch.exp(log_theta)
    log_t_mu = torch.log(theta + mu)
    return -(torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)
             + theta * (log_theta - log_t_mu) + x * (torch.log(mu) - log_t_mu))


def masked_loss(model: MaskedCountEncoder, batch: Batch, loss: str = "nb") -> torch.Tensor:
    """Mean count NLL over the genes of ``batch`` the encoder did not see (masked and zero counts)."""
    mu = (batch.lib.unsqueeze(1) * torch.exp(model(batch))).clamp(min=1e-8)
    nll = count_nll(batch.counts, mu, model.log_theta if loss == "nb" else None)
    return nll[batch.hidden].mean()


# ---------------------------------------------------------------- checks
def check_counts(counts, where: str) -> sp.csr_matrix:
    """``counts`` as CSR float32 after checking that every stored value is a finite, non-negative integer."""
    counts = sp.csr_matrix(counts)
    vals = counts.data
    why = ("contains NaN or infinite values" if not np.all(np.isfinite(vals)) else
           "contains negative values" if (vals < 0).any() else
           "contains non-integer values (looks normalized or log-transformed)" if not np.array_equal(vals, np.round(vals))
           else None)
    if why:
        raise CellgnnInputError(f"pretraining models counts, but layers['counts'] {why}", file=where,
                                field="layers.counts", fix="pretrain on raw UMI counts (preprocess.expect_counts: "
                                "true with count data), or keep graph.features: pca and graph.node_features: genes")
    counts = sp.csr_matrix(counts, dtype=np.float32)
    if counts.nnz == 0:
        raise CellgnnInputError("every count is zero", file=where, field="layers.counts",
                                fix="check the data stage's input")
    return counts


def check_settings(cfg: dict, where: str = "config") -> None:
    """Refuse settings the schema cannot (mask fraction outside (0, 1) for library callers, heads)."""
    frac = cfg["mask_fraction"]
    if not 0 < frac < 1:
        raise CellgnnInputError(f"mask_fraction {frac} is outside (0, 1)", file=where, field="pretrain.mask_fraction",
                                fix="mask a fraction of each cell's expressed genes strictly between 0 and 1, "
                                    "e.g. 0.15")
    if cfg["dim"] % cfg["heads"]:
        raise CellgnnInputError(f"dim {cfg['dim']} is not divisible by heads {cfg['heads']}", file=where,
                                field="pretrain.heads", fix="choose heads dividing pretrain.dim")


# ---------------------------------------------------------------- training
@dataclass
class PretrainResult:
    """A fitted encoder, its loss per epoch and where it started (resumed epoch or None)."""

    model: MaskedCountEncoder
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int | None = None
    seconds: float = 0.0


def _run_key(counts: sp.csr_matrix, cfg: dict, seed: int) -> str:
    """Hash of what a resumable checkpoint must share with this run (not checkpoint_every)."""
    h = hashlib.sha256(json.dumps({k: v for k, v in cfg.items() if k != "checkpoint_every"}, sort_keys=True,
                                  default=str).encode())
    h.update(f"{seed}|{counts.shape}|{counts.nnz}".encode())
    h.update(np.asarray(counts.sum(axis=0)).tobytes())
    return h.hexdigest()[:16]


def fit_pretrain(counts, cfg: dict | None = None, seed: int | None = None, device: torch.device | None = None,
                 resume: str | Path | None = None, where: str = "counts") -> PretrainResult:
    """Pretrain on every cell of ``counts [N, G]`` (raw counts). cfg: the ``pretrain`` config section
    (missing keys take the schema's defaults); seed: default ``cfg["seed"]``. resume: a resumable
    checkpoint written every ``checkpoint_every`` epochs and continued from when it belongs to this
    run (same final weights as an uninterrupted run on CPU); the caller deletes it."""
    from .config import settings
    from .train import _rng_state, _set_rng_state
    from .utils import seed_everything

    cfg = settings("pretrain", cfg)
    check_settings(cfg)
    counts = check_counts(counts, where)
    seed = int(cfg["seed"] if seed is None else seed)
    device = device or torch.device("cpu")
    seed_everything(seed)
    model = MaskedCountEncoder(counts.shape[1], cfg["dim"], cfg["n_latents"], cfg["heads"], cfg["layers"])
    with torch.no_grad():  # token values standardized per gene; each gene starts at its share of all counts
        mean, sd = value_stats(counts, cfg["target_sum"])
        model.value_mean[:-1], model.value_sd[:-1] = torch.from_numpy(mean), torch.from_numpy(sd)
        share = (np.asarray(counts.sum(axis=0)).ravel() + 1.0) / (counts.sum() + counts.shape[1])
        model.gene_bias.copy_(torch.from_numpy(np.log(share).astype(np.float32)))
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    cells = np.flatnonzero(np.diff(counts.indptr) >= 2)  # cells with a gene to mask and one to see
    if cells.size < 2:
        raise CellgnnInputError(f"{cells.size} cells have 2 or more expressed genes (at least 2 are needed)", file=where, field="layers.counts",
                                fix="check the data and QC (preprocess.min_genes)")
    key = _run_key(counts, cfg, seed)
    start, history, resumed = 0, [], None
    if resume is not None:
        state = load_resume(resume, key, "pretraining")
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            history, start = state["history"], state["epoch"] + 1
            resumed = start
            _set_rng_state(state["rng"])
            LOG.info("pretrain: resumed from %s after epoch %d", resume, state["epoch"])
    t0 = time.perf_counter()
    bs = int(cfg["batch_size"])
    per_epoch = cells.size if cfg["cells_per_epoch"] is None else min(cells.size, int(cfg["cells_per_epoch"]))
    bar = tqdm(range(start, cfg["epochs"]), desc="pretrain", mininterval=10, initial=start, total=cfg["epochs"])
    for epoch in bar:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(cells)[:per_epoch]
        model.train()
        total, n = 0.0, 0
        for rows in np.array_split(order, max(1, -(-order.size // bs))):  # near-equal batches (batch norm: >= 2)
            batch = make_batch(counts, rows, cfg["mask_fraction"], cfg["max_genes"], rng, cfg["target_sum"]).to(device)
            opt.zero_grad()
            loss = masked_loss(model, batch, cfg["loss"])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretrain: the loss became {loss.item()} at epoch {epoch}; lower "
                                         "pretrain.lr")
            loss.backward()
            opt.step()
            k = int(batch.hidden.sum())
            total, n = total + float(loss.detach()) * k, n + k
        history.append({"epoch": epoch, "loss": total / max(n, 1)})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", refresh=False)
        if resume is not None and (epoch + 1) % int(cfg["checkpoint_every"]) == 0:
            from .io import torch_save

            torch_save({"key": key, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "history": history, "rng": _rng_state()}, resume)
    model.eval()
    LOG.info("pretrain: %d epochs, masked-count NLL %s", len(history),
             " → ".join(f"{h['loss']:.4f}" for h in history[:: max(1, len(history) // 5)]))
    return PretrainResult(model.cpu(), history, resumed, time.perf_counter() - t0)


@torch.no_grad()
def embed(model: MaskedCountEncoder, counts, batch_size: int = 512, target_sum: float = 1e4,
          device: torch.device | None = None) -> np.ndarray:
    """Cell embedding ``[N, n_latents * dim]`` float32, every expressed gene visible (nothing masked)."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    device = device or torch.device("cpu")
    model = model.to(device).eval()
    out = []
    for i in tqdm(range(0, counts.shape[0], batch_size), desc="embed", mininterval=10):
        b = make_batch(counts, np.arange(i, min(i + batch_size, counts.shape[0])), 0.0, None, None,
                       target_sum).to(device)
        out.append(model.embed(b.genes, b.values, b.pad).cpu())
    model.cpu()
    return torch.cat(out).numpy().astype(np.float32)


# ---------------------------------------------------------------- stage
def run_pretrain(adata_path: str, embedding_path: str, model_path: str, cfg: dict, device_pref: str = "auto"):
    """The pretrain rule: fit on ``layers['counts']`` of the preprocessed AnnData, write the
    embedding (``embedding.h5ad``: no genes, ``obs_names`` = the cells, ``obsm['X_cellgnn_pretrain']``,
    ``uns['pretrain']`` settings and loss per epoch) and ``model.pt`` (weights, genes, settings)."""
    import anndata as ad
    import pandas as pd

    from .config import settings
    from .io import read_h5ad, torch_save, write_h5ad
    from .utils import get_device

    cfg = settings("pretrain", cfg)
    check_settings(cfg)
    adata = read_h5ad(adata_path, rule="the preprocess stage")
    if "counts" not in adata.layers:
        raise CellgnnInputError("no layers['counts']", file=adata_path, field="layers.counts",
                                fix="rerun the preprocess stage (it keeps the raw counts there)")
    counts = check_counts(adata.layers["counts"], adata_path)
    device = get_device(device_pref)
    resume = Path(model_path).with_name("resume.pt")
    result = fit_pretrain(counts, cfg, device=device, resume=resume, where=adata_path)
    emb = embed(result.model, counts, cfg["embed_batch_size"], cfg["target_sum"], device)
    out = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
    out.obsm[OBSM_KEY] = emb
    out.uns["pretrain"] = {"settings": json.dumps(cfg), "loss": np.array([h["loss"] for h in result.history]),
                           "genes": np.asarray(adata.var_names, dtype=str), "seconds": round(result.seconds, 2),
                           "device": str(device)}
    torch_save({"state_dict": result.model.state_dict(), "genes": list(map(str, adata.var_names)), "settings": cfg,
                "history": result.history}, model_path)
    write_h5ad(out, embedding_path)
    resume.unlink(missing_ok=True)
    return result


def load_embedding(path: str | Path, cell_ids) -> np.ndarray:
    """``obsm['X_cellgnn_pretrain']`` of the pretrain stage's ``embedding.h5ad``, rows in the order of
    ``cell_ids``; refuses a file whose cells are not exactly these cells."""
    import anndata as ad

    try:
        emb = ad.read_h5ad(path)
    except Exception as e:  # noqa: BLE001 - any failure here is an unreadable file
        raise CellgnnInputError(f"cannot read the embedding ({e})", file=str(path),
                                fix="delete it and rerun the pretrain stage") from e
    if OBSM_KEY not in emb.obsm:
        raise CellgnnInputError(f"no obsm['{OBSM_KEY}']", file=str(path), field=f"obsm.{OBSM_KEY}",
                                fix="rerun the pretrain stage")
    ids = [str(c) for c in cell_ids]
    have = [str(c) for c in emb.obs_names]
    x = np.asarray(emb.obsm[OBSM_KEY], dtype=np.float32)
    if have != ids:
        pos = {c: i for i, c in enumerate(have)}
        missing = [c for c in ids if c not in pos]
        if missing or len(have) != len(ids):
            raise CellgnnInputError(f"the embedding's {len(have)} cells are not the dataset's {len(ids)} cells "
                                    f"({len(missing)} of the dataset's cells missing, e.g. {missing[:3]})",
                                    file=str(path), field="obs_names",
                                    fix="rerun the pretrain stage on this dataset's preprocessed.h5ad")
        LOG.info("embedding rows reordered to the dataset's cell order")
        x = x[[pos[c] for c in ids]]
    if not np.all(np.isfinite(x)):
        raise CellgnnInputError("the embedding holds NaN or infinite values", file=str(path),
                                field=f"obsm.{OBSM_KEY}", fix="rerun the pretrain stage (lower pretrain.lr)")
    return x
