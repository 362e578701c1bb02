"""Tables for a reader: a table as a self-contained HTML page, which the Snakemake report shows in place."""

from __future__ import annotations

import html

import pandas as pd


def html_table(table: pd.DataFrame, title: str, digits: int = 4) -> str:
    """``table`` as a self-contained HTML page for a reader: the Snakemake report shows an HTML result in place,
    where a CSV is only a download. Numbers to ``digits`` significant digits (the CSV beside it keeps them all),
    an empty cell where there is no value.

    >>> page = html_table(pd.DataFrame({"case": ["a"], "mean_mi": [0.12345678901234567]}), "Mean MI")
    >>> "<td>0.1235</td>" in page and "<title>Mean MI</title>" in page
    True
    """
    body = table.to_html(index=False, border=0, na_rep="", float_format=lambda value: f"{value:.{digits}g}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>\n<style>"
            "body{font-family:sans-serif;font-size:14px} table{border-collapse:collapse}"
            " th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}"
            " th:first-child,td:first-child{text-align:left}"
            f"</style></head>\n<body><p>{html.escape(title)}</p>\n{body}\n</body></html>\n")
