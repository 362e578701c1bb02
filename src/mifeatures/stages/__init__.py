"""The workflow's stages: one module per rule, each a thin command line over the core that writes its
outputs' provenance records. A stage never imports another stage."""
