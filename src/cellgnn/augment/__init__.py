"""Augmentation stage: ACTIVA (introspective VAE + ACTINN, SoftAdapt-weighted) and an scGAN baseline.

Modules: ``data`` (library-size-normalized input, populations, split), ``activa`` (model,
training with checkpoints, class-conditional generation), ``gan`` (WGAN-GP baseline),
``evaluate`` (RF AUC, correlation discrepancy, MMD), ``rare`` (rare-population experiment),
``graph_topup`` (model ``gat_activa``), ``figures``, ``stage`` (rule ``augment``).
"""
