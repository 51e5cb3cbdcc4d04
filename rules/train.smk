# Stage 2: one training run per dataset x method x labelled count x seed.
# Resume checkpoints live outside the declared outputs (results/checkpoints/...) so that a killed
# or preempted job, rerun by Snakemake (--retries), continues where it stopped.


rule train:
    input:
        data="results/preprocessed/{dataset}",
    output:
        model="results/runs/{dataset}/{method}/{labelled}/seed{seed}/model.pt",
        train_log="results/runs/{dataset}/{method}/{labelled}/seed{seed}/train_log.csv",
        val_log="results/runs/{dataset}/{method}/{labelled}/seed{seed}/val_log.csv",
        info="results/runs/{dataset}/{method}/{labelled}/seed{seed}/run_info.json",
    log:
        "logs/train/{dataset}/{method}/{labelled}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{method}/{labelled}/seed{seed}.tsv"
    conda:
        train_env()
    threads: 1
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=train_gpus(),
    params:
        run=train_params,
        checkpoint_dir="results/checkpoints/{dataset}/{method}/{labelled}/seed{seed}",
    script:
        "../scripts/train.py"
