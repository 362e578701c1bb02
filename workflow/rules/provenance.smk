rule provenance:
    input:
        records=[f"{figure}.prov.json" for figure in all_figures()],
        code=code("provenance", "io"),
    output:
        report(
            "results/provenance.txt",
            caption="../report/provenance.rst",
            category="5. Provenance",
            labels={"figure": "provenance of every figure"},
        ),
    log:
        "results/logs/provenance.log",
    conda:
        CONDA_ENV
    params:
        figures=all_figures(),
    shell:
        "python -m mifeatures.provenance {params.figures} --summary {output} > {log} 2>&1"
