"""Evaluation: metrics, the benchmark harness and its tables, the paper's analyses, the report, micro-benchmarks."""
