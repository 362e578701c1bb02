"""How the command lines describe themselves: a module docstring's first paragraph, whole and as plain text."""

from __future__ import annotations

import re


def summary(doc: str) -> str:
    """The first paragraph of ``doc`` on one line, reST's literal markup (````name````) shown as the name.

    >>> summary("Score stage: MI of each map\\n(``mifeatures.core``), by one protocol.\\n\\nMore.")
    'Score stage: MI of each map (mifeatures.core), by one protocol.'
    """
    return re.sub(r"``([^`]+)``", r"\1", " ".join(doc.strip().split("\n\n")[0].split()))
