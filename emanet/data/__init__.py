"""Datasets: download, verify, convert to one layout, load. Knows nothing of models."""
