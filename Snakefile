# emanet pipeline (Snakemake): `snakemake -c2` reruns the whole paper on the profile in params.yaml
# (tiny by default); `snakemake -c2 --config profile=paper` for the real recipe; on a cluster
# `snakemake --workflow-profile workflow/profiles/slurm`. Every rule is one `emanet ...` command: the
# logic lives in the package, the values in params.yaml.

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/report/report.html",
