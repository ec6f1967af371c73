"""scGAN-style baseline: a Wasserstein GAN with gradient penalty (Marouf et al. 2020).

Generator 128 → 256 → 512 → 1024 → G (Linear→ReLU→BatchNorm blocks, Linear→ReLU output),
followed by library-size normalization (LSN): every generated cell is rescaled to sum
``target_sum`` (20,000), as the data are. Critic G → 1024 → 512 → 256 → 1 (Linear→ReLU,
no BatchNorm, as WGAN-GP requires), reading ``x / s`` with the same per-gene scale ``s`` as
ACTIVA. Loss: WGAN-GP with λ = 10 and ``n_critic`` critic steps per generator step;
AMSGrad (β = 0.5, 0.9). Layer sizes are ACTIVA's decoder/encoder sizes (configurable). The
generator's output bias starts at the mean training cell (in units of ``s``), as ACTIVA's
decoder does, so neither model starts from an all-zero output. With a validation score, the
generator of the best-scoring epoch is restored at the end (as for ACTIVA).

Its cells are the generator's normalized expression, as published; the augmentation stage can
pass them through Poisson counts with real library sizes
(:func:`~cellgnn.augment.data.sample_counts`) so that they are as sparse as real cells.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import CellgnnInputError
from ..utils import get_device, seed_everything
from .activa import NonFiniteLossError, _mlp

LOG = logging.getLogger("cellgnn.augment.gan")


def gene_scale_from(x: np.ndarray) -> torch.Tensor:
    """Per-gene standard deviation over cells ``[G]``, floored at 1 (data units)."""
    return torch.from_numpy(np.maximum(x.std(axis=0), 1.0).astype(np.float32))


def gene_mean_from(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.mean(axis=0).astype(np.float32))


@dataclass
class GanConfig:
    hidden: list[int] = field(default_factory=lambda: [1024, 512, 256])
    latent: int = 128
    epochs: int = 30  # passes of the critic over the training cells
    batch_size: int = 128
    lr: float = 1e-4
    n_critic: int = 5
    gp_lambda: float = 10.0
    eval_every: int = 1
    seed: int = 0
    device: str = "auto"


class Generator(nn.Module):
    def __init__(self, n_genes: int, hidden: list[int], latent: int, target_sum: float,
                 init_bias: torch.Tensor | None = None):
        super().__init__()
        self.body = _mlp([latent, *reversed(hidden)], bn=True)
        self.out = nn.Sequential(nn.Linear(hidden[0], n_genes), nn.ReLU())
        self.latent, self.target_sum = latent, float(target_sum)
        if init_bias is not None:  # start at the mean cell, as ACTIVA's decoder does
            with torch.no_grad():
                self.out[0].bias.copy_(init_bias.float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z ``[B, latent]`` → cells ``[B, G]`` each summing to ``target_sum``."""
        x = self.out(self.body(z))
        return x * self.target_sum / x.sum(dim=1, keepdim=True).clamp(min=1e-8)


class Critic(nn.Module):
    def __init__(self, n_genes: int, hidden: list[int], gene_scale: torch.Tensor):
        super().__init__()
        self.body = _mlp([n_genes, *hidden], bn=False)
        self.out = nn.Linear(hidden[-1], 1)
        self.register_buffer("gene_scale", gene_scale.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x / self.gene_scale)).squeeze(1)


class GanTrainer:
    """WGAN-GP training; ``fit`` returns the per-epoch history (like ``ActivaTrainer``)."""

    def __init__(self, x: np.ndarray, cfg: GanConfig, target_sum: float = 20000.0):
        if not np.all(np.isfinite(x)):
            raise CellgnnInputError("expression holds non-finite values", field="augment")
        self.cfg = cfg
        seed_everything(cfg.seed)
        self.device = get_device(cfg.device)
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        scale = gene_scale_from(x)
        self.generator = Generator(x.shape[1], list(cfg.hidden), cfg.latent, target_sum,
                                   gene_mean_from(x) / scale).to(self.device)
        self.critic = Critic(x.shape[1], list(cfg.hidden), scale).to(self.device)
        betas = (0.5, 0.9)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas, amsgrad=True)
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, betas=betas, amsgrad=True)
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.best: dict | None = None

    def _noise(self, *shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.noise_gen, device=self.device)

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        eps = torch.rand((real.shape[0], 1), generator=self.noise_gen, device=self.device)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (g,) = torch.autograd.grad(self.critic(mix).sum(), mix, create_graph=True)
        return ((g.norm(dim=1) - 1) ** 2).mean()

    def fit(self, val_fn: Callable[[Generator], float] | None = None, progress: bool = True) -> list[dict]:
        """Train ``cfg.epochs``; ``val_fn`` (lower is better) as for ``ActivaTrainer.fit``."""
        from tqdm.auto import tqdm

        cfg, n = self.cfg, self.x.shape[0]
        for epoch in tqdm(range(cfg.epochs), desc="scGAN", disable=not progress):
            t0 = time.perf_counter()
            self.generator.train(), self.critic.train()
            perm = torch.randperm(n, generator=self.shuffle_gen)
            sums = {"critic": 0.0, "generator": 0.0, "gp": 0.0}
            n_c = n_g = 0
            for b, start in enumerate(range(0, n, cfg.batch_size)):
                real = self.x[perm[start:start + cfg.batch_size]].to(self.device)
                if real.shape[0] < 2:
                    continue
                fake = self.generator(self._noise(real.shape[0], cfg.latent)).detach()
                gp = self._gradient_penalty(real, fake)
                loss_c = self.critic(fake).mean() - self.critic(real).mean() + cfg.gp_lambda * gp
                self._check(loss_c, "critic", epoch)
                self.opt_c.zero_grad()
                loss_c.backward()
                self.opt_c.step()
                sums["critic"] += float(loss_c.detach())
                sums["gp"] += float(gp.detach())
                n_c += 1
                if (b + 1) % cfg.n_critic == 0:
                    loss_g = -self.critic(self.generator(self._noise(cfg.batch_size, cfg.latent))).mean()
                    self._check(loss_g, "generator", epoch)
                    self.opt_g.zero_grad()
                    loss_g.backward()
                    self.opt_g.step()
                    sums["generator"] += float(loss_g.detach())
                    n_g += 1
            self.train_seconds += time.perf_counter() - t0
            row = {"epoch": epoch + 1, "train_seconds": self.train_seconds, "critic": sums["critic"] / max(n_c, 1),
                   "gp": sums["gp"] / max(n_c, 1), "generator": sums["generator"] / max(n_g, 1),
                   "generator_steps": n_g}
            if val_fn is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                self.generator.eval()
                row["val_score"] = float(val_fn(self.generator))
                if self.best is None or row["val_score"] < self.best["score"]:
                    self.best = {"epoch": epoch + 1, "score": row["val_score"],
                                 "state": copy.deepcopy(self.generator.state_dict())}
            self.history.append(row)
        if self.best is not None:
            self.generator.load_state_dict(self.best["state"])
        self.generator.eval()
        return self.history

    def _check(self, loss: torch.Tensor, name: str, epoch: int) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite scGAN {name} loss at epoch {epoch + 1}; training stopped",
                                     field="augment.gan", fix="lower augment.gan.lr")

    def state(self) -> dict:
        return {"config": asdict(self.cfg), "generator": self.generator.state_dict(),
                "critic": self.critic.state_dict(), "history": self.history}


@torch.no_grad()
def generate_gan(generator: Generator, n: int, seed: int = 0, batch: int = 4096) -> np.ndarray:
    """``n`` cells ``[n, G]`` float32 (data units, each summing to ``target_sum``)."""
    generator.eval()
    dev = next(generator.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    out = [generator(torch.randn((min(batch, n - i), generator.latent), generator=g, device=dev))
           for i in range(0, n, batch)]
    return torch.cat(out).cpu().numpy().astype(np.float32)
