# Table 1's cost columns, then every table and figure beside the paper's numbers.


rule complexity:
    output:
        f"{RESULTS}/bench/complexity.json",
    benchmark:
        f"{RESULTS}/benchmarks/complexity.tsv",
    log:
        f"{RESULTS}/logs/complexity.log",
    params:
    priority: priority("complexity")
    resources:
        **job_resources(),
    conda:
        "../../environment.yml"
    shell:
        f"{EMANET} bench complexity --output {{output}} > {{log}} 2>&1"


rule report:
    input:
        f"{CONFIGURED}/report.json",
        expand(f"{RESULTS}/runs/{{run}}/evaluation.json", run=RUNS),
        f"{RESULTS}/bench/complexity.json",
    output:
        f"{RESULTS}/report/report.html",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv",
    log:
        f"{RESULTS}/logs/report.log",
    params:
        profile=PROFILE,
    priority: priority("report")
    resources:
        **job_resources(),
    conda:
        "../../environment.yml"
    shell:
        f"{EMANET} report --profile {{params.profile}} > {{log}} 2>&1"
