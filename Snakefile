# SS-Net reproduction pipeline: raw data -> HDF5 -> training (dataset x method x labelled x seed)
# -> test-set evaluation -> paper-style tables and figures.
#   snakemake --cores 8 --use-conda all                       (paper protocol, real data)
#   snakemake all --cores 2 --configfile configs/demo.yaml    (synthetic demo)


from snakemake.utils import min_version

min_version("9.0")


# ---- load configuration ------------------------------------------------------------------------
configfile: "config.yaml"


# ---- load rules --------------------------------------------------------------------------------
include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/released.smk"
include: "rules/cost.smk"


# ---- local job server (job_server: true; ssnet.jobserver) -----------------------------------------
onstart:
    start_job_server()


onsuccess:
    stop_job_server()


onerror:
    stop_job_server()


# ---- target rules ------------------------------------------------------------------------------
rule all:
    default_target: True
    input:
        final_outputs(),
