# Stage 1: raw data (generated when the config asks for synthetic data) -> preprocessed HDF5.


rule make_synthetic:
    output:
        raw=directory("results/synthetic/{dataset}/raw"),
        splits=directory("results/synthetic/{dataset}/splits"),
    params:
        synthetic=synthetic_params,
        seed=config["seeds"][0],
    log:
        "logs/make_synthetic/{dataset}.log",
    benchmark:
        "results/benchmarks/make_synthetic/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/make_synthetic.py"


rule preprocess:
    input:
        unpack(raw_source),
    output:
        directory("results/preprocessed/{dataset}"),
    params:
        preprocessing=preprocessing_params,
    log:
        "logs/preprocess/{dataset}.log",
    benchmark:
        "results/benchmarks/preprocess/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/preprocess.py"
