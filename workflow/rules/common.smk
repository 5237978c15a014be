# Shared values, all derived from params.yaml (plus --config overrides) by the emanet package.
import dataclasses
import shlex
import sys

from snakemake.exceptions import WorkflowError

from emanet import plan
from emanet.bench import timings
from emanet.config import ConfigError, check_all, resolve
from emanet.runs.configure import configs_dir, configure


PROFILE = config["profile"]
try:  # names first, then every run in every profile (a typo anywhere fails here, naming params.yaml and the key)
    check_all(config)
    BASE = resolve(config, PROFILE)
    EXPERIMENTS = plan.experiments(config)
    FINETUNES = plan.finetunes(config)
    CONFIGS = plan.configs(config, PROFILE)
    DATASETS = plan.datasets(config, PROFILE)
    PRIORITIES = timings.priorities(timings.job_graph(config, PROFILE))
    # The configure step: each run's training and evaluation identity as a file, rewritten only when it
    # changes, so each rule below depends on exactly its identity (emanet/runs/configure.py). At parse time,
    # so `snakemake -n` sees an edit; idempotent, and safe when a cluster's jobs parse this file at once.
    configure(config, PROFILE)
except ConfigError as error:
    raise WorkflowError(f"params.yaml: {error}") from None
RUNS = EXPERIMENTS + FINETUNES
RESULTS = f"results/{PROFILE}"
CONFIGURED = configs_dir(PROFILE).as_posix()
RAW = BASE.sources.raw_dir
PREPARED = BASE.data.root
WEIGHTS_RECEIPT = f"{BASE.sources.weights_dir}/receipt.json"
SYNTH = f"data/{PROFILE}/synth"
# The interpreter running Snakemake is the project's venv; every job calls the CLI through it. Written into
# the shell text of each job when the Snakefile is read (an f-string), never into params (a changed param
# reruns its job, --rerun-triggers params in profiles/default/config.yaml; moving the venv must not).
EMANET = f"{shlex.quote(sys.executable)} -m emanet.cli"
# Training resources per profile: the paper's 4-GPU nodes, or one CPU job.
GPUS = 4 if PROFILE == "paper" else 0


def job_resources(gpus=0, **needs):
    """What one job asks the cluster for: ``gpus`` GPUs and ``needs`` (mem_mb, runtime, tasks...).

    The resources of every job of the workflow come from here (``**job_resources(...)``), so none
    names a site value: the partition, account, GPU model and QoS are the profile's default-resources
    (workflow/profiles/slurm/config.yaml), which Snakemake gives every job, including those of rules added
    later; a value set in a rule would override the site's (tests/test_cluster.py checks that none does).
    The one exception is made here: a job without GPUs drops the site's ``gpu_model``, because the Slurm
    executor reads a GPU model alone as a request for one GPU.
    """
    if gpus:
        return dict(needs, gpu=gpus)
    return dict(needs, gpu_model=None)


# Training (train and finetune): one torchrun over all the node's GPUs in one Slurm task (tasks=0 stops
# the Slurm executor's one-task-per-GPU default), or one CPU process.
TRAINING_THREADS = BASE.train.cpu_threads or 1 if GPUS == 0 else 16
TRAINING_RESOURCES = job_resources(GPUS, tasks=0, cpus_per_gpu=4, mem_mb=4000 if GPUS == 0 else 64000,
                                   runtime=60 if GPUS == 0 else 1440)


def priority(stage):
    """A job's priority: the training and evaluation work of the longest chain from it to the report
    (timings.priorities), so Snakemake starts the heads of Table 2's chains first."""
    return lambda wildcards: PRIORITIES[timings.Job(stage, next(iter(wildcards), None))]


# Conversion workers: prepare uses a pool only from 64 images on, so on the tiny profile a prepare job takes
# one core; asking for two made it wait until both were free, a core idle meanwhile.
PREPARE_THREADS = 2 if GPUS else 1


def trained_on(run):
    """The prepared dataset a run trains on."""
    return f"{PREPARED}/{CONFIGS[run].data.dataset}"


def evaluated_on(run):
    """The prepared dataset a run is evaluated on."""
    return f"{PREPARED}/{CONFIGS[run].eval.dataset or CONFIGS[run].data.dataset}"


# Training's command: one torchrun with all the node's GPUs inside one Slurm task, or the plain CLI on a CPU.
LAUNCHER = (
    f"{shlex.quote(sys.executable)} -m torch.distributed.run --standalone --nproc_per_node={GPUS} -m emanet.cli"
    if GPUS > 1
    else EMANET
)
# The data stages' params: the values whose change must rerun them (--rerun-triggers params). A plain dict:
# Snakemake ignores a param it cannot repr (a dataclass), so the SourcesConfig itself would never trigger.
SOURCES = dataclasses.asdict(BASE.sources)



wildcard_constraints:
    dataset="|".join(DATASETS),
    experiment="|".join(EXPERIMENTS),
    finetune="|".join(FINETUNES),
    run="|".join(RUNS),


localrules:
    synth,
    download,
    weights,
    complexity,
    report,
