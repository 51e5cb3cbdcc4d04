# Stage 3: test-set evaluation of each trained run (per-case metrics, medpy, voxel units).


rule evaluate:
    input:
        model="results/runs/{dataset}/{method}/{labelled}/seed{seed}/model.pt",
        data="results/preprocessed/{dataset}",
    output:
        "results/runs/{dataset}/{method}/{labelled}/seed{seed}/test_metrics.csv",
        # one 2D slice (image, label, prediction) of the first test cases, for the qualitative figure
        predictions="results/runs/{dataset}/{method}/{labelled}/seed{seed}/predictions.npz",
    log:
        "logs/evaluate/{dataset}/{method}/{labelled}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{method}/{labelled}/seed{seed}.tsv"
    conda:
        train_env()
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=train_gpus(),
    params:
        inference=inference_params,
        qualitative_cases=config["report"]["qualitative_cases"],
        allocator=config["cpu_allocator"],  # the process's malloc (same results; ssnet.allocator)
    script:
        "../scripts/evaluate.py"
