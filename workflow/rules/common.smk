# Shared values, all derived from params.yaml (plus --config overrides) by the emanet package.
import sys

from emanet import pipeline
from emanet.config import resolve


PROFILE = config["profile"]
BASE = resolve(config, PROFILE)
EXPERIMENTS = pipeline.experiments(config)
FINETUNES = pipeline.finetunes(config)
RUNS = EXPERIMENTS + FINETUNES
CONFIGS = pipeline.configs(config, PROFILE)
DATASETS = pipeline.datasets(config, PROFILE)
RESULTS = f"results/{PROFILE}"
RAW = BASE.sources.raw_dir
PREPARED = BASE.data.root
WEIGHTS_RECEIPT = f"{BASE.sources.weights_dir}/receipt.json"
SYNTH = f"data/{PROFILE}/synth"
# The interpreter running Snakemake is the project's venv; every job calls the CLI through it.
EMANET = f"{sys.executable} -m emanet.cli"
# Training resources per profile: the paper's 4-GPU nodes, or one CPU job.
GPUS = 4 if PROFILE == "paper" else 0


def run_data(run):
    """The prepared datasets a run trains and evaluates on."""
    cfg = CONFIGS[run]
    return sorted({f"{PREPARED}/{d}" for d in (cfg.data.dataset, cfg.eval.dataset) if d})


def launcher(wildcards, threads):
    """One torchrun with all the node's GPUs inside one Slurm task, or the plain CLI on a CPU."""
    if GPUS > 1:
        return f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node={GPUS} -m emanet.cli"
    return EMANET



wildcard_constraints:
    dataset="|".join(DATASETS),
    experiment="|".join(EXPERIMENTS),
    finetune="|".join(FINETUNES),


localrules:
    synth,
    download,
    weights,
    complexity,
    report,
