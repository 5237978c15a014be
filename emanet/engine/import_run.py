"""``emanet import-weights``: a foreign checkpoint becomes an experiment's run, evaluated like a trained one.

The run folder (``OUT/runs/<experiment>``) gets what training leaves there: ``model.pt`` (a plain state
dict in emanet's naming, every BatchNorm counter included), ``config.yaml`` (the resolved
configuration) and ``run.json``, whose ``imported`` entry records the source file (absolute path), its
SHA-256, the layout it was found in and the scalars saved beside the weights (the official ``step``).
From then on ``emanet evaluate``, ``predict``, the report (whose cell says "imported") and MLflow (tag
``imported=true``) treat it like a trained run, and ``emanet train`` refuses to overwrite it unless
told to set it aside (``--replace-changed``).

The architecture is the experiment's (for the released VOC model: the paper profile's ``ema512``); the
number of classes is the classifier's. The weights are checked against that model before anything is
written: a checkpoint that does not fit is refused in a few lines naming the cause.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import yaml

from emanet.config import Config, ConfigError, flatten
from emanet.data.archives.transfer import file_digests
from emanet.engine import checkpoint
from emanet.io import atomic_write_text
from emanet.models import build_model
from emanet.models.import_weights import ForeignWeights, read_foreign
from emanet.models.weights import WeightLoadError, load_state
from emanet.runs import folder
from emanet.tracking import Tracker, git_commit

log = logging.getLogger(__name__)


def import_conflict(run_dir: Path, cfg: Config, sha256: str) -> str | None:
    """Why ``run_dir`` cannot take weights of this digest for ``cfg`` as it is, or None if it can (no run
    yet, or the same file imported for the same training identity before: it may be imported again);
    :func:`emanet.runs.folder.import_conflict`."""
    return folder.import_conflict(run_dir, _identity(cfg)["training"]["digest"], sha256)


def _identity(cfg: Config) -> dict:
    """run.json's ``identity`` of an imported run: the experiment's training identity, no initial weights."""
    return folder.training_record(cfg, None)


def import_weights(
    cfg: Config, run_dir: Path, source: str | Path, format: str = "auto", tags: dict[str, str] | None = None
) -> dict:
    """Put the checkpoint ``source`` in ``run_dir`` as the run of ``cfg``; return run.json's ``imported``.

    Raises WeightLoadError (naming ``source``) for an unreadable checkpoint or one that does not fit the
    experiment's model, and ConfigError when ``run_dir`` already holds another run (see
    :func:`import_conflict`; the CLI's ``--replace-changed`` sets it aside first). Nothing is written
    before the weights are known to fit; every file is written atomically.
    """
    source, run_dir = Path(source), Path(run_dir)
    weights = read_foreign(source, format)
    sha256 = file_digests(source, ["sha256"])["sha256"]
    conflict = import_conflict(run_dir, cfg, sha256)
    if conflict:
        raise ConfigError(f"{conflict}: pass --replace-changed to set it aside, or use another --out")
    _check_classes(cfg, source, weights.num_classes)
    model = build_model(dataclasses.replace(cfg.model, pretrained=None), weights.num_classes)
    load_state(
        model,
        weights.state,
        source,
        f"the model of experiment {cfg.experiment!r}",
        optional_counters=True,
        importing=True,
    )
    record = _record(source, sha256, weights)
    identity = _identity(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        run_dir / folder.CONFIG,
        f"# training identity {identity['training']['digest']}\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False),
    )
    info = folder.read_info(run_dir)
    info.update(
        identity=identity,
        init_from=None,
        experiment=cfg.experiment,
        profile=cfg.profile,
        dataset=cfg.data.dataset,
        git_commit=git_commit(),
        data_checksum=_data_checksum(cfg),
        imported=record,
        slurm_job_ids=[],
    )
    folder.write_info(run_dir, info)  # before model.pt: a model.pt is never left unexplained
    checkpoint.save_object(run_dir / folder.MODEL, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    folder.write_info(run_dir, {**info, "model": folder.model_record(run_dir / folder.MODEL)})
    experiment = cfg.tracking.experiment.format(profile=cfg.profile, dataset=cfg.data.dataset)
    run_tags = {
        "experiment": cfg.experiment,
        "profile": cfg.profile,
        "dataset": cfg.data.dataset,
        "training_identity": identity["training"]["digest"],
        "git_commit": info["git_commit"],
        "imported": "true",
        "imported_sha256": sha256,
        "imported_layout": weights.describe(),
        **(tags or {}),
    }
    Tracker(
        run_dir, cfg.tracking.enabled, cfg.tracking.uri, experiment, cfg.experiment, flatten(cfg.to_dict()), run_tags
    ).finish()
    log.debug("%s: imported %s (%s, %d classes)", run_dir, source, weights.describe(), weights.num_classes)
    return record


def _record(source: Path, sha256: str, weights: ForeignWeights) -> dict:
    return {
        "source": str(source.resolve()),
        "sha256": sha256,
        "format": weights.format,
        "layout": weights.describe(),
        "nesting": list(weights.nesting),
        "prefix": weights.prefix,
        "num_batches_tracked": weights.counters,
        "classes": weights.num_classes,
        "extras": weights.extras,
    }


def _data_checksum(cfg: Config) -> str | None:
    """The prepared training data's label checksum when it is there (an import needs no data)."""
    from emanet.data.layout import is_prepared, read_meta
    from emanet.engine.train import dataset_root

    if not is_prepared(dataset_root(cfg)):
        return None
    return read_meta(dataset_root(cfg))["label_checksum"]


def _check_classes(cfg: Config, source: Path, num_classes: int) -> None:
    """The classifier's class count must be that of every prepared dataset the run trains or is evaluated
    on (evaluate would refuse the run afterwards); a dataset not prepared yet is checked by evaluate."""
    from emanet.data.layout import is_prepared, read_meta
    from emanet.engine.evaluate import eval_root
    from emanet.engine.train import dataset_root

    for root in dict.fromkeys([dataset_root(cfg), eval_root(cfg)]):
        expected = read_meta(root)["num_classes"] if is_prepared(root) else num_classes
        if expected != num_classes:
            raise WeightLoadError(
                f"{source}: its classifier predicts {num_classes} classes but the experiment's "
                f"dataset {root.name!r} ({root}) has {expected}; import it into an experiment "
                f"on a {num_classes}-class dataset (e.g. --set data.dataset=...), or use "
                f"weights trained on {root.name}. Nothing was written."
            )
