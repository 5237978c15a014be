# One training and one evaluation per run; a run shared by several tables trains once. A finetune
# (Table 2's COCO -> trainaug -> trainval chain) starts from its parent's model.pt and is trained and
# evaluated in one job, as in dvc.yaml (whose foreach cannot give a dependency to some items only).
# A job with N GPUs runs one torchrun with N processes inside one Slurm task (tasks=0 stops the Slurm
# executor from adding --ntasks-per-gpu, which would start the script once per GPU). Resources come from
# job_resources (common.smk): what the job needs; the site's values come from the profile, for every job.


rule train:
    input:
        data=lambda w: run_data(w.experiment),
        weights=WEIGHTS_RECEIPT,
    output:
        f"{RESULTS}/runs/{{experiment}}/model.pt",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}.tsv",
    log:
        f"{RESULTS}/logs/train_{{experiment}}.log",
    params:
        profile=PROFILE,
        launcher=launcher,
        config_hash=lambda w: CONFIGS[w.experiment].hash(),
    threads: TRAINING_THREADS
    priority: priority("train")
    resources:
        **TRAINING_RESOURCES,
    conda:
        "../../environment.yml"
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} train --experiment {wildcards.experiment} "
        "--profile {params.profile} --replace-changed > {log} 2>&1"


rule evaluate:
    input:
        f"{RESULTS}/runs/{{experiment}}/model.pt",
    output:
        f"{RESULTS}/runs/{{experiment}}/evaluation.json",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{experiment}}.tsv",
    log:
        f"{RESULTS}/logs/evaluate_{{experiment}}.log",
    params:
        profile=PROFILE,
        emanet=EMANET,
        protocols=lambda w: plan.protocols(config, w.experiment),
        scales=BASE.eval.scales,
    threads: BASE.train.cpu_threads or 1 if GPUS == 0 else 8
    priority: priority("evaluate")
    resources:
        **job_resources(min(GPUS, 1), mem_mb=4000 if GPUS == 0 else 32000, runtime=30 if GPUS == 0 else 240),
    conda:
        "../../environment.yml"
    shell:
        "OMP_NUM_THREADS={threads} {params.emanet} evaluate --experiment {wildcards.experiment} "
        "--profile {params.profile} --for-tables > {log} 2>&1"


rule finetune:
    input:
        data=lambda w: run_data(w.finetune),
        init=lambda w: f"{RESULTS}/runs/{plan.parent(config, w.finetune)}/model.pt",
    output:
        f"{RESULTS}/runs/{{finetune}}/model.pt",
        f"{RESULTS}/runs/{{finetune}}/evaluation.json",
    benchmark:
        f"{RESULTS}/benchmarks/finetune/{{finetune}}.tsv",
    log:
        f"{RESULTS}/logs/finetune_{{finetune}}.log",
    params:
        profile=PROFILE,
        launcher=launcher,
        config_hash=lambda w: CONFIGS[w.finetune].hash(),
        protocols=lambda w: plan.protocols(config, w.finetune),
        scales=BASE.eval.scales,
    threads: TRAINING_THREADS
    priority: priority("finetune")
    resources:
        **TRAINING_RESOURCES,
    conda:
        "../../environment.yml"
    shell:
        "(OMP_NUM_THREADS={threads} {params.launcher} train --experiment {wildcards.finetune} "
        "--profile {params.profile} --replace-changed && OMP_NUM_THREADS={threads} {params.launcher} "
        "evaluate --experiment {wildcards.finetune} --profile {params.profile} --for-tables) > {log} 2>&1"
