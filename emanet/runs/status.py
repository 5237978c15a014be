"""``emanet status``: which runs, and whether the report, are out of date with the code, settings and data.

Snakemake sees files, not the settings or code behind them; so each run folder records what made it
(:mod:`emanet.runs.folder`) and :func:`status` compares that with what would make it now. Per run of the
plan (:func:`emanet.plan.runs`), a stage is stale for each of these reasons:

* ``train``: not made or unfinished; the training identity changed (the changed settings named); the
  initial weights changed (a finetune's parent retrained: its model.pt's SHA-256, or the ImageNet
  checkpoint's, differs from the recorded one; or the parent is itself stale, so it will be); the training
  data's label checksum changed; the training code changed (:func:`emanet.runs.code.code_digest`); made by
  an older emanet (no identity recorded). Imported runs are never stale for training.
* ``evaluate``: its training is stale; a protocol the tables need was never evaluated; a protocol's
  evaluation identity changed (the changed settings named); model.pt changed since it was evaluated; the
  evaluated data changed; the evaluation code changed.
* ``complexity`` (Table 1's cost columns, ``bench/complexity.json``): not made; the code that counts them
  changed (``STAGE_CODE["complexity"]``); made by an older emanet (no digest recorded).
* ``report``: not made; the report code changed; the tables' or figures' settings changed; a run it reads
  was evaluated after it was made; any run is stale (the report follows every run, as the workflow's).

Reading is torch-free and never writes. The JSON form (:func:`status`) is the contract with the
staleness matrix test: ``{"profile", "runs": {run: {"state", "stale": [{"stage", "reason"}]}},
"report": {"state", "stale": [...]}, "complexity": {"state", "stale": [...]}}``; states are ``finished``,
``unfinished`` and ``not made``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emanet.config import Config
from emanet.io import read_json_object
from emanet.runs import folder
from emanet.runs.code import code_digest
from emanet.runs.identity import digest, evaluation_identity, same_training, training_identity

FINISHED, UNFINISHED, NOT_MADE = "finished", "unfinished", "not made"


def report_file(results_root: Path) -> Path:
    """``results_root/report/report.json``: the report's record, its provenance included."""
    return Path(results_root) / "report" / "report.json"


def complexity_file(results_root: Path) -> Path:
    """``results_root/bench/complexity.json``: Table 1's cost columns (``emanet bench complexity``)."""
    return Path(results_root) / "bench" / "complexity.json"


def _complexity(results_root: Path) -> dict[str, Any]:
    """The cost columns' state: not made, or made by other code than the complexity code now."""
    path = complexity_file(results_root)
    if not path.is_file():
        return {"state": NOT_MADE, "stale": [{"stage": "complexity", "reason": "not made"}]}
    made = read_json_object(path)
    code = (made.get("code") or {}).get("complexity") if isinstance(made.get("code"), dict) else None
    now = code_digest("complexity")
    if not made:
        reasons = [f"{path.name} unreadable: rerun `emanet bench complexity` or remove it"]
    elif code is None:
        reasons = ["made by an older emanet (no code digest recorded)"]
    else:
        reasons = [f"complexity code changed (digest {code} -> {now})"] if code != now else []
    return {"state": FINISHED, "stale": [{"stage": "complexity", "reason": r} for r in reasons]}


def report_settings_digest(params: dict) -> str:
    """The digest of what the report is made from in params.yaml: its ``tables`` and ``figures``."""
    return digest({"tables": params.get("tables"), "figures": params.get("figures")})


def _data_checksum(cfg: Config, dataset: str | None) -> str | None:
    """The prepared ``dataset``'s label checksum (its image checksum when it has no labels); None when it
    is not prepared."""
    meta = read_json_object(Path(cfg.data.root) / (dataset or cfg.data.dataset) / "meta.json")
    return meta.get("label_checksum") or meta.get("image_checksum")


def _initial_sha(cfg: Config, results_root: Path, known: dict[str, str | None]) -> str | None:
    """The SHA-256 of the file the run starts from now: its parent's model.pt, else the pretrained
    checkpoint; None when there is none (or it is not there yet). ``known`` caches digests by path."""
    if cfg.train.init_from:
        path = folder.run_dir(results_root, cfg.train.init_from) / folder.MODEL
    else:
        from emanet.data.archives.catalog import pretrained_path

        pretrained = pretrained_path(cfg)
        path = Path(pretrained) if pretrained else None
    if path is None or not path.is_file():
        return None
    key = str(path)
    if key not in known:
        known[key] = folder.model_sha256(path.parent) if path.name == folder.MODEL else folder.file_sha256(path)
    return known[key]


def _train_reasons(cfg: Config, run_dir: Path, info: dict, results_root: Path, known: dict) -> list[str]:
    """Why the run's training is stale (empty: it is current)."""
    if not info and (run_dir / folder.RUN_INFO).is_file():
        return ["no record: run.json holds nothing; rerun or remove the folder"]
    if not info and not (run_dir / folder.MODEL).is_file():
        return ["not made"]
    if info.get("imported"):
        return []  # imported weights: nothing here made them
    if not (info.get("train") or {}).get("finished") or not (run_dir / folder.MODEL).is_file():
        return ["training unfinished"]
    recorded, values, init = folder.recorded_training(info)
    if recorded is None:
        return ["made by an older emanet (no training identity recorded)"]
    reasons = []
    now = training_identity(cfg)
    if not same_training(recorded, values, now):
        reasons.append(f"training settings changed: {folder.changed_settings(values, now)}")
    init_now = _initial_sha(cfg, results_root, known)
    if init != init_now:
        what = f"parent {cfg.train.init_from}'s model.pt" if cfg.train.init_from else "the pretrained weights"
        reasons.append(f"initial weights changed: {what} (sha256 {str(init)[:12]} -> {str(init_now)[:12]})")
    data_now = _data_checksum(cfg, cfg.data.dataset)
    if info.get("data_checksum") != data_now:
        reasons.append(f"training data changed (label checksum {info.get('data_checksum')} -> {data_now})")
    code_now = code_digest("train")
    code = (info.get("code") or {}).get("train")
    if code != code_now:
        reasons.append(f"training code changed (digest {code or folder.UNKNOWN} -> {code_now})")
    return reasons


def _evaluate_reasons(
    cfg: Config, run_dir: Path, info: dict, protocols: list[str], train_stale: bool
) -> list[tuple[str | None, str]]:
    """Why the run's evaluation is stale, as (protocol, or None for every protocol, reason) pairs; empty
    when every protocol the tables need is current."""
    if train_stale:
        return [(None, "its training reruns")]
    model_sha = folder.model_sha256(run_dir, info)
    if model_sha is None:
        return [(None, "no model.pt to evaluate")]
    evaluations = info.get("evaluations") or {}
    code_now = code_digest("evaluate")
    data_now = _data_checksum(cfg, cfg.eval.dataset)
    reasons = []
    for protocol in protocols:
        reasons += [
            (protocol, f"{protocol}: {r}")
            for r in _protocol_reasons(cfg, run_dir, protocol, evaluations, model_sha, code_now, data_now)
        ]
    return reasons


def _protocol_reasons(cfg, run_dir, protocol, evaluations, model_sha, code_now, data_now) -> list[str]:
    """Why one protocol's metrics are stale (:func:`_evaluate_reasons`, without the protocol's name)."""
    record = evaluations.get(protocol) or {}
    if not folder.metrics_path(run_dir, protocol).is_file() and not record:
        return ["never evaluated"]
    identity = record.get("identity") or {}
    if not identity:
        return ["evaluated by an older emanet (no evaluation identity recorded)"]
    reasons = []
    now = evaluation_identity(cfg, [protocol])
    values = identity.get("values")
    # the training part is current (the caller checked): a digest recorded under older identity rules is fine
    same = identity.get("digest") == digest(now) or (
        isinstance(values, dict) and digest({**values, "training": now["training"]}) == digest(now)
    )
    if not same:
        reasons.append(f"evaluation settings changed: {folder.changed_settings(identity.get('values'), now)}")
    if record.get("model_sha256") != model_sha:
        reasons.append("model.pt changed since it was evaluated")
    if record.get("data_checksum") != data_now:
        reasons.append(f"evaluated data changed ({record.get('data_checksum')} -> {data_now})")
    code = (record.get("code") or {}).get("evaluate")
    if code != code_now:
        reasons.append(f"evaluation code changed (digest {code or folder.UNKNOWN} -> {code_now})")
    if (
        not folder.metrics_path(run_dir, protocol).is_file()
        and not folder.submission_path(run_dir, protocol, "json").is_file()
    ):
        reasons.append(f"{folder.metrics_path(run_dir, protocol).name} is missing")
    return reasons


def _state(run_dir: Path, info: dict, protocols: list[str]) -> str:
    if not info and not (run_dir / folder.MODEL).is_file() and not (run_dir / folder.RUN_INFO).is_file():
        return NOT_MADE
    trained = info.get("imported") or (info.get("train") or {}).get("finished")
    evaluated = all(folder.metrics_path(run_dir, p).is_file() for p in protocols)
    return FINISHED if trained and (run_dir / folder.MODEL).is_file() and evaluated else UNFINISHED


def evaluated_at(info: dict) -> dict[str, str | None]:
    """{protocol: when its last evaluation finished} from run.json's ``evaluations``: what the report
    records of each run it reads, to tell a later evaluation."""
    evaluations = info.get("evaluations")
    if not isinstance(evaluations, dict):
        return {}
    return {p: r.get("finished") if isinstance(r, dict) else None for p, r in sorted(evaluations.items())}


def status(params: dict, profile: str | None, results_root: Path) -> dict[str, Any]:
    """The staleness of every run of the plan and of the report (module docstring; JSON-ready)."""
    from emanet import plan

    configs = plan.configs(params, profile)
    results_root = Path(results_root)
    runs: dict[str, Any] = {}
    known: dict[str, str | None] = {}
    for name, cfg in configs.items():  # parents before their finetunes (plan order)
        run_dir = folder.run_dir(results_root, name)
        info, problem = folder.read_record(run_dir)
        protocols = plan.protocols(params, name)
        train = [problem] if problem else _train_reasons(cfg, run_dir, info, results_root, known)
        parent = cfg.train.init_from
        if not train and parent and parent in runs and any(s["stage"] == "train" for s in runs[parent]["stale"]):
            train = [f"parent {parent} is stale and will be retrained"]
        stale = [{"stage": "train", "reason": r} for r in train]
        for protocol, reason in _evaluate_reasons(cfg, run_dir, info, protocols, bool(train)):
            stale.append({"stage": "evaluate", "reason": reason, **({"protocol": protocol} if protocol else {})})
        state = UNFINISHED if problem else _state(run_dir, info, protocols)
        runs[name] = {"state": state, "stale": stale}
    profile_name = next(iter(configs.values())).profile if configs else profile
    complexity = _complexity(results_root)
    return {
        "profile": profile_name,
        "runs": runs,
        "report": _report(params, results_root, runs, complexity),
        "complexity": complexity,
    }


def _report(params: dict, results_root: Path, runs: dict[str, Any], complexity: dict[str, Any]) -> dict[str, Any]:
    made = read_json_object(report_file(results_root))
    if not made:
        return {"state": NOT_MADE, "stale": [{"stage": "report", "reason": "not made"}]}
    provenance = made.get("provenance") or {}
    reasons = []
    code = (provenance.get("code") or {}).get("report")
    if code != code_digest("report"):
        reasons.append(f"report code changed (digest {code or folder.UNKNOWN} -> {code_digest('report')})")
    settings = provenance.get("settings_digest")
    if settings != report_settings_digest(params):
        reasons.append("the tables' or figures' settings in the params file changed")
    for record in provenance.get("runs") or []:
        name = record.get("experiment") if isinstance(record, dict) else None
        if name not in runs or "evaluated" not in record:
            continue
        run_dir = folder.run_dir(results_root, name)
        info, problem = folder.read_record(run_dir)
        if problem:
            reasons.append(f"{name}: {problem}")
        elif not info:
            if record.get("made", True):  # made then, gone now: the report shows what is no longer there
                gone = "not made" if not run_dir.exists() else "no record (run.json missing or empty)"
                reasons.append(f"{name}: {gone} (it was when the report was made)")
        elif evaluated_at(info) != record["evaluated"]:
            reasons.append(f"{name} was evaluated after the report was made")
    if complexity["state"] == FINISHED and complexity["stale"]:
        reasons.append("the cost columns it reads (bench/complexity.json) are stale")
    stale_runs = [name for name, run in runs.items() if run["stale"]]
    if stale_runs:
        reasons.append(f"runs it reads are stale: {', '.join(stale_runs)}")
    return {"state": FINISHED, "stale": [{"stage": "report", "reason": r} for r in reasons]}


def stale_pairs(report: dict[str, Any]) -> set[tuple[str, str]]:
    """The (run, stage) pairs :func:`status` finds stale, the report as ``("report", "report")`` and the cost
    columns as ``("complexity", "complexity")``."""
    pairs = {(name, s["stage"]) for name, run in report["runs"].items() for s in run["stale"]}
    pairs |= {("complexity", s["stage"]) for s in (report.get("complexity") or {}).get("stale", [])}
    return pairs | {("report", s["stage"]) for s in report["report"]["stale"]}


def cell_staleness(report: dict[str, Any], run: str, protocol: str) -> str | None:
    """Why a table cell showing ``protocol`` of ``run`` is stale (one line: the reasons joined by ``; ``),
    or None when it is current: the run's training reasons, else its evaluation reasons for ``protocol``
    or for every protocol."""
    entry = report["runs"].get(run)
    if not entry:
        return None
    reasons = [s["reason"] for s in entry["stale"] if s["stage"] == "train"]
    if not reasons:
        reasons = [s["reason"] for s in entry["stale"] if s.get("protocol") in (None, protocol)]
    return "; ".join(reasons) or None


def table(report: dict[str, Any]) -> str:
    """The status as aligned text: one line per run (state, then each stale stage and reason), then the
    report's."""
    rows = [("run", "state", "stale")]
    for name, run in report["runs"].items():
        stale = [f"{s['stage']}: {s['reason']}" for s in run["stale"]] or ["-"]
        rows += [(name, run["state"], stale[0])] + [("", "", line) for line in stale[1:]]
    stale = [f"{s['stage']}: {s['reason']}" for s in report["report"]["stale"]] or ["-"]
    rows += [("(report)", report["report"]["state"], stale[0])] + [("", "", line) for line in stale[1:]]
    if "complexity" in report:
        stale = [f"{s['stage']}: {s['reason']}" for s in report["complexity"]["stale"]] or ["-"]
        rows += [("(complexity)", report["complexity"]["state"], stale[0])] + [("", "", line) for line in stale[1:]]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows]
    return "\n".join([f"profile {report['profile']}", *lines]) + "\n"
