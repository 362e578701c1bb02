"""Memory of the workflow's jobs: glibc's allocator settings for the jobs that run torch, each torch stage's
declared peak (a rule's ``mem_mb``), and how much of the machine a local run may use, so that it never starts
more jobs than the memory holds. No torch here: the workflow reads this at parse time."""

from __future__ import annotations

import math

import psutil

from mifeatures.core.networks.shapes import INPUT_SIZE, Critics, map_size

# glibc gives every allocation over 32 MB a fresh mmap and unmaps it when freed, so each training step maps
# and faults in its large tensors again (≈ 3.7 µs per 4 KB page here). Kept in the heap instead, a step is
# 1.2–1.6× faster with bit-identical losses, for 10–20 % more peak memory (docs/speed.md).
ALLOCATOR_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"

MB = 2**20
# Peaks measured by benchmarks/memory.py (fp32 on a CPU, the allocator above): a training job holds the torch
# runtime (≈ 350 MB) and, per weight of the global critic's first Linear, 32–33 bytes (the weight, its
# gradient, Adam's two moments and the update's temporaries): 3.9 GB for case a, 4.6 GB for c and d, 5.4 GB
# for b. A scoring job peaked at 0.53–0.57 GB on 20 images.
TRAIN_RUNTIME_MB = 400
TRAIN_BYTES_PER_CRITIC_WEIGHT = 33
# Seeds trained together (train.together, one batched computation) held 34–40 bytes per weight and seed: 9.2 GB
# for 2 seeds of case a, 13.3 GB for 3; 12.7 GB for 2 of b, 16.4 GB for 3 (20 images; benchmarks/memory.py --seeds).
TOGETHER_BYTES_PER_CRITIC_WEIGHT = 42
SCORE_RUNTIME_MB = 1000
# Each image is held as a float32 array at 96×96 and at the map size, and may be copied once on its way in.
IMAGE_COPIES = 2
# Declared = measured model × this, for what the measurements did not cover (other torch builds, devices).
MARGIN = 1.2
# What a local run leaves to the rest of the machine, of the memory available when it starts.
RESERVED_FRACTION = 0.1


def images_mb(case: str, n_images: int) -> float:
    """The training images a job holds: each at the encoder's input size and at the case's map size."""
    return IMAGE_COPIES * n_images * 4 * (INPUT_SIZE**2 + map_size(case) ** 2) / MB


def stage_mb(stage: str, case: str, n_images: int, seeds: int = 1, critics: Critics | None = None) -> int:
    """``mem_mb`` of a torch job: ``stage`` (train, score or crosscheck) of ``case`` on ``n_images`` images; a
    training job, of ``critics``' widths, of ``seeds`` seeds together (train.together) holds each seed's models and
    one runtime and images.

    >>> article = Critics(64, 256)
    >>> stage_mb("train", "b", 5000, critics=article) > stage_mb("train", "c", 200, critics=article)
    True
    >>> stage_mb("train", "c", 200, critics=article) > stage_mb("train", "a", 200, critics=article)
    True
    >>> stage_mb("train", "a", 200, critics=article) > stage_mb("score", "b", 5000)
    True
    """
    if stage == "train":
        if critics is None:
            raise ValueError("a training job's memory follows its critics' widths: give critics")
        per_weight = TRAIN_BYTES_PER_CRITIC_WEIGHT if seeds == 1 else TOGETHER_BYTES_PER_CRITIC_WEIGHT
        model = TRAIN_RUNTIME_MB + seeds * per_weight * critics.global_weights(map_size(case)) / MB
    elif stage in ("score", "crosscheck"):
        model = SCORE_RUNTIME_MB
    else:
        raise ValueError(f"no memory model for stage {stage!r}; expected train, score or crosscheck")
    return math.ceil(MARGIN * (model + images_mb(case, n_images)))


def local_mem_mb() -> int:
    """The mem_mb a run on this machine may hand out: the memory available now, less a reserve."""
    return int(psutil.virtual_memory().available * (1 - RESERVED_FRACTION) / MB)
