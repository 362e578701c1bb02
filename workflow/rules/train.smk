# One job per (protocol, seed, case), or with train.together per (protocol, case), writing each seed's outputs.
# A one-seed job killed after a saved epoch resumes from RESUME when rerun.
# threads stays 1: torch's CPU results change in the last bits with the
# thread count, and a fixed count keeps reruns byte-identical.
# checkpoint_every and the progress file change no result, so they are resources (not rerun triggers),
# not params.
rule train:
    input:
        encoder_images=encoder_images(),
        critic_images=sized_images,
    output:
        **recorded(encoder=trained(ENCODER), loss=trained(LOSS)),
    log:
        (
            "results/logs/train/{protocol}/seeds-together/{case}.log"
            if TOGETHER
            else f"results/logs/train/{RUN}.log"
        ),
    conda:
        ENVS["torch"]
    threads: 1
    resources:
        gpu=gpus,
        # 4.9–6.7 GB a seed at the article's critics (mifeatures.workflow.memory)
        mem_mb=lambda wildcards: stage_mb(
            "train",
            wildcards.case,
            N_IMAGES,
            len(job_seeds(wildcards)),
            critics(wildcards),
        ),
        runtime=train_runtime,
        checkpoint_every=config["train"]["checkpoint_every"],
        progress=solo_option("--progress", PROGRESS),  # where a person sees how far it is
    params:
        hp=train_params,
        adam=adam_flag,
        graph=graph_flag,
        together=together_flag,
        seeds=job_seeds,
        encoder_out=written(ENCODER),
        loss_out=written(LOSS),
        resume=solo_option("--resume-state", RESUME),
        code=(
            code("stages.train", "core.networks.together")
            if TOGETHER
            else code("stages.train")
        ),
    shell:
        "python -m mifeatures.stages.train --case {wildcards.case}"
        " --encoder-images {input.encoder_images} --critic-images {input.critic_images}"
        " --epochs {params.hp[epochs]} --batch-size {params.hp[batch_size]} --lr {params.hp[lr]}"
        " --seed {params.seeds} {params.together} --alpha {params.hp[alpha]} --beta {params.hp[beta]}"
        " --gamma {params.hp[gamma]} --critic-channels {params.hp[critic_channels]}"
        " --global-units {params.hp[global_units]} --protocol {wildcards.protocol}"
        " --device {params.hp[device]} --precision {params.hp[precision]} {params.adam} {params.graph}"
        " --threads {threads}"
        " {params.resume} --checkpoint-every {resources.checkpoint_every}"
        " {resources.progress}"
        " --encoder-out {params.encoder_out} --loss-out {params.loss_out} > {log} 2>&1"
