rule findings:
    input:
        reference=checked_reference,
        summaries=every_scoring(SUMMARY),
        mi=own_scoring(MI_TABLE),
        crosschecks=every_run(CROSSCHECK),
    output:
        **recorded(
            cases=f"{FINDINGS}/cases.csv",
            differences=f"{FINDINGS}/differences.csv",
            controls=f"{FINDINGS}/controls.csv",
            ksg=f"{FINDINGS}/ksg.csv",
            report=report(
                f"{FINDINGS}.md",
                caption="../report/findings.rst",
                category="6. Protocols",
                labels={"figure": "findings"},
            ),
        ),
    log:
        "results/logs/findings.log",
    conda:
        ENVS["tables"]
    params:
        runs=findings_runs(),
        settings=canonical(config["findings"]),
        dataset=config["data"]["dataset"],
        code=code("stages.findings"),
    shell:
        "python -m mifeatures.stages.findings {params.runs} --dataset {params.dataset}"
        " --bootstrap {params.settings[bootstrap]} --confidence {params.settings[confidence]}"
        " --seed {params.settings[seed]} --margin {params.settings[margin]}"
        " --primary {params.settings[primary][protocol]} {params.settings[primary][estimator]:q}"
        " --reference {params.settings[reference]}"
        " --cases-out {output.cases}"
        " --differences-out {output.differences} --controls-out {output.controls}"
        " --ksg-out {output.ksg}"
        " --report-out {output.report} > {log} 2>&1"


rule figure_protocols:
    input:
        cases=f"{FINDINGS}/cases.csv",
    output:
        **recorded(
            figure=report(
                f"{FIGURES}/protocols.png",
                caption="../report/protocols.rst",
                category="6. Protocols",
                labels={"figure": "faithful vs corrected"},
            ),
        ),
    log:
        "results/logs/figures/protocols.log",
    conda:
        ENVS["figures"]
    params:
        confidence=config["findings"]["confidence"],
        code=code("stages.figures"),
    shell:
        "python -m mifeatures.stages.figures protocols --cases {input.cases}"
        " --confidence {params.confidence} --out {output.figure} > {log} 2>&1"
