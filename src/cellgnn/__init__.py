"""cellgnn: graph neural networks that predict the disease state of single cells.

Stages (one module each): ``data`` → ``preprocess`` → ``graph`` → ``edge_features``
→ ``train`` → ``augment`` → ``explain`` → ``plots``. See CONTRIBUTING.md for the
file contracts between stages.
"""

__version__ = "0.1.0"
