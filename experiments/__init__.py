"""The research drivers behind docs/results.md, run from the repository root: the attention
study (``python -m experiments.study``), the best configuration (``experiments.best``) and the
equal-budget runs against OpenNMT-py and JoeyNMT (``experiments.budget``)."""
