rule provenance:
    input:
        records=[f"{figure}{SUFFIX}" for figure in all_figures()],
    output:
        **recorded(
            summary=report(
                "results/provenance.txt",
                caption="../report/provenance.rst",
                category="5. Provenance",
                labels={"figure": "provenance of every figure"},
            ),
        ),
    log:
        "results/logs/provenance.log",
    conda:
        ENVS["tables"]
    params:
        figures=all_figures(),
        code=code("stages.provenance"),
    shell:
        "python -m mifeatures.stages.provenance {params.figures} --summary {output.summary} > {log} 2>&1"
