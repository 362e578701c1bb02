"""The science: data, networks, information measures and statistics. No argv, no params.yaml, no
provenance, and nothing of the stages or the workflow machinery."""
