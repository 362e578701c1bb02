"""Statistics over scored runs: per-case aggregates, seed-level inference and the findings' text."""
