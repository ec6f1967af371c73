"""ACTIVA: an introspective VAE conditioned on an ACTINN cell-type classifier.

Shapes: cells ``x`` float32 ``[B, G]``, library-size normalized to 20,000 (not logged).

Networks (hidden sizes configurable for tests; defaults are the paper's):

- encoder  G → 1024 → 512 → 256 → 2·128 (Linear→ReLU→BatchNorm blocks; the last layer is a
  plain Linear giving μ and log σ², where the public code also puts ReLU+BN on μ, log σ²),
- decoder  128 → 256 → 512 → 1024 → G (Linear→ReLU→BatchNorm blocks, Linear→ReLU output),
- classifier (ACTINN)  G → 100 → 50 → 25 → classes (ReLU), logits.

Scale: the networks see ``x / s`` and the decoder emits ``ReLU(·) · s``, where ``s`` (``[G]``,
buffer ``gene_scale``) is each gene's standard deviation over the training cells, floored at 1
(in 20,000-units). The output is still in the data's units; ``L_AE`` is therefore the squared
error in units of each gene's spread, so a few highly expressed genes do not drown the rest.
The decoder's output bias starts at the mean training cell (``mean(x) / s``), so that training
learns deviations from the mean cell instead of climbing from zero (dead ReLU outputs).

Losses per batch (KL(μ, log σ²) = −½ Σ_d (1 + log σ² − μ² − σ²), batch mean)::

    L_AE = mean_b Σ_g ((x̂ − x)/s)²       L_CT = mean_b Σ_c (C(x̂) − C(x))²   (logits)
    L_E  = α1·KL(z) + λ_adv·α1·½·w·([m − KL(E(x̂ᵈ))]⁺ + [m − KL(E(x_gᵈ))]⁺) + λ_rec·α2·(L_AE + L_CT)
    L_G  = λ_adv·α1·½·(KL(E(x̂)) + KL(E(x_g)))                         + λ_rec·α2·(L_AE + L_CT)

where x̂ = D(z), x_g = D(z_p) with z_p ~ N(0, I), ᵈ = detached. L_E updates the encoder only
and L_G the decoder only (both gradients are taken before either optimizer steps).
Unlike the public code, the decoder's adversarial term is NOT detached: the decoder learns
to make its samples look real to the encoder. λ_adv, λ_rec are 1 with SoftAdapt off, and
2·w_k with SoftAdapt on (convex weights over the epoch-mean histories of the encoder's
adversarial term and the reconstruction term, updated once per epoch).

Warm-up (``warmup_epochs``): a plain VAE (L = α1·KL + α2·(L_AE + L_CT)) while the
classifier is trained alongside on the real cells (cross-entropy); afterwards the
classifier is frozen.

Generating cells of a population: see :func:`generate`.
"""

from __future__ import annotations

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
FORMAT = "cellgnn-activa-v1"


class NonFiniteLossError(CellgnnInputError):
    """Training produced a non-finite loss; the last good checkpoint was kept."""


@dataclass
class ActivaConfig:
    hidden: list[int] = field(default_factory=lambda: [1024, 512, 256])
    latent: int = 128
    clf_hidden: list[int] = field(default_factory=lambda: [100, 50, 25])
    epochs: int = 30  # total, warm-up included
    warmup_epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-4
    clf_lr: float = 1e-4
    clf_weight_decay: float = 5e-3
    m: float = 110.0
    alpha1: float = 1.0
    alpha2: float = 0.5
    adv_weight: float = 0.5
    softadapt: bool = True
    softadapt_variant: str = "normalized"
    beta: float = 0.1
    window: int = 5
    checkpoint_every: int = 5
    eval_every: int = 1
    seed: int = 0
    device: str = "auto"

    def key(self, n_genes: int, classes: list[str]) -> str:
        """Hash of everything that makes a checkpoint resumable (not epochs/device/eval)."""
        d = asdict(self)
        for k in ("epochs", "device", "checkpoint_every", "eval_every"):
            d.pop(k)
        d.update(n_genes=n_genes, classes=list(classes))
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
        """x ``[B, G]`` (scaled) → μ, log σ² ``[B, latent]``."""
        return self.head(self.body(x)).chunk(2, dim=1)


class Decoder(nn.Module):
    def __init__(self, n_genes: int, hidden: list[int], latent: int):
        super().__init__()
        self.body = _mlp([latent, *reversed(hidden)], bn=True)
        self.out = nn.Sequential(nn.Linear(hidden[0], n_genes), nn.ReLU())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z ``[B, latent]`` → scaled expression ``[B, G]`` (≥ 0)."""
        return self.out(self.body(z))


class ActinnClassifier(nn.Module):
    """ACTINN: G → 100 → 50 → 25 → classes with ReLU; returns logits."""

    def __init__(self, n_genes: int, hidden: list[int], n_classes: int):
        super().__init__()
        self.net = nn.Sequential(_mlp([n_genes, *hidden], bn=False), nn.Linear(hidden[-1], n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Activa(nn.Module):
    """Encoder + decoder + classifier; ``gene_scale`` ``[G]`` maps data units ↔ network units."""

    def __init__(self, n_genes: int, n_classes: int, cfg: ActivaConfig, gene_scale: torch.Tensor,
                 gene_mean: torch.Tensor | None = None):
        super().__init__()
        self.encoder = Encoder(n_genes, list(cfg.hidden), cfg.latent)
        self.decoder = Decoder(n_genes, list(cfg.hidden), cfg.latent)
        self.classifier = ActinnClassifier(n_genes, list(cfg.clf_hidden), n_classes)
        self.register_buffer("gene_scale", gene_scale.float().clone())
        self.latent = cfg.latent
        if gene_mean is not None:  # start the decoder at the mean cell (output bias = mean of x / s)
            with torch.no_grad():
                self.decoder.out[0].bias.copy_(gene_mean.float() / self.gene_scale)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x / self.gene_scale)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z → cells in data units (normalized counts) ``[B, G]``."""
        return self.decoder(z) * self.gene_scale

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Cells in data units → logits ``[B, C]``."""
        return self.classifier(x / self.gene_scale)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per cell ``[B]``."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def gene_scale_from(x: np.ndarray) -> torch.Tensor:
    """Per-gene standard deviation over cells, floored at 1 (data units)."""
    return torch.from_numpy(np.maximum(x.std(axis=0), 1.0).astype(np.float32))


def gene_mean_from(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.mean(axis=0).astype(np.float32))


class ActivaTrainer:
    """Holds the model, optimizers, SoftAdapt and RNG state; ``fit`` trains with checkpoints."""

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: list[str], cfg: ActivaConfig,
                 checkpoint: str | Path | None = None):
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise CellgnnInputError(f"x {x.shape} and y {y.shape} do not align", field="augment")
        if not np.all(np.isfinite(x)):
            raise CellgnnInputError("expression holds non-finite values", field="augment",
                                    fix="check the counts layer of preprocessed.h5ad")
        if x.shape[0] < 2:
            raise CellgnnInputError("need at least 2 training cells", field="augment")
        if cfg.warmup_epochs > cfg.epochs:
            raise CellgnnInputError(f"warmup_epochs {cfg.warmup_epochs} > epochs {cfg.epochs}",
                                    field="augment.activa.warmup_epochs", fix="lower warmup_epochs")
        self.cfg, self.classes = cfg, list(classes)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        seed_everything(cfg.seed)
        self.device = get_device(cfg.device)
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.model = Activa(x.shape[1], len(classes), cfg, gene_scale_from(x), gene_mean_from(x)).to(self.device)
        self.opt_e = torch.optim.Adam(self.model.encoder.parameters(), lr=cfg.lr)
        self.opt_d = torch.optim.Adam(self.model.decoder.parameters(), lr=cfg.lr)
        self.opt_c = torch.optim.Adam(self.model.classifier.parameters(), lr=cfg.clf_lr,
                                      weight_decay=cfg.clf_weight_decay)
        self.softadapt = SoftAdapt(2, cfg.beta, cfg.window, cfg.softadapt_variant) if cfg.softadapt else None
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.key = cfg.key(x.shape[1], self.classes)
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

    def losses(self, x: torch.Tensor, warmup: bool) -> dict[str, torch.Tensor]:
        """Loss terms of one batch ``x`` ``[B, G]`` (data units); see the module docstring."""
        cfg, m = self.cfg, self.model
        mu, logvar = m.encode(x)
        z = mu + (0.5 * logvar).exp() * self._noise(mu.shape)
        x_rec = m.decode(z)
        kl = kl_divergence(mu, logvar).mean()
        ae = ((x_rec - x) / m.gene_scale).pow(2).sum(dim=1).mean()
        ct = (m.classify(x_rec) - m.classify(x).detach()).pow(2).sum(dim=1).mean()
        rec = ae + ct
        out = {"kl": kl, "ae": ae, "ct": ct}
        if warmup:
            out["vae"] = cfg.alpha1 * kl + cfg.alpha2 * rec
            return out
        x_gen = m.decode(self._noise((x.shape[0], m.latent)))
        kl_rec_d = kl_divergence(*m.encode(x_rec.detach())).mean()
        kl_gen_d = kl_divergence(*m.encode(x_gen.detach())).mean()
        adv_enc = 0.5 * cfg.adv_weight * ((cfg.m - kl_rec_d).clamp(min=0) + (cfg.m - kl_gen_d).clamp(min=0))
        adv_gen = 0.5 * (kl_divergence(*m.encode(x_rec)).mean() + kl_divergence(*m.encode(x_gen)).mean())
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

    def _step(self, x: torch.Tensor, y: torch.Tensor, warmup: bool, epoch: int, batch: int) -> dict[str, float]:
        """One optimisation step on batch ``x`` ``[B, G]`` with populations ``y`` ``[B]``."""
        m = self.model
        if warmup:
            terms = self.losses(x, warmup=True)
            logits = m.classify(x)
            terms["clf"] = nn.functional.cross_entropy(logits, y)
            self._check_finite(terms, epoch, batch)
            params = list(m.encoder.parameters()) + list(m.decoder.parameters())
            grads = torch.autograd.grad(terms["vae"], params, retain_graph=True)
            cgrads = torch.autograd.grad(terms["clf"], list(m.classifier.parameters()))
            for p, g in zip(params, grads):
                p.grad = g
            for p, g in zip(m.classifier.parameters(), cgrads):
                p.grad = g
            self.opt_e.step(), self.opt_d.step(), self.opt_c.step()
        else:
            terms = self.losses(x, warmup=False)
            self._check_finite(terms, epoch, batch)
            enc_p, dec_p = list(m.encoder.parameters()), list(m.decoder.parameters())
            ge = torch.autograd.grad(terms["encoder"], enc_p, retain_graph=True)
            gd = torch.autograd.grad(terms["generator"], dec_p)
            for p, g in zip(enc_p, ge):
                p.grad = g
            for p, g in zip(dec_p, gd):
                p.grad = g
            self.opt_e.step(), self.opt_d.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def fit(self, val_fn: Callable[[Activa], float] | None = None, progress: bool = True) -> list[dict]:
        """Train up to ``cfg.epochs`` (continuing a resumed run); returns the per-epoch history.

        ``val_fn(model) -> float`` (lower is better) is called every ``eval_every`` epochs,
        outside the timed training; history rows carry ``train_seconds`` (cumulative).
        """
        from tqdm.auto import tqdm

        cfg, m = self.cfg, self.model
        n = self.x.shape[0]
        bar = tqdm(range(self.epoch, cfg.epochs), desc="ACTIVA", disable=not progress)
        for epoch in bar:
            warmup = epoch < cfg.warmup_epochs
            t0 = time.perf_counter()
            m.train()
            if not warmup:
                m.classifier.eval()
                m.classifier.requires_grad_(False)
            perm = torch.randperm(n, generator=self.shuffle_gen)
            sums: dict[str, float] = {}
            nb = 0
            for b, start in enumerate(range(0, n, cfg.batch_size)):
                idx = perm[start:start + cfg.batch_size]
                if idx.numel() < 2:  # BatchNorm needs 2 cells
                    continue
                xb, yb = self.x[idx].to(self.device), self.y[idx].to(self.device)
                for k, v in self._step(xb, yb, warmup, epoch, b).items():
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
                row["val_score"] = float(val_fn(m))
                m.train()
            self.history.append(row)
            bar.set_postfix({k: f"{row[k]:.3g}" for k in ("kl", "ae") if k in row})
            if self.checkpoint and (self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs):
                self.save(self.checkpoint)
                self.last_checkpoint_epoch = self.epoch
        m.eval()
        return self.history

    # ----- persistence -----
    def state(self) -> dict:
        return {"format": FORMAT, "key": self.key, "config": asdict(self.cfg), "classes": self.classes,
                "n_genes": int(self.x.shape[1]), "epoch": self.epoch, "model": self.model.state_dict(),
                "opt_e": self.opt_e.state_dict(), "opt_d": self.opt_d.state_dict(),
                "opt_c": self.opt_c.state_dict(),
                "softadapt": self.softadapt.state_dict() if self.softadapt else None,
                "history": self.history, "train_seconds": self.train_seconds,
                "shuffle_gen": self.shuffle_gen.get_state(), "noise_gen": self.noise_gen.get_state()}

    def save(self, path: str | Path) -> None:
        """Atomic checkpoint (model, optimizers, SoftAdapt, RNG state, history)."""
        torch_save(self.state(), path)

    def _try_resume(self) -> None:
        state = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
        if state.get("format") != FORMAT or state.get("key") != self.key:
            LOG.warning("checkpoint %s is from a different configuration; starting afresh", self.checkpoint)
            return
        self.model.load_state_dict(state["model"])
        self.opt_e.load_state_dict(state["opt_e"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_c.load_state_dict(state["opt_c"])
        if self.softadapt is not None:
            self.softadapt.load_state_dict(state["softadapt"])
        self.history, self.epoch = state["history"], state["epoch"]
        self.train_seconds = state["train_seconds"]
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self.noise_gen.set_state(state["noise_gen"].to(self.noise_gen.get_state().device))
        self.last_checkpoint_epoch = self.epoch
        LOG.info("resumed ACTIVA from %s at epoch %d", self.checkpoint, self.epoch)


def load_activa(path: str | Path, device: str = "cpu") -> tuple[Activa, dict]:
    """Load a saved ACTIVA (``ActivaTrainer.save``); returns (model in eval mode, state dict)."""
    state = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CellgnnInputError("not an ACTIVA checkpoint", file=str(path),
                                fix="point to an activa.pt written by the augment stage")
    cfg = ActivaConfig(**state["config"])
    model = Activa(state["n_genes"], len(state["classes"]), cfg, torch.ones(state["n_genes"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


@torch.no_grad()
def generate(model: Activa, n: int, classes: list[str] | None = None, population: str | None = None,
             method: str = "prior", x_population: np.ndarray | None = None, threshold: float = 0.5,
             max_draws: int = 200_000, batch: int = 2048, seed: int = 0) -> np.ndarray:
    """Generate ``n`` cells (float32 ``[n, G]``, data units).

    - ``population=None``: unconditional, z ~ N(0, I).
    - ``population`` given: class-conditional by rejection sampling: candidates are decoded
      and kept only when the frozen ACTINN classifier gives the population a probability
      ≥ ``threshold``. Candidates come from
      ``method="prior"``: z ~ N(0, I) (faithful to the public ``generate_subpopulation``;
      inefficient for rare populations), or ``method="posterior"``: z ~ q(z | x_i) for real cells
      x_i of the population drawn with replacement (``x_population``, data units), which
      concentrates candidates on the population so that rare ones are reachable.
      Raises when fewer than ``n`` are accepted within ``max_draws`` candidates.
    """
    if method not in {"prior", "posterior"}:
        raise CellgnnInputError(f"unknown generation method '{method}'", field="augment.activa.generate",
                                fix="use 'prior' or 'posterior'")
    model.eval()
    dev = model.gene_scale.device
    g = torch.Generator(device=dev).manual_seed(seed)
    target = None
    if population is not None:
        if classes is None or population not in classes:
            raise CellgnnInputError(f"population '{population}' does not exist (classes: {classes})",
                                    field="augment.population", fix="choose one of the classifier's classes")
        target = classes.index(population)
    if method == "posterior" and (x_population is None or len(x_population) == 0):
        raise CellgnnInputError("posterior generation needs real cells of the population",
                                field="augment.activa.generate", fix="pass x_population or use method 'prior'")
    if method == "posterior":
        mu_p, logvar_p = model.encode(torch.as_tensor(x_population, dtype=torch.float32, device=dev))
    kept: list[torch.Tensor] = []
    n_kept, draws = 0, 0
    while n_kept < n:
        if draws >= max_draws:
            raise CellgnnInputError(
                f"only {n_kept} of {n} cells of '{population}' accepted after {draws} draws",
                field="augment.activa.generate",
                fix="lower augment.activa.accept_threshold, use method 'posterior', or train longer")
        b = min(batch, max_draws - draws)
        if method == "prior":
            z = torch.randn((b, model.latent), generator=g, device=dev)
        else:
            i = torch.randint(0, mu_p.shape[0], (b,), generator=g, device=dev)
            z = mu_p[i] + (0.5 * logvar_p[i]).exp() * torch.randn((b, model.latent), generator=g, device=dev)
        xg = model.decode(z)
        draws += b
        if target is not None:
            p = model.classify(xg).softmax(dim=1)[:, target]
            xg = xg[p >= threshold]
        kept.append(xg)
        n_kept += xg.shape[0]
    return torch.cat(kept)[:n].cpu().numpy().astype(np.float32)
