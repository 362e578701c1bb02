"""Peak resident memory of each torch stage (train, score) per case and image count, each job in its own process.

    python benchmarks/memory.py [--images 20 200] [--cases a b c d] [--allocator default tuned both] [--seeds 1 2]

Runs the stage CLIs as the workflow does (one thread, fp32, CPU) on the embedded sample and prints a Markdown
table of each job's peak RSS in MB, under glibc's default allocator and under the one the workflow sets
(mifeatures.workflow.memory.ALLOCATOR_TUNABLES). The rules' mem_mb (mifeatures.workflow.memory) are sized from
these numbers.
A training job's peak comes with its first optimiser step, so one epoch of two steps is enough. ``--seeds 2`` trains
that many seeds in one job too (train.together).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from mifeatures.workflow.memory import ALLOCATOR_TUNABLES, stage_mb
from mifeatures.core.networks.shapes import INPUT_SIZE, Critics, map_size
from mifeatures.workflow.params import load_params

TRAIN = load_params([Path(__file__).resolve().parents[1] / "params.yaml"])["train"]
CRITICS = Critics(TRAIN["critic_channels"], TRAIN["global_units"])  # params.yaml's

# Runs a command and prints the peak RSS of its process tree in kB (Linux: ru_maxrss of waited children).
PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_mb(command: list[str], allocator: str) -> float:
    """Peak RSS in MB of ``command`` run in a fresh process, with glibc's default or the workflow's allocator."""
    environment = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    if allocator == "tuned":
        environment["GLIBC_TUNABLES"] = ALLOCATOR_TUNABLES
    output = subprocess.run([sys.executable, "-c", PEAK, *command], env=environment, check=True,
                            capture_output=True, text=True).stdout
    return int(output.split()[-1]) / 1024


def stage(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"mifeatures.stages.{name}", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--cases", nargs="+", default=["a", "b", "c", "d"])
    parser.add_argument("--allocator", choices=["default", "tuned", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="seeds trained together in a job")
    args = parser.parse_args()
    allocators = ["default", "tuned"] if args.allocator == "both" else [args.allocator]
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}\n")
    print("| stage | case | images | seeds | " + " | ".join(f"peak MB, {a} allocator" for a in allocators)
          + " | declared mem_mb |")
    print("|---|---|---:|---:|" + "---:|" * len(allocators) + "---:|")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for n_images in args.images:
            raw = work / f"raw{n_images}.bin"
            subprocess.run(stage("sample", "--n-images", str(n_images), "--seed", "78", "--out", str(raw)), check=True,
                           stdout=subprocess.DEVNULL)
            gray = {}
            for size in sorted({INPUT_SIZE, *map(map_size, args.cases)}):
                gray[size] = work / f"gray{n_images}_{size}.npy"
                subprocess.run(stage("grayscale", str(raw), "--size", str(size), "--out", str(gray[size])), check=True,
                               stdout=subprocess.DEVNULL)
            for case in args.cases:
                for seeds in args.seeds:
                    # One seed writes where it is told; several, each where {seed} is its own.
                    encoder, loss = (str(work / f"{case}{n_images}-{name}") for name in ("{seed}.pt", "{seed}.csv"))
                    if seeds == 1:
                        encoder, loss = encoder.format(seed=78), loss.format(seed=78)
                    train = stage("train", "--case", case, "--encoder-images", str(gray[INPUT_SIZE]),
                                  "--critic-images", str(gray[map_size(case)]), "--encoder-out", encoder,
                                  "--loss-out", loss, "--epochs", "1", "--batch-size", "10", "--lr", "1e-4",
                                  "--seed", *map(str, range(78, 78 + seeds)), "--alpha", "0.1", "--beta", "0.1",
                                  "--gamma", "0.8", "--critic-channels", str(CRITICS.channels),
                                  "--global-units", str(CRITICS.units), "--device", "cpu", "--precision", "fp32",
                                  "--no-fused-adam", "--checkpoint-every", "5", "--no-cuda-graph",
                                  "--together" if seeds > 1 else "--no-together")
                    peaks = [peak_mb(train, allocator) for allocator in allocators]
                    print(f"| train | {case} | {n_images} | {seeds} | " + " | ".join(f"{p:.0f}" for p in peaks)
                          + f" | {stage_mb('train', case, n_images, seeds, CRITICS)} |", flush=True)
                encoder = encoder.format(seed=78)
                out = work / "score"
                score = stage("score", "--encoder", encoder, "--run", case, "faithful", "78",
                              "--encoder-images", str(gray[INPUT_SIZE]), "--protocol", "faithful",
                              "--sized-images", str(gray[map_size(case)]), "--bins", "30", "--noise-seed", "0",
                              "--device", "cpu", "--mi-out", str(out) + "mi.csv",
                              "--summary-out", str(out) + "summary.csv")
                peaks = [peak_mb(score, allocator) for allocator in allocators]
                print(f"| score | {case} | {n_images} | 1 | " + " | ".join(f"{p:.0f}" for p in peaks)
                      + f" | {stage_mb('score', case, n_images)} |", flush=True)


if __name__ == "__main__":
    main()
