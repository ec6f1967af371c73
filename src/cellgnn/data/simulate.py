"""Simulated single-cell studies with planted, recorded ground truth.

Two presets, both gamma–Poisson (negative binomial) UMI counts:

``infection``
    An airway-organoid-like SARS-CoV-2 time course: mock, 1, 2, 3 dpi per donor;
    cell types of the bronchial epithelium; the infected fraction rises with time and
    depends on the cell type (ciliated cells most susceptible); infected cells switch on
    a shared viral-response programme plus cell-type-specific response genes, growing
    with time; bystander cells show a weaker interferon response. Labels are
    ``mock``, ``bystander_{t}dpi``, ``infected_{t}dpi`` (7 classes).
``severity``
    A patient-severity study (healthy / moderate / severe donors, as in BALF): the label
    is constant within a donor; severity genes respond per cell type, stronger in severe.

Every cell gets a donor batch effect (per-gene multiplicative), a log-normal library
size, cell-type markers, and a few low-quality cells (high mitochondrial fraction or
almost empty) so that QC has something to remove. Every response is scaled by its cell type's
``RESPONSE_SCALE`` (0.7 to 1.0), so the cell types that respond most are known. The planted
response genes are
stored in ``adata.uns["ground_truth"]`` (arrays ``class``, ``cell_type``, ``gene``,
``log2_fold_change``) so that explanations can be scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CellgnnInputError

INFECTION_CELL_TYPES = {  # name: (proportion, relative susceptibility to infection)
    "Basal": (0.22, 0.3),
    "Ciliated": (0.30, 1.0),
    "Club": (0.18, 0.6),
    "Goblet": (0.14, 0.5),
    "Ionocyte": (0.06, 0.2),
    "Tuft": (0.10, 0.3),
}
SEVERITY_CELL_TYPES = {
    "Macrophage": (0.35, 1.0),
    "Neutrophil": (0.15, 0.8),
    "T cell": (0.20, 0.6),
    "Monocyte": (0.12, 0.9),
    "Epithelial": (0.10, 0.4),
    "Dendritic": (0.08, 0.5),
}
# strength of every planted response in a cell type, relative to the strongest (the truth of
# "which cell types respond most"; as in PBMCs, where monocytes respond to interferon most)
RESPONSE_SCALE = {"Ciliated": 1.0, "Club": 0.9, "Goblet": 0.85, "Basal": 0.8, "Tuft": 0.75, "Ionocyte": 0.7,
                  "Monocyte": 1.0, "Macrophage": 0.95, "Dendritic": 0.9, "Neutrophil": 0.85, "Epithelial": 0.75,
                  "T cell": 0.7}
TIMEPOINTS = (1, 2, 3)
INFECTED_FRACTION = {1: 0.08, 2: 0.18, 3: 0.30}  # mean over cell types, scaled by susceptibility
RESPONSE_STRENGTH = {1: 0.6, 2: 0.8, 3: 1.0}  # fraction of the full response reached at each dpi
N_MARKERS = 25  # marker genes per cell type
BYSTANDER_FACTOR = 0.5  # bystander interferon response relative to infected cells
SEVERITY_LEVELS = {"healthy": 0.0, "moderate": 0.6, "severe": 1.0}


@dataclass(frozen=True)
class _Programme:
    """Gene indices and log2 fold changes of one planted expression programme."""

    genes: np.ndarray
    log2fc: np.ndarray


def simulate(preset: str = "infection", n_cells: int = 4000, n_genes: int = 1500, n_donors: int = 4,
             seed: int = 0, mean_library_size: float = 2000.0, dispersion: float = 0.3,
             n_response_genes: int = 30, response_log2fc: float = 2.5,
             batch_effect_sd: float = 0.25, sample_effect_sd: float = 0.1,
             low_quality_fraction: float = 0.02, response_min_umi: float = 1.0) -> ad.AnnData:
    """Simulate a study; return raw counts as AnnData (``obs``: label, donor, cell_type, condition).

    n_response_genes: planted genes per responding cell type and state (shared core is a
    third of them). response_log2fc: log2 fold change of the strongest (3 dpi / severe)
    response; bystander interferon response is half of it. batch_effect_sd /
    sample_effect_sd: SD of the per-gene natural-log multiplicative effect of each donor
    and of each sample (donor × condition library); libraries of one donor differ less than
    donors do (0.1 against 0.25). With library effects as large as donor effects, a
    classifier on the ``cells`` split reads the time point off each library's technical
    signature, and the weak 1 dpi bystander response is within library noise even for an
    oracle that knows every label (``tests/test_simulate.py``). response_min_umi: response genes are
    drawn from genes expected at no fewer UMIs than this in an unstimulated cell of mean
    library size (0 = any gene); a fold change planted on a gene at 0.01 UMI per cell is
    invisible in counts, so a truth set that includes such genes scores the simulator,
    not the explanation. Genes above the threshold come first, the rest fill up if too few.
    """
    check_params(preset, n_genes, n_donors, n_response_genes)
    n_core = max(1, n_response_genes // 3)
    rng = np.random.default_rng(seed)
    cell_types = INFECTION_CELL_TYPES if preset == "infection" else SEVERITY_CELL_TYPES
    ct_names = list(cell_types)

    genes = _gene_names(n_genes)
    mt_genes = np.arange(13)  # the first 13 genes are MT-
    # baseline expression: log-normal gene means, MT genes highly expressed
    base = rng.lognormal(mean=0.0, sigma=1.8, size=n_genes)
    base[mt_genes] *= 8.0
    base /= base.sum()

    # cell-type markers: N_MARKERS genes per type after the MT block
    marker_start = 13
    ct_log2 = np.zeros((len(ct_names), n_genes))
    for c in range(len(ct_names)):
        g = np.arange(marker_start + N_MARKERS * c, marker_start + N_MARKERS * (c + 1))
        ct_log2[c, g] = rng.uniform(2.0, 4.0, size=g.size)
    free = np.arange(marker_start + N_MARKERS * len(ct_names), n_genes)
    free = rng.permutation(free)
    expressed = base[free] * mean_library_size >= response_min_umi
    free = np.concatenate([free[expressed], free[~expressed]])

    # planted response programmes
    ifn = _Programme(free[:n_response_genes], rng.uniform(0.7, 1.0, n_response_genes) * response_log2fc)
    core = _Programme(free[n_response_genes:n_response_genes + n_core],
                      rng.uniform(0.7, 1.0, n_core) * response_log2fc)
    offset = n_response_genes + n_core
    n_specific = n_response_genes - n_core
    specific = {}
    for c, name in enumerate(ct_names):
        g = free[offset + c * n_specific: offset + (c + 1) * n_specific]
        specific[name] = _Programme(g, rng.uniform(0.7, 1.0, n_specific) * response_log2fc)

    donors = [f"donor{d + 1}" for d in range(n_donors)]
    donor_log = rng.normal(0.0, batch_effect_sd, size=(n_donors, n_genes))
    ct_p = np.array([cell_types[n][0] for n in ct_names])
    ct_p /= ct_p.sum()

    # ----- assign cells to donor × condition, cell type and state -----
    if preset == "infection":
        conditions = ["mock"] + [f"{t}dpi" for t in TIMEPOINTS]
        donor_idx = rng.integers(0, n_donors, n_cells)
        cond_idx = rng.integers(0, len(conditions), n_cells)
        condition = np.array(conditions)[cond_idx]
        donor_severity = None
    else:
        levels = list(SEVERITY_LEVELS)
        # balanced-ish donor severities: healthy, moderate, severe, severe, ...
        donor_level = np.array([levels[d % 3] if d < 3 else ["healthy", "moderate", "severe"][d % 3]
                                for d in range(n_donors)])
        donor_idx = rng.integers(0, n_donors, n_cells)
        condition = donor_level[donor_idx]
        donor_severity = donor_level
    ct_idx = rng.choice(len(ct_names), size=n_cells, p=ct_p)

    # one library per donor × condition, each with its own technical effect
    _, sample_idx = np.unique(np.char.add(np.array(donors)[donor_idx], condition.astype(str)), return_inverse=True)
    sample_log = rng.normal(0.0, sample_effect_sd, size=(sample_idx.max() + 1, n_genes))
    log2_mu = (np.log2(base)[None, :] + ct_log2[ct_idx]
               + (donor_log[donor_idx] + sample_log[sample_idx]) / np.log(2))
    label = np.empty(n_cells, dtype=object)
    strength = np.zeros(n_cells)
    truth_rows: list[tuple[str, str, str, float]] = []

    if preset == "infection":
        label[condition == "mock"] = "mock"
        for t in TIMEPOINTS:
            in_t = condition == f"{t}dpi"
            susc = np.array([cell_types[ct_names[c]][1] for c in ct_idx[in_t]])
            p_inf = np.clip(INFECTED_FRACTION[t] * susc / np.average(
                [v[1] for v in cell_types.values()], weights=ct_p), 0, 0.95)
            infected = rng.random(in_t.sum()) < p_inf
            idx = np.flatnonzero(in_t)
            label[idx[infected]] = f"infected_{t}dpi"
            label[idx[~infected]] = f"bystander_{t}dpi"
            strength[idx] = RESPONSE_STRENGTH[t]
        for i in range(n_cells):
            lab = label[i]
            if lab == "mock":
                continue
            s = strength[i] * RESPONSE_SCALE[ct_names[ct_idx[i]]]
            if lab.startswith("bystander"):
                log2_mu[i, ifn.genes] += BYSTANDER_FACTOR * s * ifn.log2fc
            else:
                log2_mu[i, ifn.genes] += s * ifn.log2fc
                log2_mu[i, core.genes] += s * core.log2fc
                prog = specific[ct_names[ct_idx[i]]]
                log2_mu[i, prog.genes] += s * prog.log2fc
        for t in TIMEPOINTS:
            for name in ct_names:
                s = RESPONSE_STRENGTH[t] * RESPONSE_SCALE[name]
                for g, fc in zip(ifn.genes, ifn.log2fc):
                    truth_rows.append((f"bystander_{t}dpi", name, genes[g], BYSTANDER_FACTOR * s * fc))
                for prog in (ifn, core, specific[name]):
                    for g, fc in zip(prog.genes, prog.log2fc):
                        truth_rows.append((f"infected_{t}dpi", name, genes[g], s * fc))
    else:
        label = condition.astype(object)
        strength = np.array([SEVERITY_LEVELS[c] for c in condition])
        for i in range(n_cells):
            s = strength[i] * RESPONSE_SCALE[ct_names[ct_idx[i]]]
            if s == 0:
                continue
            log2_mu[i, core.genes] += s * core.log2fc
            log2_mu[i, ifn.genes] += s * ifn.log2fc
            prog = specific[ct_names[ct_idx[i]]]
            log2_mu[i, prog.genes] += s * prog.log2fc
        for lvl, level in SEVERITY_LEVELS.items():
            if level == 0:
                continue
            for name in ct_names:
                s = level * RESPONSE_SCALE[name]
                for prog in (core, ifn, specific[name]):
                    for g, fc in zip(prog.genes, prog.log2fc):
                        truth_rows.append((lvl, name, genes[g], s * fc))

    # ----- counts: library size × composition, gamma–Poisson -----
    mu = np.exp2(log2_mu)
    mu /= mu.sum(axis=1, keepdims=True)
    lib = rng.lognormal(np.log(mean_library_size), 0.35, size=n_cells)
    n_bad = int(round(low_quality_fraction * n_cells))
    bad = rng.choice(n_cells, size=n_bad, replace=False)
    dying, empty = bad[: n_bad // 2], bad[n_bad // 2:]
    mu[np.ix_(dying, mt_genes)] *= 15.0
    mu[dying] /= mu[dying].sum(axis=1, keepdims=True)
    lib[empty] = rng.uniform(30, 120, size=empty.size)
    mean = mu * lib[:, None]
    shape = 1.0 / dispersion
    lam = rng.gamma(shape, mean / shape)
    counts = rng.poisson(lam).astype(np.float32)

    obs = pd.DataFrame({
        "label": pd.Categorical(label.astype(str)),
        "donor": pd.Categorical(np.array(donors)[donor_idx], categories=donors),
        "cell_type": pd.Categorical(np.array(ct_names)[ct_idx], categories=ct_names),
        "condition": pd.Categorical(condition.astype(str)),
    }, index=[f"cell{i:06d}" for i in range(n_cells)])
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))
    truth = pd.DataFrame(truth_rows, columns=["class", "cell_type", "gene", "log2_fold_change"])
    adata.uns["ground_truth"] = {k: truth[k].to_numpy() for k in truth.columns}
    adata.uns["cellgnn"] = {"source": {"kind": "simulate", "preset": preset, "seed": int(seed),
                                       "n_cells": int(n_cells), "n_genes": int(n_genes),
                                       "n_donors": int(n_donors)}}
    if donor_severity is not None:
        adata.uns["cellgnn"]["source"]["donor_severity"] = dict(zip(donors, donor_severity.tolist()))
    return adata


def check_params(preset: str, n_genes: int, n_donors: int, n_response_genes: int, **_) -> None:
    """Refuse settings the simulator cannot plant its programmes with (run at start-up and by
    :func:`simulate`)."""
    if preset not in {"infection", "severity"}:
        raise CellgnnInputError(f"unknown simulation preset '{preset}'", field="data.simulate.preset",
                                fix="use 'infection' or 'severity'")
    n_core = max(1, n_response_genes // 3)
    n_min_genes = 13 + N_MARKERS * 6 + n_response_genes + n_core + 6 * (n_response_genes - n_core) + 50
    if n_genes < n_min_genes:
        raise CellgnnInputError(f"n_genes={n_genes} is too small for the planted programmes",
                                field="data.simulate.n_genes", fix=f"use at least {n_min_genes}")
    if n_donors < (3 if preset == "infection" else 6):
        raise CellgnnInputError(f"n_donors={n_donors} too few to hold donors out for val and test",
                                field="data.simulate.n_donors",
                                fix="use >= 3 donors (infection) or >= 6 (severity)")


def design_obs(preset: str = "infection", n_cells: int = 4000, n_donors: int = 4, **_) -> pd.DataFrame:
    """The design a simulation will have, without simulating: ``label``, ``donor`` and
    ``cell_type`` of up to 100 cells per donor and class (enough to check the splits; the
    expected share of each class among ``n_cells``)
    (every donor in every condition for ``infection``; one severity per donor for ``severity``).
    Start-up checks use it; the data stage checks the real cells again."""
    donors = [f"donor{d + 1}" for d in range(n_donors)]
    if preset == "infection":
        shares = {"mock": 0.25}
        for t in TIMEPOINTS:
            shares[f"infected_{t}dpi"] = 0.25 * INFECTED_FRACTION[t]
            shares[f"bystander_{t}dpi"] = 0.25 * (1 - INFECTED_FRACTION[t])
        per_donor = {d: shares for d in donors}
        cell_types = list(INFECTION_CELL_TYPES)
    else:
        levels = ["healthy", "moderate", "severe"]
        per_donor = {d: {levels[i % 3]: 1.0} for i, d in enumerate(donors)}
        cell_types = list(SEVERITY_CELL_TYPES)
    rows = []
    for d, shares in per_donor.items():
        for lab, share in shares.items():
            n = min(100, max(1, int(round(n_cells / n_donors * share))))  # enough to check a design
            rows += [(lab, d, cell_types[i % len(cell_types)]) for i in range(n)]
    return pd.DataFrame(rows, columns=["label", "donor", "cell_type"])


def _gene_names(n_genes: int) -> list[str]:
    mt = ["MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3", "MT-ND3",
          "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB"]
    return mt + [f"GENE{i:05d}" for i in range(n_genes - len(mt))]
