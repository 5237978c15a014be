# Cost of the backbone and heads (Table 1's FLOPs / memory / params columns).


rule complexity:
    output:
        f"{RESULTS}/bench/complexity.json",
    log:
        f"{RESULTS}/logs/complexity.log",
    params:
        emanet=EMANET,
    conda:
        "../../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{params.emanet} bench complexity --output {output} > {log} 2>&1"
