# emanet pipeline entry point (Snakemake). Every rule is one `emanet ...` command; the logic lives in
# the package, the values in params.yaml. Run: `snakemake -c2` (tiny profile by default),
# `snakemake -c2 --config profile=paper` for the real recipe.
import sys

configfile: "params.yaml"

PROFILE = config["profile"]
RESULTS = f"results/{PROFILE}"
# The interpreter running Snakemake is the project's venv; jobs call the CLI through it.
EMANET = f"{sys.executable} -m emanet.cli"


include: "workflow/rules/bench.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/bench/complexity.json",
