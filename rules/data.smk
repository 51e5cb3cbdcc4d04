# Stage 1: input data -> preprocessed HDF5 (results/preprocessed/<D>/, with manifest.csv).
# source raw: the challenge archive is checked and preprocessed; preprocessed: the shared
# preprocessed release is checked and imported into the same layout; synthetic: generated first.
# check_inputs checks every input before preprocessing is scheduled (a failure keeps the last good
# output) and records the inputs' fingerprint, which reruns preprocessing when a file changes.


rule make_synthetic:
    output:
        raw=directory("results/synthetic/{dataset}/raw"),
        splits=directory("results/synthetic/{dataset}/splits"),
    log:
        "logs/make_synthetic/{dataset}.log",
    benchmark:
        "results/benchmarks/make_synthetic/{dataset}.tsv"
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        synthetic=synthetic_params,
        seed=config["seeds"][0],
    script:
        "../scripts/make_synthetic.py"


rule check_inputs:
    input:
        unpack(raw_source),
    output:
        "results/fingerprints/{dataset}/{fingerprint}.json",
    log:
        "logs/check_inputs/{dataset}/{fingerprint}.log",
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        preprocessing=preprocessing_params,
        source=lambda wildcards: config["datasets"][wildcards.dataset]["source"],
        mode=lambda wildcards: config["datasets"][wildcards.dataset]["fingerprint"],
    script:
        "../scripts/check_inputs.py"


rule preprocess:
    input:
        unpack(raw_source),
        checked=checked_inputs,
    output:
        directory("results/preprocessed/{dataset}"),
    log:
        "logs/preprocess/{dataset}.log",
    benchmark:
        "results/benchmarks/preprocess/{dataset}.tsv"
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        preprocessing=preprocessing_params,
        source=lambda wildcards: config["datasets"][wildcards.dataset]["source"],
    script:
        "../scripts/preprocess.py"
