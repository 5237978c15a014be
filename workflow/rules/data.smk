# Data stages: synthetic archives (tiny profile), verified downloads, conversion to the uniform layout.


rule synth:
    output:
        directory(SYNTH),
    benchmark:
        f"{RESULTS}/benchmarks/synth.tsv",
    log:
        f"{RESULTS}/logs/synth.log",
    params:
        profile=PROFILE,
        sources=SOURCES,
    priority: priority("synth")
    resources:
        **job_resources(),
    conda:
        "../../environment.yml"
    shell:
        f"mkdir -p {{output}} && {EMANET} synth --params params.yaml --profile {{params.profile}} > {{log}} 2>&1"


rule download:
    input:
        SYNTH,
    output:
        f"{RAW}/receipts/{{dataset}}.json",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{dataset}}.tsv",
    log:
        f"{RESULTS}/logs/download_{{dataset}}.log",
    params:
        profile=PROFILE,
        sources=SOURCES,
    priority: priority("download")
    resources:
        **job_resources(),
    conda:
        "../../environment.yml"
    shell:
        f"{EMANET} download {{wildcards.dataset}} --params params.yaml --profile {{params.profile}} > {{log}} 2>&1"


rule weights:
    input:
        SYNTH,
    output:
        WEIGHTS_RECEIPT,
    benchmark:
        f"{RESULTS}/benchmarks/weights.tsv",
    log:
        f"{RESULTS}/logs/weights.log",
    params:
        profile=PROFILE,
        needed=plan.weights(config, PROFILE),
    priority: priority("weights")
    resources:
        **job_resources(),
    conda:
        "../../environment.yml"
    shell:
        f"{EMANET} download weights --params params.yaml --profile {{params.profile}} > {{log}} 2>&1"


rule prepare:
    input:
        f"{RAW}/receipts/{{dataset}}.json",
    output:
        directory(f"{PREPARED}/{{dataset}}"),
    benchmark:
        f"{RESULTS}/benchmarks/prepare/{{dataset}}.tsv",
    log:
        f"{RESULTS}/logs/prepare_{{dataset}}.log",
    params:
        profile=PROFILE,
    threads: PREPARE_THREADS
    priority: priority("prepare")
    resources:
        **job_resources(mem_mb=8000, runtime=120),
    conda:
        "../../environment.yml"
    shell:
        f"{EMANET} prepare {{wildcards.dataset}} --params params.yaml --profile {{params.profile}} "
        "--workers {threads} > {log} 2>&1"
