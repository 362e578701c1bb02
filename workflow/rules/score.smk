rule score:
    input:
        encoder=ENCODER,
        encoder_images=encoder_images(),
        sized_images=faithful_sized_images,
    output:
        **recorded(mi=MI_TABLE, summary=SUMMARY),
    log:
        f"results/logs/score/{SCORED}.log",
    conda:
        ENVS["torch"]
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=4000,
        runtime=30,
    params:
        bins=config["score"]["bins"],
        noise_seed=config["score"]["noise_seed"],
        protocol=score_protocol_args,
        device=lambda wildcards: train_params(wildcards)["device"],  # where the case trained
        code=lambda wildcards: code("score", SCORERS[wildcards.scoring]),
    shell:
        "python -m mifeatures.score --encoder {input.encoder}"
        " --encoder-images {input.encoder_images} --protocol {wildcards.scoring} {params.protocol}"
        " --bins {params.bins} --noise-seed {params.noise_seed} --device {params.device}"
        " --threads {threads}"
        " --mi-out {output.mi} --summary-out {output.summary} > {log} 2>&1"
