"""The plan of what runs, derived from params.yaml; torch-free (Snakemake imports it at parse time).

:mod:`emanet.plan.schedule`: the runs (experiments, finetunes), their datasets, weights and the protocols the
tables need of each (not named ``runs``, which is a function here); :mod:`emanet.plan.tables`: the ``tables``
schema. The plan sits above the engine: the engine imports nothing from it (``tests/test_plan.py`` checks), and
it imports nothing from the engine or the benchmarks.
"""

from emanet.plan.schedule import (
    configs,
    datasets,
    experiments,
    finetunes,
    parent,
    protocols,
    runs,
    tables_of,
    validate,
    validate_runs,
    weights,
)
from emanet.plan.tables import CONFIDENCE, COST_FIELDS, COST_ROWS, HEAD_SPECS, validate_tables

__all__ = [
    "CONFIDENCE",
    "COST_FIELDS",
    "COST_ROWS",
    "HEAD_SPECS",
    "configs",
    "datasets",
    "experiments",
    "finetunes",
    "parent",
    "protocols",
    "runs",
    "tables_of",
    "validate",
    "validate_runs",
    "validate_tables",
    "weights",
]
