"""The machinery between the science and Snakemake/DVC: params, provenance records, code digests, the
audit and its plan, `mifeatures build` and `pull`, locks and job memory."""
