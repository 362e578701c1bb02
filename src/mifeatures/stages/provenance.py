"""Provenance stage: results/provenance.txt, every figure's record summarised (``mifeatures.workflow.audit``)."""

from mifeatures.workflow.audit import main

if __name__ == "__main__":
    main()
