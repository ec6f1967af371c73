"""ACTIVA: an introspective VAE conditioned on an ACTINN cell-type classifier.

Data: cells ``x`` float32 ``[B, G]``, counts library-size normalized to ``target_sum``
(20,000; not logged) over the modelled genes, and each cell's library size ``L`` ``[B]`` (its
raw counts over those genes), so that the cell's counts are ``c = x · L / target_sum``.

Networks (hidden sizes configurable; the dataclass defaults are the paper's):

- encoder  log1p(x): G → 1024 → 512 → 256 → 2·128 (Linear→ReLU→BatchNorm blocks, then a plain
  Linear giving μ, log σ²),
- decoder  128 → 256 → 512 → 1024 (Linear→ReLU→BatchNorm blocks) and three outputs:
  gene proportions ρ = softmax(Linear(h)) ``[B, G]``, whose ``target_sum · ρ`` is the cell's
  normalized expression (the paper's output units; every cell sums to ``target_sum``, the
  library-size-normalization layer); a log-normal library size (mean and log variance of
  log L, Linear(h) ``[B, 2]``); and one inverse dispersion θ_g per gene,
- classifier (ACTINN)  log1p(x): G → 100 → 50 → 25 → classes (ReLU), logits.

Observation model: a generated cell is counts ``c ~ NB(mean L·ρ, inverse dispersion θ)``
(Gamma–Poisson) renormalized to ``target_sum``, with L drawn from the library-size head,
so its sparsity, overdispersion and library size are learned from the data rather than
imposed. The decoder starts at the mean training cell (output bias = log mean gene
proportions; library head = the training cells' log-normal fit).

Losses per batch (KL(μ, log σ²) = −½ Σ_d (1 + log σ² − μ² − σ²), batch means)::

    L_AE = −log NB(c | L·ρ, θ) summed over genes − log N(log L | library head)
    L_CT = Σ_k (C(target_sum·ρ) − C(x))_k²                      (ACTINN logits, classifier frozen)
    L_E  = α1·KL(z) + λ_adv·α1·½·w·([m − KL(E(x_r))]⁺ + [m − KL(E(x_g))]⁺) + λ_rec·α2·(L_AE + L_CT)
    L_G  = λ_adv·α1·½·(KL(E(x_r)) + KL(E(x_g)))                         + λ_rec·α2·(L_AE + L_CT)

where x_r and x_g are observed cells (NB counts, normalized) decoded from the posterior
sample z and from z_p ~ N(0, I). Their sampling step passes gradients straight through to
the normalized expression ``target_sum·ρ``, so the encoder judges cells as sparse as real
ones while the decoder still receives the adversarial gradient (the public code detaches
it: not here). L_E updates the encoder only and L_G the decoder only (both gradients are
taken before either optimizer steps). λ_adv, λ_rec are 1 with SoftAdapt off, and 2·w_k with
SoftAdapt on (convex weights over the epoch-mean histories of the encoder's adversarial
term and the reconstruction term, updated once per epoch). L_CT reads the decoder's mean
expression, not a sampled cell: through a sampled cell its gradient turns the decoder's
cells into adversarial examples of the classifier.

Schedule: ACTINN is trained first (``clf_epochs`` of class-balanced cross-entropy on the real
cells) and frozen, so that L_CT has a fixed target and population generation a classifier
that can call rare populations; then ``warmup_epochs`` of a plain VAE
(α1·KL + α2·(L_AE + L_CT)); then the introspective epochs (learning rate ``adv_lr``,
default ``lr``). With a validation score, the best-scoring epoch's weights are restored at
the end.

Generating cells of a population: see :func:`generate`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import CellgnnInputError
from ..io import torch_save
from ..softadapt import SoftAdapt
from ..utils import get_device, seed_everything

LOG = logging.getLogger("cellgnn.augment.activa")
FORMAT = "cellgnn-activa-v2"
OBSERVATIONS = ("nb", "poisson", "mean")
LOGVAR_MAX = 15.0


class NonFiniteLossError(CellgnnInputError):
    """Training produced a non-finite loss; the last good checkpoint was kept."""


@dataclass
class ActivaConfig:
    hidden: list[int] = field(default_factory=lambda: [1024, 512, 256])
    latent: int = 128
    clf_hidden: list[int] = field(default_factory=lambda: [100, 50, 25])
    epochs: int = 30  # VAE epochs in total, warm-up included
    warmup_epochs: int = 10
    clf_epochs: int = 5  # ACTINN epochs before the VAE (then frozen)
    batch_size: int = 128
    lr: float = 2e-4
    adv_lr: float | None = None  # learning rate of the introspective epochs (None = lr)
    clf_lr: float = 1e-4
    clf_weight_decay: float = 5e-3
    m: float = 110.0
    alpha1: float = 1.0
    alpha2: float = 1.0
    adv_weight: float = 0.5
    softadapt: bool = True
    softadapt_variant: str = "normalized"
    beta: float = 0.1
    window: int = 5
    checkpoint_every: int = 5
    eval_every: int = 1
    seed: int = 0
    device: str = "auto"

    def key(self, genes: list[str], classes: list[str]) -> str:
        """Hash of everything that makes a checkpoint resumable (not epochs/device/eval)."""
        d = asdict(self)
        for k in ("epochs", "device", "checkpoint_every", "eval_every"):
            d.pop(k)
        d.update(genes=hashlib.sha256("\x1f".join(genes).encode()).hexdigest(), classes=list(classes))
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _mlp(sizes: list[int], bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if bn:
            layers.append(nn.BatchNorm1d(b))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    def __init__(self, n_genes: int, hidden: list[int], latent: int):
        super().__init__()
        self.body = _mlp([n_genes, *hidden], bn=True)
        self.head = nn.Linear(hidden[-1], 2 * latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log1p(x) ``[B, G]`` → μ, log σ² ``[B, latent]`` (log σ² clamped to ±LOGVAR_MAX so exp stays finite)."""
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-LOGVAR_MAX, LOGVAR_MAX)


class Decoder(nn.Module):
    """z → gene proportions ρ ``[B, G]`` (rows sum to 1) and log-normal library size ``[B, 2]``."""

    def __init__(self, n_genes: int, hidden: list[int], latent: int):
        super().__init__()
        self.body = _mlp([latent, *reversed(hidden)], bn=True)
        self.rho = nn.Linear(hidden[0], n_genes)
        self.library = nn.Linear(hidden[0], 2)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(z)
        return torch.log_softmax(self.rho(h), dim=1), self.library(h)


class ActinnClassifier(nn.Module):
    """ACTINN: G → 100 → 50 → 25 → classes with ReLU; returns logits."""

    def __init__(self, n_genes: int, hidden: list[int], n_classes: int):
        super().__init__()
        self.net = nn.Sequential(_mlp([n_genes, *hidden], bn=False), nn.Linear(hidden[-1], n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Activa(nn.Module):
    """Encoder + decoder (with NB observation model) + classifier; inputs in data units."""

    def __init__(self, n_genes: int, n_classes: int, cfg: ActivaConfig, target_sum: float = 20000.0):
        super().__init__()
        self.encoder = Encoder(n_genes, list(cfg.hidden), cfg.latent)
        self.decoder = Decoder(n_genes, list(cfg.hidden), cfg.latent)
        self.classifier = ActinnClassifier(n_genes, list(cfg.clf_hidden), n_classes)
        self.register_buffer("target_sum", torch.tensor(float(target_sum)))
        self.latent, self.n_genes = cfg.latent, n_genes

    def init_from_data(self, x: np.ndarray, library_size: np.ndarray) -> None:
        """Start the decoder at the mean training cell and the training cells' library sizes."""
        p = (x.astype(np.float64).sum(0) + 1e-3) / (x.astype(np.float64).sum() + 1e-3 * x.shape[1])
        log_l = np.log(np.asarray(library_size, dtype=np.float64))
        with torch.no_grad():
            self.decoder.rho.bias.copy_(torch.from_numpy(np.log(p)).float())
            self.decoder.library.weight.zero_()
            self.decoder.library.bias.copy_(torch.tensor([log_l.mean(), np.log(max(log_l.var(), 1e-4))]))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(torch.log1p(x))

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z → log ρ ``[B, G]`` and (mean, log variance) of log library size ``[B, 2]``."""
        return self.decoder(z)

    def expression(self, z: torch.Tensor) -> torch.Tensor:
        """z → normalized expression ``target_sum · ρ`` ``[B, G]`` (the decoder's mean cell)."""
        return self.decode(z)[0].exp() * self.target_sum

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Cells in data units → logits ``[B, C]``."""
        return self.classifier(torch.log1p(x))

    def theta(self) -> torch.Tensor:
        return self.decoder.log_theta.exp()

    def observe(self, log_rho: torch.Tensor, library: torch.Tensor, generator: torch.Generator,
                observation: str = "nb", straight_through: bool = False) -> torch.Tensor:
        """Observed cells ``[B, G]`` (data units): counts around ``library[:, None] · ρ``, renormalized.

        ``observation``: ``nb`` (the model's Gamma–Poisson), ``poisson`` (no overdispersion) or
        ``mean`` (no sampling: ``target_sum · ρ``). ``straight_through``: the value is the observed
        cell, the gradient that of ``target_sum · ρ`` (bounded, whatever the cell's total count).
        """
        expr = log_rho.exp() * self.target_sum
        if observation == "mean":
            return expr
        with torch.no_grad():
            rate = library[:, None] * log_rho.exp()
            if observation == "nb":
                theta = self.theta().expand_as(rate).contiguous()
                rate = rate * torch._standard_gamma(theta, generator=generator) / theta
            counts = torch.poisson(rate, generator=generator)
            x = counts * self.target_sum / counts.sum(dim=1, keepdim=True).clamp(min=1.0)
        return x + expr - expr.detach() if straight_through else x

    def sample_library(self, lib_params: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Library sizes ``[B]`` from the log-normal head ``[B, 2]``."""
        eps = torch.randn(lib_params.shape[0], generator=generator, device=lib_params.device)
        return torch.exp(lib_params[:, 0] + (0.5 * lib_params[:, 1]).exp() * eps)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per cell ``[B]``."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def nb_nll(counts: torch.Tensor, log_mean: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """−log NB(counts | mean exp(log_mean), inverse dispersion θ), summed over genes ``[B]``."""
    log_theta = theta.log()
    log_t_mu = torch.logaddexp(log_theta, log_mean)
    ll = (torch.lgamma(counts + theta) - torch.lgamma(theta) - torch.lgamma(counts + 1)
          + theta * (log_theta - log_t_mu) + counts * (log_mean - log_t_mu))
    return -ll.sum(dim=1)


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Balanced cross-entropy weights ``n / (C · n_c)`` (0 for absent classes)."""
    n = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.divide(n.sum(), n_classes * n, out=np.zeros_like(n), where=n > 0)
    return torch.from_numpy(w).float()


class ActivaTrainer:
    """Holds the model, optimizers, SoftAdapt and RNG state; ``fit`` trains with checkpoints.

    x float32 ``[N, G]`` normalized to ``target_sum``; library_size ``[N]`` raw counts per cell
    over the same genes; y int ``[N]`` population indices into ``classes``.
    """

    def __init__(self, x: np.ndarray, library_size: np.ndarray, y: np.ndarray, classes: list[str],
                 cfg: ActivaConfig, checkpoint: str | Path | None = None, genes: list[str] | None = None,
                 target_sum: float = 20000.0):
        library_size = np.asarray(library_size, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != y.shape[0] or library_size.shape != (x.shape[0],):
            raise CellgnnInputError(f"x {x.shape}, library_size {library_size.shape} and y {y.shape} do not align",
                                    field="augment")
        if not np.all(np.isfinite(x)):
            raise CellgnnInputError("expression holds non-finite values", field="augment",
                                    fix="check the counts layer of preprocessed.h5ad")
        if not np.all(np.isfinite(library_size)) or np.any(library_size <= 0):
            raise CellgnnInputError("every training cell needs a positive library size", field="augment",
                                    fix="drop cells without counts over the modelled genes")
        if x.shape[0] < 2:
            raise CellgnnInputError("need at least 2 training cells", field="augment")
        if cfg.warmup_epochs > cfg.epochs:
            raise CellgnnInputError(f"warmup_epochs {cfg.warmup_epochs} > epochs {cfg.epochs}",
                                    field="augment.activa.warmup_epochs", fix="lower warmup_epochs")
        self.cfg, self.classes = cfg, list(classes)
        self.genes = list(genes) if genes is not None else [str(i) for i in range(x.shape[1])]
        self.checkpoint = Path(checkpoint) if checkpoint else None
        seed_everything(cfg.seed)
        self.device = get_device(cfg.device)
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.lib = torch.from_numpy(library_size.astype(np.float32))
        self.counts = self.x * self.lib[:, None] / float(target_sum)
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.model = Activa(x.shape[1], len(classes), cfg, target_sum).to(self.device)
        self.model.init_from_data(x, library_size)
        self.enc_params = list(self.model.encoder.parameters())
        self.dec_params = list(self.model.decoder.parameters())
        self.opt_e = torch.optim.Adam(self.enc_params, lr=cfg.lr)
        self.opt_d = torch.optim.Adam(self.dec_params, lr=cfg.lr)
        self.opt_c = torch.optim.Adam(self.model.classifier.parameters(), lr=cfg.clf_lr,
                                      weight_decay=cfg.clf_weight_decay)
        self.softadapt = SoftAdapt(2, cfg.beta, cfg.window, cfg.softadapt_variant) if cfg.softadapt else None
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.epoch = 0  # VAE epochs completed
        self.clf_trained = False
        self.real_logits: torch.Tensor | None = None
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.best: dict | None = None  # {"epoch", "score", "state"} of the best validation score
        self.key = cfg.key(self.genes, self.classes)
        self.last_checkpoint_epoch: int | None = None
        if self.checkpoint and self.checkpoint.exists():
            self._try_resume()

    # ----- losses -----
    def _noise(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.noise_gen, device=self.device)

    def adversarial_weights(self) -> tuple[float, float]:
        """(λ_adv, λ_rec): 1, 1 without SoftAdapt; K·w_k with it."""
        if self.softadapt is None:
            return 1.0, 1.0
        w = self.softadapt.weights()
        return 2.0 * float(w[0]), 2.0 * float(w[1])

    def losses(self, x: torch.Tensor, lib: torch.Tensor, counts: torch.Tensor, warmup: bool,
               real_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms of one batch: cells ``x``, library sizes ``lib``, counts ``[B, G]``; see the module docstring.

        ``real_logits``: the frozen classifier's logits of ``x`` when already known.
        """
        cfg, m = self.cfg, self.model
        if real_logits is None:
            with torch.no_grad():
                real_logits = m.classify(x)
        mu, logvar = m.encode(x)
        z = mu + (0.5 * logvar).exp() * self._noise(mu.shape)
        log_rho, lib_p = m.decode(z)
        kl = kl_divergence(mu, logvar).mean()
        log_l = lib.log()
        lib_nll = 0.5 * ((log_l - lib_p[:, 0]).pow(2) / lib_p[:, 1].exp() + lib_p[:, 1])
        ae = (nb_nll(counts, log_l[:, None] + log_rho, m.theta()) + lib_nll).mean()
        ct = (m.classify(log_rho.exp() * m.target_sum) - real_logits).pow(2).sum(dim=1).mean()
        rec = ae + ct
        out = {"kl": kl, "ae": ae, "ct": ct}
        if warmup:
            out["vae"] = cfg.alpha1 * kl + cfg.alpha2 * rec
            return out
        x_rec = m.observe(log_rho, lib, self.noise_gen, straight_through=True)
        log_rho_g, lib_g = m.decode(self._noise((x.shape[0], m.latent)))
        x_gen = m.observe(log_rho_g, m.sample_library(lib_g.detach(), self.noise_gen), self.noise_gen,
                          straight_through=True)
        kl_rec = kl_divergence(*m.encode(x_rec)).mean()
        kl_gen = kl_divergence(*m.encode(x_gen)).mean()
        adv_enc = 0.5 * cfg.adv_weight * ((cfg.m - kl_rec).clamp(min=0) + (cfg.m - kl_gen).clamp(min=0))
        adv_gen = 0.5 * (kl_rec + kl_gen)
        lam_adv, lam_rec = self.adversarial_weights()
        out.update(adv_enc=adv_enc, adv_gen=adv_gen,
                   encoder=cfg.alpha1 * kl + lam_adv * cfg.alpha1 * adv_enc + lam_rec * cfg.alpha2 * rec,
                   generator=lam_adv * cfg.alpha1 * adv_gen + lam_rec * cfg.alpha2 * rec)
        return out

    # ----- training -----
    def _check_finite(self, terms: dict[str, torch.Tensor], epoch: int, batch: int) -> None:
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
        if bad:
            kept = (f"the last good checkpoint (epoch {self.last_checkpoint_epoch}) is kept at {self.checkpoint}"
                    if self.last_checkpoint_epoch is not None else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"non-finite ACTIVA loss ({', '.join(bad)}) at epoch {epoch + 1}, batch {batch}; "
                f"training stopped, {kept}", field="augment.activa",
                fix="lower augment.activa.lr or alpha2, or check the input for extreme values")

    def _step(self, idx: torch.Tensor, warmup: bool, epoch: int, batch: int) -> dict[str, float]:
        """One optimisation step on the training cells ``idx``."""
        x, lib, counts, logits = (t[idx].to(self.device) for t in (self.x, self.lib, self.counts, self.real_logits))
        terms = self.losses(x, lib, counts, warmup, logits)
        self._check_finite(terms, epoch, batch)
        if warmup:
            grads = torch.autograd.grad(terms["vae"], self.enc_params + self.dec_params)
            ge, gd = grads[:len(self.enc_params)], grads[len(self.enc_params):]
        else:  # each loss updates its own network only; both gradients before either step
            ge = torch.autograd.grad(terms["encoder"], self.enc_params, retain_graph=True)
            gd = torch.autograd.grad(terms["generator"], self.dec_params)
        for p, g in zip(self.enc_params + self.dec_params, list(ge) + list(gd)):
            p.grad = g
        self.opt_e.step(), self.opt_d.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def fit_classifier(self) -> float:
        """Train ACTINN on the real cells (class-balanced cross-entropy), freeze it; returns train accuracy."""
        m, cfg = self.model, self.cfg
        w = class_weights(self.y.numpy(), len(self.classes)).to(self.device)
        m.classifier.train()
        n = self.x.shape[0]
        for _ in range(cfg.clf_epochs):
            perm = torch.randperm(n, generator=self.shuffle_gen)
            for start in range(0, n, cfg.batch_size):
                idx = perm[start:start + cfg.batch_size]
                loss = nn.functional.cross_entropy(m.classify(self.x[idx].to(self.device)),
                                                   self.y[idx].to(self.device), weight=w)
                self.opt_c.zero_grad()
                loss.backward()
                self.opt_c.step()
        m.classifier.eval().requires_grad_(False)
        self.clf_trained = True
        self._cache_logits()
        return float((self.real_logits.argmax(1) == self.y).float().mean())

    @torch.no_grad()
    def _cache_logits(self) -> None:
        """The frozen classifier's logits of every training cell ``[N, C]`` (the L_CT target)."""
        self.real_logits = torch.cat([self.model.classify(self.x[i:i + 4096].to(self.device)).cpu()
                                      for i in range(0, self.x.shape[0], 4096)])

    def fit(self, val_fn: Callable[[Activa], float] | None = None, progress: bool = True) -> list[dict]:
        """Train up to ``cfg.epochs`` (continuing a resumed run); returns the per-epoch history.

        ``val_fn(model) -> float`` (lower is better) is called every ``eval_every`` epochs,
        outside the timed training; history rows carry ``train_seconds`` (cumulative, the
        classifier's epochs included). At the end the best-scoring epoch's weights are restored.
        """
        from tqdm.auto import tqdm

        cfg, m = self.cfg, self.model
        if not self.clf_trained:
            t0 = time.perf_counter()
            acc = self.fit_classifier()
            self.train_seconds += time.perf_counter() - t0
            LOG.info("ACTINN: %d epochs, training accuracy %.3f", cfg.clf_epochs, acc)
        m.classifier.eval().requires_grad_(False)
        if self.real_logits is None:
            self._cache_logits()
        n = self.x.shape[0]
        bar = tqdm(range(self.epoch, cfg.epochs), desc="ACTIVA", disable=not progress)
        for epoch in bar:
            warmup = epoch < cfg.warmup_epochs
            for opt in (self.opt_e, self.opt_d):
                for group in opt.param_groups:
                    group["lr"] = cfg.lr if warmup or cfg.adv_lr is None else cfg.adv_lr
            t0 = time.perf_counter()
            m.encoder.train(), m.decoder.train()
            perm = torch.randperm(n, generator=self.shuffle_gen)
            sums: dict[str, float] = {}
            nb = 0
            for b, start in enumerate(range(0, n, cfg.batch_size)):
                idx = perm[start:start + cfg.batch_size]
                if idx.numel() < 2:  # BatchNorm needs 2 cells
                    continue
                for k, v in self._step(idx, warmup, epoch, b).items():
                    sums[k] = sums.get(k, 0.0) + v
                nb += 1
            self.train_seconds += time.perf_counter() - t0
            row = {"epoch": epoch + 1, "phase": "warmup" if warmup else "introspective",
                   "train_seconds": self.train_seconds, **{k: v / max(nb, 1) for k, v in sums.items()}}
            if not warmup:
                lam = self.adversarial_weights()
                row.update(lambda_adv=lam[0], lambda_rec=lam[1])
                if self.softadapt is not None:
                    self.softadapt.record([row["adv_enc"], row["ae"] + row["ct"]])
            self.epoch = epoch + 1
            if val_fn is not None and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs):
                m.eval()
                row["val_score"] = float(val_fn(m))
                if self.best is None or row["val_score"] < self.best["score"]:
                    self.best = {"epoch": self.epoch, "score": row["val_score"],
                                 "state": copy.deepcopy(m.state_dict())}
            self.history.append(row)
            bar.set_postfix({k: f"{row[k]:.3g}" for k in ("kl", "ae", "val_score") if k in row})
            if self.checkpoint and (self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs):
                self.save(self.checkpoint)
                self.last_checkpoint_epoch = self.epoch
        if self.best is not None:
            m.load_state_dict(self.best["state"])
        m.eval()
        return self.history

    # ----- persistence -----
    def state(self) -> dict:
        return {"format": FORMAT, "key": self.key, "config": asdict(self.cfg), "classes": self.classes,
                "genes": self.genes, "n_genes": int(self.x.shape[1]),
                "target_sum": float(self.model.target_sum), "epoch": self.epoch,
                "clf_trained": self.clf_trained, "model": self.model.state_dict(),
                "opt_e": self.opt_e.state_dict(), "opt_d": self.opt_d.state_dict(),
                "opt_c": self.opt_c.state_dict(),
                "softadapt": self.softadapt.state_dict() if self.softadapt else None,
                "history": self.history, "train_seconds": self.train_seconds, "best": self.best,
                "shuffle_gen": self.shuffle_gen.get_state(), "noise_gen": self.noise_gen.get_state()}

    def save(self, path: str | Path) -> None:
        """Atomic checkpoint (model, optimizers, SoftAdapt, RNG state, history, best weights)."""
        torch_save(self.state(), path)

    def _try_resume(self) -> None:
        state = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
        if state.get("format") != FORMAT or state.get("key") != self.key:
            LOG.warning("checkpoint %s is from a different configuration or data; starting afresh", self.checkpoint)
            return
        self.model.load_state_dict(state["model"])
        self.opt_e.load_state_dict(state["opt_e"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_c.load_state_dict(state["opt_c"])
        if self.softadapt is not None:
            self.softadapt.load_state_dict(state["softadapt"])
        self.history, self.epoch, self.clf_trained = state["history"], state["epoch"], state["clf_trained"]
        self.train_seconds, self.best = state["train_seconds"], state["best"]
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self.noise_gen.set_state(state["noise_gen"].to(self.noise_gen.get_state().device))
        self.last_checkpoint_epoch = self.epoch
        LOG.info("resumed ACTIVA from %s at epoch %d", self.checkpoint, self.epoch)


def load_activa(path: str | Path, device: str = "cpu", genes: list[str] | None = None) -> tuple[Activa, dict]:
    """Load a saved ACTIVA (``ActivaTrainer.save``); returns (model in eval mode, state dict).

    ``genes``: the genes the caller will generate or encode with; refused unless they are the
    checkpoint's genes in the same order.
    """
    state = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CellgnnInputError("not an ACTIVA checkpoint of this version", file=str(path),
                                fix="point to an activa.pt written by the augment stage (rerun it)")
    if genes is not None and list(genes) != list(state["genes"]):
        diff = len(set(genes) ^ set(state["genes"]))
        raise CellgnnInputError(f"the checkpoint was trained on {len(state['genes'])} other genes than the "
                                f"{len(genes)} given ({diff} differ{'' if diff else '; same genes, other order'})",
                                file=str(path), field="genes",
                                fix="select the checkpoint's genes (state['genes']) in its order, or retrain")
    model = Activa(state["n_genes"], len(state["classes"]), ActivaConfig(**state["config"]), state["target_sum"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


@torch.no_grad()
def generate(model: Activa, n: int, classes: list[str] | None = None, population: str | None = None,
             method: str = "prior", x_population: np.ndarray | None = None, threshold: float = 0.5,
             max_draws: int = 200_000, batch: int = 2048, seed: int = 0, observation: str = "nb",
             library_sizes: np.ndarray | None = None) -> np.ndarray:
    """Generate ``n`` cells (float32 ``[n, G]``, data units: counts normalized to ``target_sum``).

    - ``population=None``: unconditional, z ~ N(0, I).
    - ``population`` given: class-conditional by rejection sampling: candidates are kept only
      when the frozen ACTINN classifier gives the population a probability ≥ ``threshold``.
      Candidates come from ``method="prior"``: z ~ N(0, I) (the public ``generate_subpopulation``;
      inefficient for rare populations), or ``method="posterior"``: z ~ q(z | x_i) for real cells
      x_i of the population drawn with replacement (``x_population``, data units), which
      concentrates candidates on the population so that rare ones are reachable.
      Raises when fewer than ``n`` are accepted within ``max_draws`` candidates.
    - ``observation``: ``nb`` (the model's counts), ``poisson`` or ``mean`` (see ``Activa.observe``);
      ``library_sizes``: draw library sizes from these (raw counts) instead of the model's head.
    """
    if method not in {"prior", "posterior"}:
        raise CellgnnInputError(f"unknown generation method '{method}'", field="augment.activa.generate",
                                fix="use 'prior' or 'posterior'")
    if observation not in OBSERVATIONS:
        raise CellgnnInputError(f"unknown observation '{observation}'", field="augment.activa.generate",
                                fix=f"use one of {', '.join(OBSERVATIONS)}")
    model.eval()
    dev = model.target_sum.device
    g = torch.Generator(device=dev).manual_seed(seed)
    target = None
    if population is not None:
        if classes is None or population not in classes:
            raise CellgnnInputError(f"population '{population}' does not exist (classes: {classes})",
                                    field="augment.population", fix="choose one of the classifier's classes")
        target = classes.index(population)
    if method == "posterior":
        if x_population is None or len(x_population) == 0:
            raise CellgnnInputError("posterior generation needs real cells of the population",
                                    field="augment.activa.generate", fix="pass x_population or use method 'prior'")
        if np.ndim(x_population) != 2 or np.shape(x_population)[1] != model.n_genes:
            raise CellgnnInputError(f"cells of the population have shape {np.shape(x_population)}, the model "
                                    f"has {model.n_genes} genes", field="genes",
                                    fix="give the population's cells over the checkpoint's genes, in its order")
        mu_p, logvar_p = model.encode(torch.as_tensor(x_population, dtype=torch.float32, device=dev))
    libs = None if library_sizes is None else torch.as_tensor(np.asarray(library_sizes, dtype=np.float32), device=dev)
    kept: list[torch.Tensor] = []
    n_kept, draws = 0, 0
    while n_kept < n:
        if draws >= max_draws:
            raise CellgnnInputError(
                f"only {n_kept} of {n} cells of '{population}' accepted after {draws} draws",
                field="augment.activa.generate",
                fix="lower augment.accept_threshold, use generation 'posterior', or train longer")
        need = n - n_kept  # unfiltered: exactly what is missing; filtered: a few times that
        b = min(batch, max_draws - draws, need if target is None else max(4 * need, 256))
        if method == "prior":
            z = torch.randn((b, model.latent), generator=g, device=dev)
        else:
            i = torch.randint(0, mu_p.shape[0], (b,), generator=g, device=dev)
            z = mu_p[i] + (0.5 * logvar_p[i]).exp() * torch.randn((b, model.latent), generator=g, device=dev)
        log_rho, lib_p = model.decode(z)
        lib = (model.sample_library(lib_p, g) if libs is None
               else libs[torch.randint(0, len(libs), (b,), generator=g, device=dev)])
        xg = model.observe(log_rho, lib, g, observation)
        draws += b
        if target is not None:
            p = model.classify(xg).softmax(dim=1)[:, target]
            xg = xg[p >= threshold]
        kept.append(xg)
        n_kept += xg.shape[0]
    return torch.cat(kept)[:n].cpu().numpy().astype(np.float32)
