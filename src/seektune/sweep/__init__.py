"""Hyperparameter sweeps: a base config and a grid or list of overrides -> one run folder each."""
