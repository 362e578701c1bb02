rule article_check:
    input:
        losses=per_case(LOSS),
    output:
        **recorded(
            table=report(
                "results/article_losses.csv",
                caption="../report/article_losses.rst",
                category="1. Training",
                labels={"figure": "the article's printed losses beside this run's"},
            ),
        ),
    log:
        "results/logs/article_check.log",
    conda:
        ENVS["tables"]
    params:
        losses=case_pairs(LOSS),
        code=code("stages.article"),
    shell:
        "python -m mifeatures.stages.article {params.losses} --out {output.table} > {log} 2>&1"
