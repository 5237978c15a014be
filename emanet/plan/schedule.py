"""What the pipeline runs, derived from params.yaml: experiments, finetunes, datasets, weights, protocols.

Snakemake (``workflow/rules/common.smk``, at parse time) and the CLI ask this module; ``dvc.yaml`` reads the
same lists from params.yaml directly, and a test checks both pipelines agree. Every list is validated first
(:func:`validate`: the runs, their finetune chains and the ``tables`` schema), each error naming the bad key.
Torch-free: Snakemake imports it in every job it starts.
"""

from __future__ import annotations

from emanet.config import Config, ConfigError, resolve
from emanet.data.archives.catalog import weights_name
from emanet.plan.figures import run_protocols
from emanet.plan.tables import metric_protocols, validate_tables


def _override(overrides: dict | None, section: str, key: str):
    """``overrides[section][key]`` of one run's entry in params.yaml, None when absent."""
    return ((overrides or {}).get(section) or {}).get(key)


def validate_runs(params: dict) -> None:
    """``finetunes`` each name their parent in ``train.init_from`` and their data in ``data.dataset`` and
    ``eval.dataset`` (DVC reads its dependencies there); ``experiments`` set neither init_from nor
    eval.dataset; names are unique; every chain ends in an experiment. Raises ConfigError naming the key."""
    experiments, finetunes = params.get("experiments") or {}, params.get("finetunes") or {}
    both = sorted(set(experiments) & set(finetunes))
    if both:
        raise ConfigError(f"{both[0]!r} is both in experiments and in finetunes")
    for name, overrides in experiments.items():
        if _override(overrides, "train", "init_from") is not None:
            raise ConfigError(
                f"experiments.{name}.train.init_from: a run that starts from another run's weights "
                f"belongs in finetunes (so both orchestrators see the dependency)"
            )
        if _override(overrides, "eval", "dataset") is not None:
            raise ConfigError(
                f"experiments.{name}.eval.dataset: evaluating on another dataset than the training one "
                f"is for finetunes (which state it, so DVC sees the data)"
            )
    for name, overrides in finetunes.items():
        for section in ("data", "eval"):
            if _override(overrides, section, "dataset") is None:
                raise ConfigError(f"missing key 'finetunes.{name}.{section}.dataset' (DVC reads the data from it)")
        _check_chain(name, experiments, finetunes)


def _check_chain(name: str, experiments: dict, finetunes: dict) -> None:
    """Follow init_from from ``name`` to an experiment; a missing or unknown parent or a cycle is an error."""
    seen = [name]
    while seen[-1] in finetunes:
        parent = _override(finetunes[seen[-1]], "train", "init_from")
        if parent is None:
            raise ConfigError(f"missing key 'finetunes.{seen[-1]}.train.init_from' (the run it starts from)")
        if parent not in experiments and parent not in finetunes:
            raise ConfigError(f"finetunes.{seen[-1]}.train.init_from: {parent!r} is not an experiment or finetune")
        if parent in seen:
            raise ConfigError(f"finetunes: {' -> '.join([*seen, parent])} is a cycle")
        seen.append(parent)


def validate(params: dict) -> None:
    """The runs (:func:`validate_runs`), then the tables (:func:`emanet.plan.tables.validate_tables`)."""
    validate_runs(params)
    validate_tables(params)


def experiments(params: dict) -> list[str]:
    """The runs trained from an ImageNet backbone (or from scratch): the ``train`` stage."""
    validate(params)
    return list(params.get("experiments") or {})


def finetunes(params: dict) -> list[str]:
    """The runs that start from another run's weights (``train.init_from``): the ``finetune`` stage."""
    validate(params)
    return list(params.get("finetunes") or {})


def parent(params: dict, run: str) -> str | None:
    """The run a finetune starts from (None for an experiment)."""
    return _override((params.get("finetunes") or {}).get(run), "train", "init_from")


def runs(params: dict) -> list[str]:
    """Every run the pipeline trains and evaluates, each once, whatever number of tables shows it."""
    return experiments(params) + finetunes(params)


def protocols(params: dict, run: str) -> list[str]:
    """The evaluation protocols the tables and figures need from ``run`` (a table's ``metric:<protocol>``
    columns when a row shows it, a ``per_class`` figure's ``protocol``: :func:`emanet.plan.figures.run_protocols`):
    ``ss`` always, first, then the others sorted. The evaluate stage runs these and the configure step's
    evaluation identity is made of them (:mod:`emanet.runs.configure`)."""
    needed = {"ss", *run_protocols(params, run)}
    for table in (params.get("tables") or {}).values():
        if any(row.get("experiment") == run for row in table["rows"]):
            needed.update(metric_protocols(table))
    return sorted(needed, key=lambda p: (p != "ss", p))


def tables_of(params: dict, run: str) -> list[str]:
    """The names of the tables with a row showing ``run``, sorted."""
    return sorted(
        name
        for name, table in (params.get("tables") or {}).items()
        if any(row.get("experiment") == run for row in table["rows"])
    )


def configs(params: dict, profile: str | None = None) -> dict[str, Config]:
    """Every run's resolved configuration in ``profile`` (the params file's default profile when None)."""
    return {name: resolve(params, profile, experiment=name) for name in runs(params)}


def datasets(params: dict, profile: str | None = None) -> list[str]:
    """params.yaml's ``datasets``, checked against what the runs train and evaluate on (ConfigError when
    the list differs from the datasets the runs use)."""
    used = {d for cfg in configs(params, profile).values() for d in (cfg.data.dataset, cfg.eval.dataset) if d}
    listed = set(params.get("datasets") or [])
    if listed != used:
        raise ConfigError(f"datasets: lists {sorted(listed)} but the experiments use {sorted(used)}")
    return sorted(used)


def weights(params: dict, profile: str | None = None) -> list[str]:
    """The catalog names of the ImageNet checkpoints the runs start from (``model.pretrained: imagenet``)."""
    return sorted({weights_name(c) for c in configs(params, profile).values() if c.model.pretrained == "imagenet"})
