"""Where a report comes from: when and at which commit it was made, the profile, the digests of its code
and of the params file's tables and figures, and for every run it reads the commit, training identity,
data checksum, MLflow run id and when each protocol was evaluated, as ``runs/<name>/run.json`` records
them (``emanet status`` compares these with the run folders and code now)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from emanet.report.tables import Table
from emanet.runs import folder
from emanet.runs.code import code_digest
from emanet.runs.status import evaluated_at, report_settings_digest
from emanet.tracking import git_commit


def provenance(profile: str, results_root: Path, tables: list[Table], params: dict | None = None) -> dict:
    """{"profile", "made_utc", "report_commit", "code": {"report"}, "settings_digest", "run_commits": [...],
    "runs": [{experiment, ...}]}.

    ``runs`` lists each experiment the tables read, in table order, with what its run.json records
    (missing keys as None; ``trained``: when training finished; ``training_identity``: its digest;
    ``evaluated``: {protocol: when evaluated}; ``state``: finished, unfinished (training or evaluation not
    done) or not made). ``report_commit`` is the commit of the emanet code making the report, wherever it
    runs from; ``code.report`` the digest of the report code (:func:`emanet.runs.code.code_digest`) and
    ``settings_digest`` that of ``params``' tables and figures (None without ``params``).
    """
    runs, seen = [], set()
    for table in tables:
        for row in table.rows:
            if not row.experiment or row.experiment in seen:
                continue
            seen.add(row.experiment)
            info = folder.read_record(folder.run_dir(results_root, row.experiment))[0]  # {}: damaged (status says)
            state = "not made" if not info else ("finished" if info.get("finished", True) else "unfinished")
            runs.append(
                {
                    "experiment": row.experiment,
                    "made": bool(info),
                    "state": state,
                    "training_identity": folder.recorded_training(info)[0],
                    "evaluated": evaluated_at(info),
                    "git_commit": info.get("git_commit"),
                    "data_checksum": info.get("data_checksum"),
                    "mlflow_run_id": info.get("mlflow_run_id"),
                    "trained": (info.get("train") or {}).get("finished"),
                }
            )
    commits = sorted({r["git_commit"] for r in runs if r["git_commit"]})
    return {
        "profile": profile,
        "made_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "report_commit": git_commit(Path(__file__).resolve().parent),
        "code": {"report": code_digest("report")},
        "settings_digest": report_settings_digest(params) if params is not None else None,
        "run_commits": commits,
        "runs": runs,
    }


def summary_lines(info: dict) -> list[str]:
    """The provenance header as plain sentences (report.md and report.html say the same)."""
    made = [r for r in info["runs"] if r["made"]]
    finished = sum(r["state"] == "finished" for r in made)
    hashes = sorted({r["training_identity"] for r in made if r["training_identity"]})
    commits = ", ".join(c[:12] + ("-dirty" if c.endswith("-dirty") else "") for c in info["run_commits"]) or "none"
    return [
        f"Profile: {info['profile']}. Made {info['made_utc']} by emanet at commit {info['report_commit']}.",
        f"Runs: {finished} of {len(info['runs'])} finished ({len(made) - finished} unfinished), at commit(s) "
        f"{commits}; {len(hashes)} distinct training identities (each run's is listed at the end).",
    ]
