"""Explanations that can be checked: gene, cell-type and edge-feature attributions.

Methods (each returns a gene score per class, and per cell type × class where it can):

- ``integrated_gradients`` (:mod:`.ig`): captum IG on node features through a trained
  graph model, each explained cell on its own copy of its computation graph
  (:mod:`.subgraphs`). Baseline (``explain.ig.baseline``): the mean control-class cell of
  the same donor and cell type (default: a held-out donor is compared with its own
  controls, not with other donors' batch effects), the mean control-class training cell
  of the cell type, or all-zero features. Explained score (``explain.ig.target``): the
  log-odds of the cell's class against the control class (default; the planted truth is
  defined against the control), or the class logit.
- ``weights``: the original study's first-layer weight magnitude, ``max |W[:, g]|`` over
  the first layer's output units (heads × units); class-agnostic.
- ``attention``: mean gene attention of the scANNA-style classifier over a class's correctly
  predicted cells minus its mean over the control class's cells (the other classes' cells
  when there is no control), per class and per class × cell type
  (``cellgnn.models.scanna.salient_genes``).
- ``gnnexplainer``: PyG's ``GNNExplainer`` (its loss, coefficients and initialisation) on a few
  cells per class, with a feature mask shared by the nodes of each cell's subgraph and an edge
  mask; the cells of a batch are optimised together on the union of their subgraphs, each with
  its own masks (equal to PyG's ``Explainer`` on each cell alone: tested).
- ``de`` / ``de_control``: scanpy ``rank_genes_groups`` (Wilcoxon) on training cells, each
  class against the rest / against the control class (``explain.de_control``, ``mock``).
- ``random``: a seeded random ranking, the floor every method must beat.

(:mod:`.methods` holds all but IG.) Scores are compared with the simulator's planted
response genes (``uns["ground_truth"]``, :mod:`.scoring`): precision@k with k = number of
planted genes, and average precision (AUPRC), per class (the genes planted in every cell
type of the class) and per class × cell type (every gene planted there). Rankings are
long tables (:mod:`.rankings`); :mod:`.stage` runs them all for the explain rule.
"""

from .ig import IGResult, IGSettings, class_means, control_reference, donor_control_reference, integrated_gradients
from .methods import (attention_rankings, de_rankings, de_scores, edge_group_weights, first_layer_weights,
                      gnnexplainer_masks, random_rankings, read_ablation)
from .rankings import CLASS_AGNOSTIC, group_rankings, long_scores, select_cells, top_genes_table
from .scoring import (average_precision, ground_truth_sets, method_margins, precision_at_k, read_ground_truth,
                      score_rankings, summarize_scores)
from .stage import METHODS, ExplainInputs, resolve_classes, run_explain, write_explanations
from .subgraphs import CompGraphs, SubgraphSampler, count_hops, exact_sampler

__all__ = [
    "CLASS_AGNOSTIC", "METHODS", "CompGraphs", "ExplainInputs", "IGResult", "IGSettings", "SubgraphSampler",
    "attention_rankings", "average_precision", "class_means", "control_reference", "count_hops", "de_rankings",
    "de_scores", "donor_control_reference", "edge_group_weights", "exact_sampler", "first_layer_weights",
    "gnnexplainer_masks", "ground_truth_sets", "group_rankings", "integrated_gradients", "long_scores",
    "method_margins", "precision_at_k", "random_rankings", "read_ablation", "read_ground_truth", "resolve_classes",
    "run_explain", "score_rankings", "select_cells", "summarize_scores", "top_genes_table", "write_explanations",
]
