# One image's maps and MI bounds, as a protocol's scorer computes them: what a maps figure draws. Any image's
# figure builds from its own job, on that image alone, and no case is rescored for it.
rule maps:
    input:
        encoder=ENCODER,
        encoder_images=encoder_images(),
        sized_images=protocol_sized_images,
    output:
        **recorded(maps=IMAGE_MAPS, bounds=IMAGE_BOUNDS),
    log:
        f"results/logs/maps/{SCORED}/image{{image}}.log",
    conda:
        ENVS["torch"]
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=lambda wildcards: stage_mb("score", wildcards.case, N_IMAGES),
        runtime=10,
    params:
        bins=config["score"]["bins"],
        noise_seed=config["score"]["noise_seed"],
        sized_images=sized_images_arg,
        device=lambda wildcards: train_params(wildcards)["device"],  # where the case trained
        code=code("stages.maps"),
    shell:
        "python -m mifeatures.stages.maps --encoder {input.encoder}"
        " --run {wildcards.case} {wildcards.protocol} {wildcards.seed}"
        " --encoder-images {input.encoder_images} --protocol {wildcards.scoring} {params.sized_images}"
        " --image {wildcards.image} --bins {params.bins} --noise-seed {params.noise_seed}"
        " --device {params.device} --threads {threads}"
        " --maps-out {output.maps} --bounds-out {output.bounds} > {log} 2>&1"
