# Stage 1: input data -> preprocessed HDF5 (results/preprocessed/<D>/, with manifest.csv).
# source raw: the challenge archive is checked and preprocessed; preprocessed: the shared
# preprocessed release is checked and imported into the same layout; synthetic: generated first.


rule make_synthetic:
    output:
        raw=directory("results/synthetic/{dataset}/raw"),
        splits=directory("results/synthetic/{dataset}/splits"),
    log:
        "logs/make_synthetic/{dataset}.log",
    benchmark:
        "results/benchmarks/make_synthetic/{dataset}.tsv"
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


rule preprocess:
    input:
        unpack(raw_source),
    output:
        directory("results/preprocessed/{dataset}"),
    log:
        "logs/preprocess/{dataset}.log",
    benchmark:
        "results/benchmarks/preprocess/{dataset}.tsv"
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
