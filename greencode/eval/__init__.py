"""Evaluation: the paper's line-completion protocol, metrics, the engine benchmark, reports and plots."""
