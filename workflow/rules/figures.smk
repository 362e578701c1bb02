rule figure_loss:
    input:
        losses=per_case(LOSS),
    output:
        **recorded(
            figure=report(
                f"{FIGURES}/loss.png",
                caption="../report/loss.rst",
                category="1. Training",
                labels={"figure": "loss per epoch"},
            ),
            data=f"{FIGURES}/loss.csv",
        ),
    log:
        "results/logs/figures/loss.log",
    conda:
        ENVS["figures"]
    params:
        losses=case_pairs(LOSS),
        code=code("stages.figures"),
    shell:
        "python -m mifeatures.stages.figures loss {params.losses} --data {output.data}"
        " --out {output.figure} > {log} 2>&1"


rule figure_maps:
    input:
        maps=article(IMAGE_MAPS),
        bounds=article(IMAGE_BOUNDS),
        encoder_images=encoder_images(),
        mi=article(MI_TABLE),
    output:
        **recorded(
            figure=report(
                f"{FIGURES}/maps_{{case}}_image{{image}}.png",
                caption="../report/maps.rst",
                category="2. Feature maps",
                subcategory="image {image}",
                labels={"case": "{case}", "image": "{image}"},
            ),
        ),
    log:
        "results/logs/figures/maps_{case}_image{image}.log",
    conda:
        ENVS["figures"]
    params:
        code=code("stages.figures"),
        dataset=config["data"]["dataset"],
        order=config["figures"]["maps_order"],
    shell:
        "python -m mifeatures.stages.figures maps --maps {input.maps} --bounds {input.bounds}"
        " --encoder-images {input.encoder_images} --mi {input.mi} --image {wildcards.image}"
        " --case {wildcards.case} --dataset {params.dataset} --order {params.order}"
        " --out {output.figure} > {log} 2>&1"


rule figure_chosen:
    input:
        summaries=per_case(SUMMARY),
    output:
        **recorded(
            figure=report(
                f"{FIGURES}/chosen_mean_mi.png",
                caption="../report/chosen_mean_mi.rst",
                category="3. Mean MI per case",
                labels={"figure": "chosen images"},
            ),
        ),
    log:
        "results/logs/figures/chosen_mean_mi.log",
    conda:
        ENVS["figures"]
    params:
        summaries=case_pairs(SUMMARY),
        images=config["figures"]["images"],
        code=code("stages.figures"),
    shell:
        "python -m mifeatures.stages.figures chosen {params.summaries} --images {params.images}"
        " --out {output.figure} > {log} 2>&1"


rule figure_distribution:
    input:
        summaries=per_case(SUMMARY),
    output:
        **recorded(
            figure=report(
                f"{FIGURES}/mi_distribution.png",
                caption="../report/mi_distribution.rst",
                category="4. All images",
                labels={"figure": "MI distribution"},
            ),
        ),
    log:
        "results/logs/figures/mi_distribution.log",
    conda:
        ENVS["figures"]
    params:
        summaries=case_pairs(SUMMARY),
        code=code("stages.figures"),
    shell:
        "python -m mifeatures.stages.figures distribution {params.summaries}"
        " --out {output.figure} > {log} 2>&1"


rule figure_wins:
    input:
        cases="results/aggregate/cases.csv",
    output:
        **recorded(
            figure=report(
                f"{FIGURES}/wins.png",
                caption="../report/wins.rst",
                category="4. All images",
                labels={"figure": "wins per case"},
            ),
        ),
    log:
        "results/logs/figures/wins.log",
    conda:
        ENVS["figures"]
    params:
        win_by=config["aggregate"]["win_by"],
        code=code("stages.figures"),
    shell:
        "python -m mifeatures.stages.figures wins --cases {input.cases} --win-by {params.win_by}"
        " --out {output.figure} > {log} 2>&1"
