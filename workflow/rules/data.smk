rule sample:
    output:
        **recorded(images="data/sample/stl10_binary/train_X.bin"),
    log:
        "results/logs/data/sample.log",
    conda:
        ENVS["data"]
    params:
        n_images=config["data"]["sample"]["n_images"],
        seed=config["data"]["sample"]["seed"],
        code=code("stages.sample"),
    shell:
        "python -m mifeatures.stages.sample --n-images {params.n_images} --seed {params.seed}"
        " --out {output.images} > {log} 2>&1"


# The md5 is what the archive is; the URL is only where to find it, a resource rather than a param
# (params are rerun triggers, resources are not): pointing it at a mirror reruns nothing.
rule download:
    output:
        **recorded(images="data/stl10/stl10_binary/train_X.bin"),
    log:
        "results/logs/data/download.log",
    conda:
        ENVS["data"]
    resources:
        url=config["data"]["stl10"]["url"],
    params:
        md5=config["data"]["stl10"]["md5"],
        code=code("stages.download"),
    shell:
        "python -m mifeatures.stages.download --url {resources.url:q} --md5 {params.md5}"
        " --out {output.images} > {log} 2>&1"


# Your own images (data.dataset: folder): every file an input, so an added, removed or edited image reruns it.
rule folder:
    input:
        images=FOLDER_IMAGES,
    output:
        **recorded(images="data/folder/stl10_binary/train_X.bin"),
    log:
        "results/logs/data/folder.log",
    conda:
        ENVS["data"]
    params:
        folder=config["data"]["folder"]["path"],
        code=code("stages.folder"),
    shell:
        "python -m mifeatures.stages.folder {params.folder:q} --out {output.images} > {log} 2>&1"
