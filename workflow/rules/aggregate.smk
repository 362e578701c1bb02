rule aggregate:
    input:
        summaries=per_case(SUMMARY),
    output:
        **recorded(
            cases="results/aggregate/cases.csv",
            cases_table=report(
                "results/aggregate/cases.html",
                caption="../report/cases.rst",
                category="4. All images",
                labels={"figure": "this run's numbers per case"},
            ),
            images="results/aggregate/images.csv",
            metrics="results/aggregate/metrics.json",
        ),
    log:
        "results/logs/aggregate.log",
    conda:
        ENVS["tables"]
    params:
        summaries=case_pairs(SUMMARY),
        win_by=config["aggregate"]["win_by"],
        code=code("stages.aggregate"),
    shell:
        "python -m mifeatures.stages.aggregate {params.summaries} --win-by {params.win_by}"
        " --cases-out {output.cases} --cases-table-out {output.cases_table} --images-out {output.images}"
        " --metrics-out {output.metrics} > {log} 2>&1"
