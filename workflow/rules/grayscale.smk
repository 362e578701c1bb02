# One job per size: adding or removing a case builds or drops only the size it needs.
rule grayscale:
    input:
        images=RAW_IMAGES,
    output:
        **recorded(images=GRAY),
    log:
        "results/logs/grayscale/size{size}.log",
    conda:
        ENVS["data"]
    params:
        code=code("stages.grayscale"),
    shell:
        "python -m mifeatures.stages.grayscale {input.images} --size {wildcards.size}"
        " --out {output.images} > {log} 2>&1"
