# One job per (protocol, seed, case); a job killed after a saved epoch resumes from RESUME when rerun.
# threads stays 1: torch's CPU results change in the last bits with the
# thread count, and a fixed count keeps reruns byte-identical.
# checkpoint_every and the progress file change no result, so they are resources (not rerun triggers),
# not params.
rule train:
    input:
        encoder_images=encoder_images(),
        critic_images=sized_images,
    output:
        **recorded(encoder=ENCODER, loss=LOSS),
    log:
        f"results/logs/train/{RUN}.log",
    conda:
        ENVS["torch"]
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=lambda wildcards: stage_mb("train", wildcards.case, N_IMAGES),  # 4.9–6.7 GB (mifeatures.workflow.memory)
        runtime=train_runtime,
        checkpoint_every=config["train"]["checkpoint_every"],
        progress=lambda wildcards: PROGRESS.format(**wildcards),  # where a person sees how far it is
    params:
        hp=train_params,
        adam=adam_flag,
        resume=RESUME,
        code=code("stages.train"),
    shell:
        "python -m mifeatures.stages.train --case {wildcards.case}"
        " --encoder-images {input.encoder_images} --critic-images {input.critic_images}"
        " --epochs {params.hp[epochs]} --batch-size {params.hp[batch_size]} --lr {params.hp[lr]}"
        " --seed {wildcards.seed} --alpha {params.hp[alpha]} --beta {params.hp[beta]}"
        " --gamma {params.hp[gamma]} --protocol {wildcards.protocol}"
        " --device {params.hp[device]} --precision {params.hp[precision]} {params.adam}"
        " --threads {threads}"
        " --resume-state {params.resume} --checkpoint-every {resources.checkpoint_every}"
        " --progress {resources.progress}"
        " --encoder-out {output.encoder} --loss-out {output.loss} > {log} 2>&1"
