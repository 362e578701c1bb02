"""mifeatures: a rebuildable, auditable re-run of "Features that maximize mutual information".

Three layers, one folder each:

- ``mifeatures.core``: the science (``data``, ``networks``, ``information``, ``statistics``); it never parses
  argv, reads params.yaml or writes provenance, and imports nothing of the other two layers;
- ``mifeatures.stages``: one thin module per rule (``python -m mifeatures.stages.STAGE``), a command line over the
  core that writes its outputs' records; no stage imports another;
- ``mifeatures.workflow``: the machinery around them: params validation, provenance records, code digests, the
  audit and its plan, ``mifeatures build`` and ``pull``, locks and job memory.

The names below are imported on first use, so a stage loads only what it runs.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mifeatures")
except PackageNotFoundError:  # run from a checkout's src/ on PYTHONPATH, not installed (a bare GPU machine)
    __version__ = "not installed"

_PUBLIC = {
    "download_stl10": "stages.download", "make_sample": "core.data.sample",
    "read_stl10_images": "core.data.stl10", "write_stl10_images": "core.data.stl10",
    "load_images": "core.data.images", "resize_images": "core.data.images", "to_grayscale": "core.data.images",
    "mutual_information": "core.information.mi",
    "ENCODERS": "core.networks.models", "build_encoder": "core.networks.models", "map_size": "core.networks.models",
    "DeepInfoMaxLoss": "core.networks.objective", "LossWeights": "core.networks.objective",
    "ParamsError": "workflow.params", "load_params": "workflow.params", "validate_params": "workflow.params",
    "feature_maps": "core.information.maps", "load_encoder": "core.information.maps",
    "NonFiniteLossError": "core.networks.training", "TrainConfig": "core.networks.training",
}  # fmt: skip

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mifeatures' has no attribute {name!r}")
    return getattr(import_module(f"mifeatures.{_PUBLIC[name]}"), name)
