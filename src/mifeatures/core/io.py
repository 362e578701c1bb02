"""Atomic output: every file is written to a temporary sibling and renamed into place."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Iterator


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
