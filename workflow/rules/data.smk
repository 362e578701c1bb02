rule sample:
    input:
        code=code("data", "io"),
    output:
        "data/sample/stl10_binary/train_X.bin",
    log:
        "results/logs/data/sample.log",
    conda:
        CONDA_ENV
    params:
        n_images=config["data"]["sample"]["n_images"],
        seed=config["data"]["sample"]["seed"],
    shell:
        "python -m mifeatures.data sample --n-images {params.n_images} --seed {params.seed}"
        " --out {output} > {log} 2>&1"


rule download:
    input:
        code=code("data", "io"),
    output:
        "data/stl10/stl10_binary/train_X.bin",
    log:
        "results/logs/data/download.log",
    conda:
        CONDA_ENV
    params:
        url=config["data"]["stl10"]["url"],
        md5=config["data"]["stl10"]["md5"],
    shell:
        "python -m mifeatures.data download --url {params.url} --md5 {params.md5}"
        " --out {output} > {log} 2>&1"
