rule score:
    input:
        encoder=ENCODER,
        encoder_images=encoder_images(),
        sized_images=protocol_sized_images,
    output:
        **recorded(
            mi=MI_TABLE,
            summary=SUMMARY,
        ),
    log:
        f"results/logs/score/{SCORED}.log",
    conda:
        ENVS["torch"]
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=lambda wildcards: stage_mb("score", wildcards.case, N_IMAGES),
        runtime=30,
    params:
        bins=config["score"]["bins"],
        noise_seed=config["score"]["noise_seed"],
        protocol=score_protocol_args,
        device=lambda wildcards: train_params(wildcards)["device"],  # where the case trained
        code=lambda wildcards: code("stages.score", scoring(wildcards).scorer),
    shell:
        "python -m mifeatures.stages.score --encoder {input.encoder}"
        " --run {wildcards.case} {wildcards.protocol} {wildcards.seed}"
        " --encoder-images {input.encoder_images} --protocol {wildcards.scoring} {params.protocol}"
        " --bins {params.bins} --noise-seed {params.noise_seed} --device {params.device}"
        " --threads {threads}"
        " --mi-out {output.mi} --summary-out {output.summary} > {log} 2>&1"
