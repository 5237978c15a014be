"""Benchmarks: model cost (Table 1), training throughput, where a pipeline's time goes; no torch at package level."""
