"""The dynamics-ensemble service: a probabilistic ensemble trained once per dataset and reused.

Rollout code imports :mod:`dynamics.service` (plain torch); Lightning is only
imported by the training path (:mod:`dynamics.lightning_module`).
"""
