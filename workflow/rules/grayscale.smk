rule grayscale:
    input:
        images=RAW_IMAGES,
        code=code("grayscale", "data", "io", "provenance"),
    output:
        expand(GRAY, size=GRAY_SIZES),
    log:
        "results/logs/grayscale.log",
    conda:
        CONDA_ENV
    params:
        sizes=GRAY_SIZES,
        dataset=dataset_params(),
    shell:
        "python -m mifeatures.grayscale {input.images} --sizes {params.sizes}"
        " --outputs {output} --dataset-params {params.dataset} > {log} 2>&1"
