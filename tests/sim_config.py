"""Preprocessing and graph settings of the shared small simulated study (conftest fixtures)."""

PRE_CFG = dict(expect_counts=True, min_genes=50, min_cells=3, max_mito_fraction=0.2, target_sum=1e4,
               transform="log1p", hvg=None, n_pcs=20)
GRAPH_CFG = dict(k=10, metric="euclidean", n_pcs=20, self_loops=True, graph_mode="inductive",
                 fractions=dict(train=0.7, val=0.15, test=0.15), knn_method="exact")
