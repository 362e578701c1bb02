"""Atomic output: every file is written to a temporary sibling and renamed into place."""

from __future__ import annotations

import contextlib
import html
import os
import re
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # the stages that write no table need not import pandas
    import pandas as pd


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or exception leaves any previous ``path`` untouched and no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    discard_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def discard_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings that writes of ``path`` killed mid-way (SIGKILL, power loss) left;
    return them. Only one job ever writes a given path, so when it starts no other write of it is live.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> for name in (".loss.csv.k3j_x9ab.tmp", ".loss.csv.prov.json.k3j_x9ab.tmp", "loss.csv"):
    ...     _ = (folder / name).write_text("")
    >>> [stale.name for stale in discard_stale_temporaries(folder / "loss.csv")]
    ['.loss.csv.k3j_x9ab.tmp']
    """
    path = Path(path)
    # mkstemp's names: the prefix, 8 characters of [a-z0-9_], the suffix.
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    stale = [sibling for sibling in path.parent.glob(f".{path.name}.*.tmp") if pattern.fullmatch(sibling.name)]
    for sibling in stale:
        sibling.unlink(missing_ok=True)
    return stale


def parse_case_paths(pairs: list[str]) -> dict[str, Path]:
    """Parse CLI arguments ``CASE=PATH`` into {case: path}, keeping their order.

    >>> parse_case_paths(["a=results/a.csv", "c=results/c.csv"])
    {'a': PosixPath('results/a.csv'), 'c': PosixPath('results/c.csv')}
    """
    parsed = {}
    for pair in pairs:
        case, sep, path = pair.partition("=")
        if not sep or not case or not path:
            raise ValueError(f"expected CASE=PATH, got {pair!r}")
        if case in parsed:
            raise ValueError(f"case {case!r} given twice")
        parsed[case] = Path(path)
    return parsed


def html_table(table: pd.DataFrame, title: str, digits: int = 4) -> str:
    """``table`` as a self-contained HTML page for a reader: the Snakemake report shows an HTML result in place,
    where a CSV is only a download. Numbers to ``digits`` significant digits (the CSV beside it keeps them all),
    an empty cell where there is no value.

    >>> import pandas as pd
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
