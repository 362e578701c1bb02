"""Aggregate stage: per-case statistics of per-image MI, and which case wins each image
(``mifeatures.core.statistics.aggregation``)."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from mifeatures.workflow import provenance, usage
from mifeatures.core.statistics.aggregation import WIN_STATISTICS, metrics, per_case, per_image
from mifeatures.core.io import atomic_write, parse_case_paths
from mifeatures.core.statistics.tables import html_table


def main(argv: list[str] | None = None) -> None:
    """CLI: aggregate the per-image summaries of every case."""
    parser = argparse.ArgumentParser(prog="mifeatures aggregate", description=usage.summary(__doc__))
    parser.add_argument("summaries", nargs="+", metavar="CASE=PATH", help="per-image summary of each case")
    parser.add_argument("--win-by", default="mean", choices=WIN_STATISTICS, help="default: %(default)s")
    parser.add_argument("--cases-out", required=True, help="per-case table to write (.csv)")
    parser.add_argument("--cases-table-out", help="the per-case table for a reader (.html), rounded")
    parser.add_argument("--images-out", required=True, help="per-image table with winners (.csv)")
    parser.add_argument("--metrics-out", required=True, help="metrics for DVC (.json)")
    args = parser.parse_args(argv)
    summary_paths = parse_case_paths(args.summaries)
    summaries = {case: pd.read_csv(path) for case, path in summary_paths.items()}
    images = per_image(summaries, args.win_by)
    cases = per_case(summaries, images)
    with atomic_write(args.images_out, "w") as handle:
        images.to_csv(handle, index=False)
    with atomic_write(args.cases_out, "w") as handle:
        cases.to_csv(handle, index=False)
    if args.cases_table_out:
        with atomic_write(args.cases_table_out, "w") as handle:
            handle.write(html_table(cases, f"This run's MI per case over {len(images)} images (nats), and the "
                                           f"images each case wins by its {args.win_by} MI"))
    with atomic_write(args.metrics_out, "w") as handle:
        json.dump(metrics(cases, args.win_by), handle, indent=2, sort_keys=True)
        handle.write("\n")
    job = provenance.record("aggregate", {f"summary[{case}]": path for case, path in summary_paths.items()},
                            {"aggregate.win_by": args.win_by})
    provenance.write([args.images_out, args.cases_out, *filter(None, [args.cases_table_out]), args.metrics_out], job)
    print(cases.to_string(index=False))


if __name__ == "__main__":
    main()
