"""Bad input through the real workflow, as a user meets it: every case is a `snakemake` run that must
end with a non-zero exit, one `cellgnn:` line naming the file (where there is one), the field and the
fix as the last thing on the screen, no traceback as the main message, no file under results/, and
every input byte-identical afterwards.

Most cases are refused at start-up (config, paths, designs, obs of an .h5ad); the data-file cases
are refused by the data rule before it writes anything. The whole table runs in CI (marked `slow`);
the default suite runs the cases in FAST.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from test_workflow import snakemake

TINY = {"dataset": "bad", "data": {"simulate": {"n_cells": 300, "n_genes": 500, "n_donors": 4}},
        "preprocess": {"min_genes": 50, "n_pcs": 10}, "graph": {"k": 8, "n_pcs": 10},
        "train": {"models": ["logreg", "gat"], "seeds": [0], "max_epochs": 5}}


@dataclass
class Case:
    """A bad input: ``edit(cfg, inputs)`` changes the config (a dict) and may write files into the
    ``inputs`` folder; the run must fail naming ``field`` (and ``file`` when given: a name relative to
    ``inputs``, or the config); ``problem`` is a piece of the message."""

    edit: Callable[[dict, Path], None]
    field: str
    problem: str
    file: str | None = "config"
    target: list[str] = field(default_factory=list)


def counts(n=240, g=60, seed=0, donors=4, classes=("ctrl", "stim"), paired=True) -> ad.AnnData:
    """A small raw-count study: every donor in every class (paired) or one class per donor."""
    rng = np.random.default_rng(seed)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(3.0, (n, g)).astype(np.float32)))
    a.obs_names = [f"c{i}" for i in range(n)]
    a.var_names = [f"G{i}" for i in range(g)]
    donor = np.array([f"d{i % donors}" for i in range(n)])
    label = (np.array([classes[(i // donors) % len(classes)] for i in range(n)]) if paired else
             np.array([classes[int(d[1:]) % len(classes)] for d in donor]))
    a.obs["label"] = pd.Categorical(label)
    a.obs["donor"] = pd.Categorical(donor)
    a.obs["cell_type"] = pd.Categorical(["T", "B", "Mono"] * (n // 3))
    return a


def file_source(cfg, inputs, adata=None, name="study.h5ad", **keys):
    (adata if adata is not None else counts()).write_h5ad(inputs / name)
    cfg["data"] = {"source": "file", "file": {"path": str(inputs / name)}, "keys": {**{"cell_type": "cell_type"},
                                                                                    **keys}}
    cfg["preprocess"] = {"min_genes": 5, "min_cells": 1, "n_pcs": 10, "max_mito_fraction": 1.0}


def with_x(mutate):
    def edit(cfg, inputs):
        a = counts()
        x = a.X.toarray()
        mutate(x)
        a.X = sp.csr_matrix(x)
        file_source(cfg, inputs, a)
    return edit


def with_obs(mutate):
    def edit(cfg, inputs):
        a = counts()
        mutate(a)
        file_source(cfg, inputs, a)
    return edit


def set_(path: str, value):
    """Config edit: set the dotted key ``path`` to ``value``."""
    def edit(cfg, inputs):
        node = cfg
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return edit


def both(*edits):
    def edit(cfg, inputs):
        for e in edits:
            e(cfg, inputs)
    return edit


def write(name, content: str | bytes):
    def edit(cfg, inputs):
        p = inputs / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return edit


def sheet(rows: str):
    """A sample sheet in ``inputs/samples.tsv`` (``{inputs}`` in ``rows`` becomes the folder)."""
    def edit(cfg, inputs):
        (inputs / "samples.tsv").write_text(rows.replace("{inputs}", str(inputs)))
        counts().write_h5ad(inputs / "s1.h5ad")
        cfg["data"] = {"source": "samplesheet", "samplesheet": {"path": str(inputs / "samples.tsv")}}
    return edit


def under(folder: str):
    """An input .h5ad placed inside a folder the workflow writes (in the working directory); the
    config points at it unless a sample sheet does."""
    def edit(cfg, inputs):
        d = inputs.parent / "work" / folder
        d.mkdir(parents=True, exist_ok=True)
        counts().write_h5ad(d / ("x.h5ad" if folder == "results" else "mine.h5ad"))
        if cfg.get("data", {}).get("source") != "samplesheet":
            cfg["data"] = {"source": "file", "file": {"path": f"{folder}/mine.h5ad"}}
    return edit


def donor_level(n_donors_per_class, classes=("healthy", "moderate", "severe")):
    def edit(cfg, inputs):
        a = counts(n=60 * n_donors_per_class * len(classes), donors=n_donors_per_class * len(classes),
                   classes=classes, paired=False)
        file_source(cfg, inputs, a)
    return edit


HEADER = "sample\turl\tpath\tsha256\tcondition\tdonor\n"
CASES: dict[str, Case] = {
    # ---- config: schema, types, ranges, unknown keys
    "unknown_top_level_key": Case(set_("datset", "x"), "(top level)", "datset"),
    "unknown_nested_key": Case(set_("train.max_epoch", 3), "train", "max_epoch"),
    "wrong_type": Case(set_("graph.k", "ten"), "graph.k", "not of type"),
    "k_zero": Case(set_("graph.k", 0), "graph.k", "minimum"),
    "seeds_empty": Case(set_("train.seeds", []), "train.seeds", "should be non-empty"),
    "fractions_sum": Case(set_("graph.fractions", {"train": 0.6, "val": 0.3, "test": 0.3}), "graph.fractions",
                          "sum to"),
    "unknown_device": Case(set_("device", "tpu"), "device", "tpu"),
    "unknown_model": Case(set_("train.models", ["gat", "gta"]), "train.models", "gta"),
    "mlp_setting_typo": Case(set_("train.hyperparameters", {"mlp": {"hiden": 64}}), "train.hyperparameters.mlp",
                             "hiden"),
    "logreg_setting_typo": Case(set_("train.hyperparameters", {"logreg": {"c": 0.1}}),
                                "train.hyperparameters.logreg", "'c'"),
    "unknown_hyperparameter_model": Case(set_("train.hyperparameters", {"gta": {}}), "train.hyperparameters",
                                         "gta"),
    "negative_lr": Case(set_("train.hyperparameters", {"gat": {"lr": -1}}), "train.hyperparameters.gat.lr",
                        "minimum"),
    "unknown_optimizer": Case(set_("train.hyperparameters", {"gat": {"optimizer": "sgdx"}}),
                              "train.hyperparameters.gat.optimizer", "sgdx"),
    "cv_folds_one": Case(both(set_("graph.split_modes", ["donor_cv"]), set_("graph.cv_folds", 1)),
                         "graph.cv_folds", "at least 2 folds", file="data.simulate"),
    "unknown_split_mode": Case(set_("graph.split_modes", ["patients"]), "graph.split_modes.0", "patients"),
    "graph_pcs_above_preprocess": Case(set_("graph.n_pcs", 40), "graph.n_pcs", "preprocess.n_pcs"),
    "file_source_without_path": Case(set_("data", {"source": "file"}), "data.file.path", "no path"),
    "pbmc68k_as_counts": Case(set_("data", {"source": "pbmc68k"}), "preprocess.expect_counts",
                              "log-normalized"),
    # ---- cross-references between sections
    "explain_model_not_trained": Case(set_("explain.model", "gcn"), "explain.model", "gcn"),
    "baseline_not_trained": Case(set_("evaluation.baselines", ["mlp"]), "evaluation.baselines", "mlp"),
    "explain_split_not_built": Case(set_("explain.split", "donors"), "explain.split", "donors"),
    "augment_split_not_built": Case(set_("augment.split", "donors"), "augment.split", "donors"),
    "topup_split_not_built": Case(set_("augment.graph_model.splits", ["donors"]), "augment.graph_model.splits",
                                  "donors"),
    "only_edge_group_needs_cell_types": Case(
        both(lambda c, i: file_source(c, i, cell_type=None), set_("train.models", ["gat_ef"]),
             set_("edge_features.groups", ["celltype_attention"]), set_("celltype.enabled", False)),
        "edge_features.groups", "needs cell types"),
    # ---- paths built from config must stay in their folders; inputs never where the workflow writes
    "dataset_dotdot": Case(set_("dataset", ".."), "dataset", "does not match"),
    "dataset_hidden": Case(set_("dataset", ".x"), "dataset", "does not match"),
    "dataset_slash": Case(set_("dataset", "a/b"), "dataset", "does not match"),
    "input_under_results": Case(under("results/bad"), "data.file.path", "lies under results/"),
    "input_under_logs": Case(under("logs"), "data.file.path", "lies under logs/"),
    "input_under_resources": Case(under("resources/bad"), "data.file.path", "lies under resources/"),
    "input_under_benchmarks": Case(under("benchmarks"), "data.file.path", "lies under benchmarks/"),
    "download_name_escapes": Case(set_("data", {"source": "url", "url": {"url": "http://127.0.0.1:9/x.h5ad",
                                                                           "filename": "../../../x.h5ad"}}),
                                  "data.url.filename", "outside"),
    "download_name_is_dotdot": Case(set_("data", {"source": "url", "url": {"url": "http://127.0.0.1:9/a/.."}}),
                                    "data.url.filename", "outside"),
    "url_source_unknown_donors_loo": Case(set_("data", {"source": "url",
                                                        "url": {"url": "http://127.0.0.1:9/s.h5ad"}}),
                                          "graph.cv_folds", "known only once"),
    "gene_set_missing": Case(set_("explain.gene_set.path", "no/such/set.tsv"), "explain.gene_set.path",
                             "no such file", file="no/such/set.tsv"),
    # ---- requests that cannot fit, values beyond the data
    "simulation_too_large": Case(set_("data.simulate.n_cells", 20_000_000), "data.simulate.n_cells", "GiB"),
    "simulation_too_few_genes": Case(both(set_("data.simulate.n_genes", 450),
                                          set_("data.simulate.n_response_genes", 60)), "data.simulate.n_genes",
                                     "too small"),
    "simulation_too_few_donors": Case(both(set_("data.simulate.preset", "severity"),
                                           set_("data.simulate.n_donors", 4)), "data.simulate.n_donors", "too few"),
    "k_not_below_cells": Case(both(set_("data.simulate.n_cells", 150), set_("graph.k", 200)), "graph.k",
                              "150 cells"),
    "pcs_beyond_genes": Case(both(lambda c, i: file_source(c, i), set_("preprocess.n_pcs", 70),
                                  set_("graph.n_pcs", 10)), "preprocess.n_pcs", "60 genes"),
    # ---- designs (simulated and from an .h5ad's obs): named, never blamed on graph.k
    "more_folds_than_donors": Case(both(set_("graph.split_modes", ["donor_cv"]), set_("graph.cv_folds", 6)),
                                   "graph.cv_folds", "study has 4 donors", file="data.simulate"),
    "class_in_one_donor": Case(donor_level(1), "graph.split_modes", "occurs in one donor only",
                               file="study.h5ad"),
    "single_donor": Case(both(with_obs(lambda a: a.obs.__setitem__("donor", "d0")),
                              set_("graph.split_modes", ["donors"])), "graph.split_modes", "1 donor",
                         file="study.h5ad"),
    "validation_donors_impossible": Case(both(donor_level(2), set_("graph.validation", "donors")),
                                         "graph.validation", "none can be spared", file="study.h5ad"),
    "pseudobulk_on_cell_level_labels": Case(set_("train.models", ["logreg", "pseudobulk"]), "train.models",
                                            "constant within each donor", file="data.simulate"),
    "composition_without_cell_types": Case(both(donor_level(3), set_("data.keys.cell_type", None),
                                                set_("celltype.enabled", False),
                                                set_("train.models", ["composition"])), "train.models",
                                           "needs cell types", file="study.h5ad"),
    "unknown_explain_class": Case(set_("explain.classes", ["infected_9dpi"]), "explain.classes", "infected_9dpi",
                                  file="data.simulate"),
    "unknown_control_class": Case(set_("explain.de_control", "untreated"), "explain.de_control", "untreated",
                                  file="data.simulate"),
    "unknown_population": Case(set_("augment.population", "Hepatocyte"), "augment.population", "Hepatocyte",
                               file="data.simulate"),
    "label_single_class": Case(with_obs(lambda a: a.obs.__setitem__("label", "x")), "data.keys.label",
                               "single class", file="study.h5ad"),
    # ---- the study's obs, read at start-up
    "missing_label_column": Case(with_obs(lambda a: a.obs.drop(columns="label", inplace=True)), "data.keys.label",
                                 "column 'label' not found", file="study.h5ad"),
    "missing_donor_column": Case(with_obs(lambda a: a.obs.drop(columns="donor", inplace=True)), "data.keys.donor",
                                 "column 'donor' not found", file="study.h5ad"),
    "missing_cell_type_column": Case(with_obs(lambda a: a.obs.drop(columns="cell_type", inplace=True)),
                                     "data.keys.cell_type", "set it to null", file="study.h5ad"),
    "missing_sample_column": Case(both(lambda c, i: file_source(c, i, sample="sample")), "data.keys.sample",
                                  "column 'sample' not found", file="study.h5ad"),
    "label_with_missing_values": Case(with_obs(lambda a: a.obs.__setitem__(
        "label", pd.Categorical([None] + list(a.obs["label"][1:])))), "data.keys.label", "no value",
        file="study.h5ad"),
    "corrupt_h5ad": Case(both(lambda c, i: file_source(c, i), write("study.h5ad", b"\x89HDF nothing")), "",
                         "truncated or not an AnnData", file="study.h5ad"),
    "input_file_missing": Case(set_("data", {"source": "file", "file": {"path": "/nonexistent/x.h5ad"}}),
                               "data.file.path", "does not exist", file="/nonexistent/x.h5ad",
                               target=["results/bad/raw.h5ad"]),
    # ---- counts, refused by the data rule before it writes raw.h5ad
    "nan_counts": Case(with_x(lambda x: x.__setitem__((3, 4), np.nan)), "X", "NaN or infinite",
                       file="study.h5ad", target=["results/bad/raw.h5ad"]),
    "negative_counts": Case(with_x(lambda x: x.__setitem__((3, 4), -2)), "X", "negative", file="study.h5ad",
                            target=["results/bad/raw.h5ad"]),
    "normalized_not_counts": Case(with_x(lambda x: x.__setitem__(slice(None), np.log1p(x))), "X", "not integers",
                                  file="study.h5ad", target=["results/bad/raw.h5ad"]),
    "duplicated_cells": Case(with_obs(lambda a: setattr(a, "obs_names", ["c0"] * 2 + list(a.obs_names[2:]))),
                             "obs_names", "duplicated cell names", file="study.h5ad",
                             target=["results/bad/raw.h5ad"]),
    # ---- sample sheets
    "sheet_missing": Case(set_("data", {"source": "samplesheet", "samplesheet": {"path": "no_sheet.tsv"}}),
                          "data.samplesheet.path", "not found", file="no_sheet.tsv"),
    "sheet_duplicated_sample": Case(sheet(HEADER + "s1\t\t{inputs}/s1.h5ad\t\tctrl\td1\n"
                                          "s1\t\t{inputs}/s1.h5ad\t\tstim\td1\n"), "sample", "duplicated sample ids",
                                    file="samples.tsv"),
    "sheet_url_and_path": Case(sheet(HEADER + "s1\thttp://127.0.0.1:9/a.h5\t{inputs}/s1.h5ad\t\tctrl\td1\n"),
                               "url", "exactly one of", file="samples.tsv"),
    "sheet_bad_sample_id": Case(sheet(HEADER + "../s1\t\t{inputs}/s1.h5ad\t\tctrl\td1\n"), "sample",
                                "does not match", file="samples.tsv"),
    "sheet_path_under_results": Case(both(sheet(HEADER + "s1\t\tresults/x.h5ad\t\tctrl\td1\n"), under("results")),
                                     "path", "lies under results/", file="samples.tsv"),
}
FAST = ["mlp_setting_typo", "dataset_dotdot", "input_under_results", "more_folds_than_donors",
        "class_in_one_donor", "nan_counts"]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_case(name: str, tmp_path: Path) -> str:
    case = CASES[name]
    inputs, work = tmp_path / "inputs", tmp_path / "work"
    inputs.mkdir()
    work.mkdir()
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    case.edit(cfg, inputs)
    (inputs / "config.yaml").write_text(yaml.safe_dump(cfg))
    before_inputs, before_work = _digest(inputs), _digest(work)  # work: inputs a user put where outputs go
    res = snakemake("--cores", "1", "--configfile", str(inputs / "config.yaml"), "--directory", str(work),
                    *case.target, check=False)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode != 0, out[-3000:]
    tail = "\n".join(out.splitlines()[-8:])
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip().startswith("cellgnn: ") and "Fix:" in ln]
    assert lines, f"no cellgnn line (file, field, fix) at the end:\n{out[-3000:]}"
    msg = lines[-1]
    assert case.problem in msg, msg
    if case.field:
        assert f"field '{case.field}'" in msg, msg
    if case.file == "config":
        assert str(inputs / "config.yaml") in msg, msg
    elif case.file is not None:
        assert case.file in msg, msg
    assert len(msg.split("Fix:")[1].strip()) > 10, msg
    assert "Traceback" not in tail, tail
    after_work = _digest(work)
    assert [k for k in after_work if k.startswith("results") and k not in before_work] == []  # nothing written
    assert _digest(inputs) == before_inputs  # every input byte-identical, also those under results/ or logs/
    assert {k: v for k, v in after_work.items() if k in before_work} == before_work
    return msg


@pytest.mark.parametrize("name", FAST)
def test_refused_with_one_clear_line(name, tmp_path):
    run_case(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(CASES) - set(FAST)))
def test_every_refusal(name, tmp_path):
    run_case(name, tmp_path)


def test_the_table_covers_sixty_cases_and_every_class():
    assert len(CASES) >= 60
    fields = {c.field.split(".")[0] for c in CASES.values()}
    assert {"dataset", "data", "graph", "train", "explain", "augment", "evaluation", "X", "sample"} <= fields


def test_failure_report_repeats_the_job_message(tmp_path):
    """A job that fails on bad input: its one line and log come last in the run's output."""
    from cellgnn.errors import failure_report

    log = tmp_path / "logs" / "data.log"
    log.parent.mkdir()
    log.write_text("2026 INFO loading\ncellgnn: x.h5ad: field 'X': negative values. Fix: give raw counts\n")
    smk = tmp_path / "snakemake.log"
    smk.write_text(f"Error in rule data:\n    jobid: 1\n    log: {log} (check log file(s) for error details)\n")
    report = failure_report(str(smk))
    assert re.search(r"cellgnn: x\.h5ad: field 'X': negative values\. Fix: give raw counts\n\s+log: .*data\.log",
                     report), report
