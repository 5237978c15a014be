# One training and one evaluation per run; a run shared by several tables trains once. A finetune
# (Table 2's COCO -> trainaug -> trainval chain) starts from its parent's model.pt; it is trained by the
# finetune rule and evaluated by the evaluate rule, so an evaluation edit never retrains it (as in dvc.yaml).
# Each rule depends on exactly its identity: the configure step (common.smk, at parse time) rewrites
# results/<profile>/configs/<run>/train.json or evaluate.json only when that identity changes, so an edit
# of a cadence, a location or another profile reruns nothing (README, "What reruns").
# A job with N GPUs runs one torchrun with N processes inside one Slurm task (tasks=0 stops the Slurm
# executor from adding --ntasks-per-gpu, which would start the script once per GPU). Resources come from
# job_resources (common.smk): what the job needs; the site's values come from the profile, for every job.


rule train:
    input:
        config=f"{CONFIGURED}/{{experiment}}/train.json",
        data=lambda w: trained_on(w.experiment),
        # ancient: the checkpoint a run starts from is fixed by its training identity (backbone and stem name a
        # catalog entry pinned by its sha256), so the weights job rerunning for another run's new checkpoint
        # must not retrain this one; the edge still orders a new run after the download.
        weights=ancient(WEIGHTS_RECEIPT),
    output:
        f"{RESULTS}/runs/{{experiment}}/model.pt",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}.tsv",
    log:
        f"{RESULTS}/logs/train_{{experiment}}.log",
    params:
        profile=PROFILE,
    threads: TRAINING_THREADS
    priority: priority("train")
    resources:
        **TRAINING_RESOURCES,
    conda:
        "../../environment.yml"
    shell:
        f"OMP_NUM_THREADS={{threads}} {LAUNCHER} train --experiment {{wildcards.experiment}} "
        "--profile {params.profile} --replace-changed > {log} 2>&1"


rule evaluate:
    input:
        config=f"{CONFIGURED}/{{run}}/evaluate.json",
        model=f"{RESULTS}/runs/{{run}}/model.pt",
        data=lambda w: evaluated_on(w.run),
    output:
        f"{RESULTS}/runs/{{run}}/evaluation.json",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{run}}.tsv",
    log:
        f"{RESULTS}/logs/evaluate_{{run}}.log",
    params:
        profile=PROFILE,
    threads: BASE.train.cpu_threads or 1 if GPUS == 0 else 8
    priority: priority("evaluate")
    resources:
        **job_resources(min(GPUS, 1), mem_mb=4000 if GPUS == 0 else 32000, runtime=30 if GPUS == 0 else 240),
    conda:
        "../../environment.yml"
    shell:
        f"OMP_NUM_THREADS={{threads}} {EMANET} evaluate --experiment {{wildcards.run}} "
        "--profile {params.profile} --for-tables > {log} 2>&1"


rule finetune:
    input:
        config=f"{CONFIGURED}/{{finetune}}/train.json",
        data=lambda w: trained_on(w.finetune),
        init=lambda w: f"{RESULTS}/runs/{plan.parent(config, w.finetune)}/model.pt",
    output:
        f"{RESULTS}/runs/{{finetune}}/model.pt",
    benchmark:
        f"{RESULTS}/benchmarks/finetune/{{finetune}}.tsv",
    log:
        f"{RESULTS}/logs/finetune_{{finetune}}.log",
    params:
        profile=PROFILE,
    threads: TRAINING_THREADS
    priority: priority("finetune")
    resources:
        **TRAINING_RESOURCES,
    conda:
        "../../environment.yml"
    shell:
        f"OMP_NUM_THREADS={{threads}} {LAUNCHER} train --experiment {{wildcards.finetune}} "
        "--profile {params.profile} --replace-changed > {log} 2>&1"
