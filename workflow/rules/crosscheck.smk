# The KSG estimate of a seeded subsample of each run's image–map pairs, and its null, for the findings.
rule crosscheck:
    input:
        encoder=ENCODER,
        encoder_images=encoder_images(),
        sized_images=protocol_sized_images,
    output:
        **recorded(table=CROSSCHECK),
    log:
        f"results/logs/crosscheck/{RUN}.log",
    conda:
        ENVS["torch"]
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=lambda wildcards: stage_mb("crosscheck", wildcards.case, N_IMAGES),
        runtime=30,
    params:
        ksg=canonical(config["score"]["ksg"]),
        protocol=sized_images_arg,
        device=lambda wildcards: train_params(wildcards)["device"],
        code=code("stages.crosscheck"),
    shell:
        "python -m mifeatures.stages.crosscheck --encoder {input.encoder}"
        " --run {wildcards.case} {wildcards.protocol} {wildcards.seed}"
        " --encoder-images {input.encoder_images} --protocol {wildcards.protocol} {params.protocol}"
        " --images {params.ksg[images]} --maps {params.ksg[maps]} --pixels {params.ksg[pixels]}"
        " --neighbors {params.ksg[neighbors]} --seed {params.ksg[seed]} --null-shifts {params.ksg[null_shifts]}"
        " --device {params.device} --threads {threads} --out {output.table} > {log} 2>&1"
