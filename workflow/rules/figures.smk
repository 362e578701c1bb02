FIGURE_CODE = code("figures", "score", "grayscale", "models", "io", "provenance")


rule figure_loss:
    input:
        losses=per_case(LOSS),
        code=FIGURE_CODE,
    output:
        figure=report(
            f"{FIGURES}/loss.png",
            caption="../report/loss.rst",
            category="1. Training",
            labels={"figure": "loss per epoch"},
        ),
        record=f"{FIGURES}/loss.png.prov.json",
    log:
        "results/logs/figures/loss.log",
    conda:
        CONDA_ENV
    params:
        losses=case_pairs(LOSS),
    shell:
        "python -m mifeatures.figures loss {params.losses} --out {output.figure} > {log} 2>&1"


rule figure_maps:
    input:
        encoder=ENCODER,
        encoder_images=encoder_images(),
        sized_images=sized_images,
        mi=MI_TABLE,
        summary=SUMMARY,
        code=FIGURE_CODE,
    output:
        figure=report(
            f"{FIGURES}/maps_{{case}}_image{{image}}.png",
            caption="../report/maps.rst",
            category="2. Feature maps",
            subcategory="image {image}",
            labels={"case": "{case}", "image": "{image}"},
        ),
        record=f"{FIGURES}/maps_{{case}}_image{{image}}.png.prov.json",
    log:
        "results/logs/figures/maps_{case}_image{image}.log",
    conda:
        CONDA_ENV
    shell:
        "python -m mifeatures.figures maps --encoder {input.encoder}"
        " --encoder-images {input.encoder_images} --sized-images {input.sized_images}"
        " --mi {input.mi} --summary {input.summary} --image {wildcards.image}"
        " --out {output.figure} > {log} 2>&1"


rule figure_chosen:
    input:
        summaries=per_case(SUMMARY),
        code=FIGURE_CODE,
    output:
        figure=report(
            f"{FIGURES}/chosen_mean_mi.png",
            caption="../report/chosen_mean_mi.rst",
            category="3. Mean MI per case",
            labels={"figure": "chosen images"},
        ),
        record=f"{FIGURES}/chosen_mean_mi.png.prov.json",
    log:
        "results/logs/figures/chosen_mean_mi.log",
    conda:
        CONDA_ENV
    params:
        summaries=case_pairs(SUMMARY),
        images=config["figures"]["images"],
    shell:
        "python -m mifeatures.figures chosen {params.summaries} --images {params.images}"
        " --out {output.figure} > {log} 2>&1"


rule figure_distribution:
    input:
        summaries=per_case(SUMMARY),
        code=FIGURE_CODE,
    output:
        figure=report(
            f"{FIGURES}/mi_distribution.png",
            caption="../report/mi_distribution.rst",
            category="4. All images",
            labels={"figure": "MI distribution"},
        ),
        record=f"{FIGURES}/mi_distribution.png.prov.json",
    log:
        "results/logs/figures/mi_distribution.log",
    conda:
        CONDA_ENV
    params:
        summaries=case_pairs(SUMMARY),
    shell:
        "python -m mifeatures.figures distribution {params.summaries}"
        " --out {output.figure} > {log} 2>&1"


rule figure_wins:
    input:
        cases="results/aggregate/cases.csv",
        code=FIGURE_CODE,
    output:
        figure=report(
            f"{FIGURES}/wins.png",
            caption="../report/wins.rst",
            category="4. All images",
            labels={"figure": "wins per case"},
        ),
        record=f"{FIGURES}/wins.png.prov.json",
    log:
        "results/logs/figures/wins.log",
    conda:
        CONDA_ENV
    params:
        win_by=config["aggregate"]["win_by"],
    shell:
        "python -m mifeatures.figures wins --cases {input.cases} --win-by {params.win_by}"
        " --out {output.figure} > {log} 2>&1"
