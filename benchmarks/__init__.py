"""Speed and memory benchmarks, run from the repository root as ``python -m benchmarks.<name>``;
each writes benchmarks/results/<name>.json and .md."""
