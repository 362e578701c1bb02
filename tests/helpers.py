"""What the tests build their runs from: params.yaml's values, so that no test holds a second default."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from mifeatures.core.networks.objective import LossWeights
from mifeatures.core.networks.shapes import Critics
from mifeatures.workflow.params import load_params
from mifeatures.core.networks.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TRAIN = load_params([REPO / "params.yaml"])["train"]
WEIGHTS = LossWeights(TRAIN["alpha"], TRAIN["beta"], TRAIN["gamma"])
CRITICS = Critics(TRAIN["critic_channels"], TRAIN["global_units"])


def train_config(**changes) -> TrainConfig:
    """params.yaml's train section as a TrainConfig (first seed, the faithful protocol's prior), with ``changes``."""
    keys = ("epochs", "batch_size", "lr", "alpha", "beta", "gamma", "device", "precision")
    values = {key: TRAIN[key] for key in keys}
    return TrainConfig(**values | {"seed": TRAIN["seeds"][0], "adversarial_prior": False} | changes)


def html_rows(page: str) -> list[list[str]]:
    """The rows of the table in an HTML page, header first, each a list of its cells' text."""

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.rows[-1].append(self.cell)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    parser = Rows()
    parser.feed(page)
    return parser.rows
