rule article_check:
    input:
        losses=per_case(LOSS),
    output:
        **recorded(
            table="results/article_losses.csv",
            page=report(
                "results/article_losses.html",
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
        "python -m mifeatures.stages.article {params.losses} --out {output.table} --table-out {output.page} > {log} 2>&1"
