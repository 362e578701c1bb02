"""Every speed figure of mifeatures beside its baseline, measured side by side in one run.

    python benchmarks/report.py [--device auto|cpu|cuda] [--sizes 256 1000 5000] [--project DIR]

Prints a Markdown table (the README's comes from it) headed by the machine it ran on:
- MI of one image against 32 maps, and of 64 images each against its 32: the article's per-map
  np.histogram2d + mutual_info_score (which bins the float32 maps and the float64 image in float64) vs
  ours; and ours binning the float32 maps as they are vs ours on float64 copies of them (the old way);
- a training step: the loop as the article's code ran it (a DataLoader on the host, the loss terms read
  with .item() every step) vs ours, same math, same device, per case;
- a training step in a fresh process under glibc's default allocator vs the one every workflow job runs
  under (mifeatures.workflow.memory), CPU time, per case; and with Adam's fused CPU kernel (train.fused_adam) vs
  without;
- a training step of case a under each train.precision the device offers, and in fp32 without
  deterministic algorithms (what determinism costs), against fp32: its time, how far its per-step
  loss strays from fp32's, and whether a rerun gives the same losses bit for bit;
- scoring throughput: the article's all-images loop (one image at a time, histogram2d per map) vs ours
  in chunks (which also computes each map's MI a second way, see mifeatures.core.information.scoring);
- a no-op `snakemake -n all` and a no-op `dvc repro` on a built tiny project (built here unless
  --project names one);
- scoring time and peak memory at several image counts, each in its own process.
Nothing here is a test: numbers are machine-specific. Each pair is checked to give the same result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import mutual_info_score
from torch.utils.data import DataLoader, TensorDataset

from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.images import resize_images, to_grayscale
from mifeatures.core.information.mi import mutual_information, mutual_information_many
from mifeatures.core.networks.models import ENCODERS, build_encoder
from mifeatures.core.networks.shapes import Critics, map_size
from mifeatures.core.networks.objective import DeepInfoMaxLoss, LossWeights
from mifeatures.workflow.params import load_params
from mifeatures.core.information.maps import feature_maps
from mifeatures.core.information.scoring import all_images_loop_normalisation, score
from mifeatures.core.networks.runtime import resolve_device, set_up
from mifeatures.core.networks.together import train_together
from mifeatures.workflow.memory import ALLOCATOR_TUNABLES
from mifeatures.core.networks.training import Batches, TrainConfig, adam, seed_everything, train

REPO = Path(__file__).resolve().parents[1]
TRAIN = load_params([REPO / "params.yaml"])["train"]
WEIGHTS = LossWeights(TRAIN["alpha"], TRAIN["beta"], TRAIN["gamma"])  # params.yaml's, read once
CRITICS = Critics(TRAIN["critic_channels"], TRAIN["global_units"])
BIN = Path(sys.executable).parent
BINS = 30


def best_of(function, repeats: int) -> float:
    """Fastest of ``repeats`` calls, in seconds (the least disturbed by other work on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def machine(device: torch.device) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU used"
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s)")


def article_mi(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    return np.array([mutual_info_score(None, None, contingency=np.histogram2d(image.ravel(), m.ravel(), BINS)[0])
                     for m in maps])


def mi_rows(gray: np.ndarray) -> list[tuple]:
    """One image's 32 maps, called again and again (its data stays in cache), then 64 images' maps
    each once, as the score stage streams them."""
    torch.manual_seed(0)
    encoder = build_encoder("c").train()
    with torch.no_grad():
        maps = np.stack([encoder(torch.as_tensor(image, dtype=torch.float32)[None, None])[0].numpy()
                         for image in gray[:64]])
    assert np.allclose(article_mi(gray[0], maps[0]), mutual_information(gray[0], maps[0], BINS), rtol=0, atol=1e-9)
    article = best_of(lambda: article_mi(gray[0], maps[0]), 5)
    ours = best_of(lambda: mutual_information(gray[0], maps[0], BINS), 20)
    def article_many_mi():
        return np.stack([article_mi(image, image_maps) for image, image_maps in zip(gray[:64], maps)])

    assert np.allclose(article_many_mi(), mutual_information_many(gray[:64], maps, BINS), rtol=0, atol=1e-9)
    article_many = best_of(article_many_mi, 2)
    ours_many = best_of(lambda: mutual_information_many(gray[:64], maps, BINS), 5)
    copies = best_of(lambda: mutual_information_many(gray[:64], (m.astype(np.float64) for m in maps), BINS), 5)
    return [("MI, 1 image × 32 maps 96×96 (article: np.histogram2d, float64)", f"{article * 1e3:.2f} ms",
             f"{ours * 1e3:.2f} ms", article / ours),
            ("MI, 64 images × 32 maps 96×96, per image (article: np.histogram2d, float64)",
             f"{article_many / 64 * 1e3:.2f} ms", f"{ours_many / 64 * 1e3:.2f} ms", article_many / ours_many),
            ("MI, 64 images, per image: float32 maps binned as they are (baseline: float64 copies)",
             f"{copies / 64 * 1e3:.2f} ms", f"{ours_many / 64 * 1e3:.2f} ms", copies / ours_many)]


def training_parts(case: str, gray: np.ndarray, device: torch.device, fused_adam: bool = False,
                   cuda_graph: bool = False):
    """A fresh model, critics and optimisers on ``device``, and the images at the case's map size; built
    before any timing starts. Both loops run under fp32's flags (TF32 off, cuDNN's included)."""
    seed_everything(78)
    set_up(device.type, torch.get_num_threads(), "fp32")
    encoder, objective = build_encoder(case).to(device), DeepInfoMaxLoss(map_size(case), WEIGHTS, CRITICS).to(device)
    optimizers = [adam(module.parameters(), 1e-4, device, fused_adam, cuda_graph) for module in (encoder, objective)]
    return encoder, objective, optimizers, resize_images(gray, map_size(case))


def article_loop(parts, gray: np.ndarray, device: torch.device, steps: int) -> list[float]:
    """As the article's code trained: batches from a host DataLoader, every term read with .item()."""
    encoder, objective, optimizers, sized = parts
    as_float = lambda array: torch.as_tensor(array, dtype=torch.float32).unsqueeze(1)  # noqa: E731
    loader = DataLoader(TensorDataset(as_float(gray), as_float(sized)),
                        batch_size=10, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(78))
    prior = torch.Generator(device=device).manual_seed(78)
    losses = []
    for inputs, images in loader:
        for optimizer in optimizers:
            optimizer.zero_grad()
        terms = objective(encoder(inputs.to(device)), images.to(device), prior)
        losses.append([terms[key].item() for key in ("loss", "local", "global", "prior")][0])
        terms["loss"].backward()
        for optimizer in optimizers:
            optimizer.step()
        if len(losses) == steps:
            break
    return losses


def our_loop(parts, gray: np.ndarray, device: torch.device, steps: int, precision: str = "fp32",
             deterministic: bool = True, cuda_graph: bool = False) -> list[float]:
    encoder, objective, optimizers, sized = parts
    runtime = set_up(device.type, torch.get_num_threads(), precision)
    # What determinism costs: the kernels torch would pick without it (set_up asks for them).
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    batches = Batches(gray, sized, 10, 78, device)  # one epoch of the `steps` batches the caller cut
    prior = torch.Generator(device=device).manual_seed(78)
    log = train(encoder, objective, batches, optimizers, 1, device, prior, autocast=runtime.autocast(),
                cuda_graph=cuda_graph)
    return log["loss"].tolist()


def step_seconds(loop, case: str, gray: np.ndarray, device: torch.device, steps: int, repeats: int = 2,
                 fused_adam: bool = False, **options) -> float:
    """Seconds per step of ``loop`` over fresh parts, the best of ``repeats``: building the model and copying
    it to the device stay outside the timed region."""
    times = []
    for _ in range(repeats):
        parts = training_parts(case, gray, device, fused_adam, options.get("cuda_graph", False))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loop(parts, gray, device, steps, **options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times) / steps


def training_rows(gray: np.ndarray, device: torch.device) -> list[tuple]:
    steps = 50 if device.type == "cuda" else 3
    gray = gray[: steps * 10]
    rows = []
    for case in ENCODERS:
        # Same images, same order, same precision: the first `steps` batches are the same in both loops.
        assert np.allclose(article_loop(training_parts(case, gray, device), gray, device, steps),
                           our_loop(training_parts(case, gray, device), gray, device, steps), rtol=1e-5)
        article = step_seconds(article_loop, case, gray, device, steps)
        ours = step_seconds(our_loop, case, gray, device, steps)
        rows.append((f"training step, case {case}, batch 10", f"{article * 1e3:.1f} ms", f"{ours * 1e3:.1f} ms",
                     article / ours))
    return rows


# Four training steps in a fresh process, so that glibc reads GLIBC_TUNABLES at its start: CPU seconds (user +
# system) per step and the losses, as JSON.
ALLOCATOR_PROBE = """
import json, resource, sys, numpy as np, torch
sys.path.insert(0, sys.argv[3])
from report import our_loop, training_parts
torch.set_num_threads(1)
gray = np.load(sys.argv[1])
parts = training_parts(sys.argv[2], gray, torch.device("cpu"))
before = resource.getrusage(resource.RUSAGE_SELF)
losses = our_loop(parts, gray, torch.device("cpu"), len(gray) // 10)
after = resource.getrusage(resource.RUSAGE_SELF)
steps = len(losses)
print(json.dumps({"cpu": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / steps,
                  "system": (after.ru_stime - before.ru_stime) / steps, "losses": losses}))
"""


def allocator_rows(gray: np.ndarray, device: torch.device) -> list[tuple]:
    """Each case's step under glibc's default allocator and under the workflow's, alternating, the best of 2."""
    if device.type != "cpu":
        return []
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        images = Path(scratch) / "gray.npy"
        np.save(images, gray[:40])
        for case in ENCODERS:
            runs: dict[str, list[dict]] = {"default": [], "tuned": []}
            for _ in range(2):
                for name in runs:
                    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
                    env |= {"GLIBC_TUNABLES": ALLOCATOR_TUNABLES} if name == "tuned" else {}
                    said = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE, str(images), case,
                                           str(Path(__file__).parent)], env=env, capture_output=True, text=True,
                                          check=True).stdout
                    runs[name].append(json.loads(said.splitlines()[-1]))
            assert all(run["losses"] == runs["default"][0]["losses"] for name in runs for run in runs[name])
            default, tuned = (min(runs[name], key=lambda run: run["cpu"]) for name in ("default", "tuned"))
            rows.append((f"training step, case {case}, CPU time, glibc heap settings (baseline: glibc's default)",
                         f"{default['cpu'] * 1e3:.0f} ms ({default['system'] * 1e3:.0f} ms system)",
                         f"{tuned['cpu'] * 1e3:.0f} ms ({tuned['system'] * 1e3:.0f} ms system); losses bit-identical",
                         default["cpu"] / tuned["cpu"]))
    return rows


def fused_adam_rows(gray: np.ndarray, device: torch.device) -> list[tuple]:
    """Case a's step with Adam's fused kernel against without it, and how far its losses stray (a GPU always
    fuses, so the row is the CPU's)."""
    if device.type != "cpu":
        return []
    steps = 3
    gray = gray[: steps * 10]
    unfused = our_loop(training_parts("a", gray, device), gray, device, steps)
    fused = our_loop(training_parts("a", gray, device, fused_adam=True), gray, device, steps)
    error = max(abs(f - u) / abs(u) for f, u in zip(fused, unfused))
    seconds = {on: step_seconds(our_loop, "a", gray, device, steps, fused_adam=on) for on in (False, True)}
    return [("training step, case a, fused Adam (baseline: unfused)", f"{seconds[False] * 1e3:.1f} ms",
             f"{seconds[True] * 1e3:.1f} ms; loss off unfused by ≤ {error:.1e} relative over {steps} steps",
             seconds[False] / seconds[True])]


def graph_rows(gray: np.ndarray, device: torch.device) -> list[tuple]:
    """Each case's step on fixed buffers replayed as a CUDA graph (train.cuda_graph) against the eager step, at
    fp32 and tf32, and how far its losses stray from the eager ones. CUDA only: a CPU captures nothing."""
    if device.type != "cuda":
        return []
    steps = len(gray) // 10
    rows = []
    for precision in ("fp32", "tf32"):
        for case in ENCODERS:
            losses = [np.array(our_loop(training_parts(case, gray, device, cuda_graph=graph), gray, device, steps,
                                        precision, cuda_graph=graph)) for graph in (False, True)]
            eager = step_seconds(our_loop, case, gray, device, steps, precision=precision)
            graphed = step_seconds(our_loop, case, gray, device, steps, precision=precision, cuda_graph=True)
            strays = np.abs(losses[1] / losses[0] - 1).max()
            rows.append((f"training step, case {case}, {precision}, CUDA graph (baseline: eager)",
                         f"{eager * 1e3:.1f} ms", f"{graphed * 1e3:.1f} ms; loss off eager's by ≤ {strays:.1e} "
                         f"relative over {steps} steps", eager / graphed))
    return rows


def precision_rows(gray: np.ndarray, device: torch.device) -> list[tuple]:
    steps = 50 if device.type == "cuda" else 3
    # (name, precision, deterministic); TF32 exists on CUDA only.
    variants = [("fp32", "fp32", True), ("fp32, not deterministic", "fp32", False), ("bf16", "bf16", True)]
    if device.type == "cuda":
        variants.insert(2, ("tf32", "tf32", True))
    gray = gray[: steps * 10]
    seconds, losses, rerun_identical = {}, {}, {}
    for name, precision, deterministic in variants:
        runs = [our_loop(training_parts("a", gray, device), gray, device, steps, precision, deterministic)
                for _ in range(2)]
        seconds[name] = step_seconds(our_loop, "a", gray, device, steps, precision=precision,
                                     deterministic=deterministic)
        losses[name], rerun_identical[name] = np.array(runs[0]), runs[0] == runs[1]
    rows = []
    for name, _, _ in variants:
        strays = np.abs(losses[name] - losses["fp32"]).max()
        rerun = "bit-identical" if rerun_identical[name] else "differs"
        rows.append((f"training step, case a, {name} (baseline: fp32)", f"{seconds['fp32'] * 1e3:.1f} ms",
                     f"{seconds[name] * 1e3:.1f} ms; loss off fp32's by ≤ {strays:.1e} over {steps} steps; "
                     f"rerun {rerun}", seconds["fp32"] / seconds[name]))
    return rows


def together_rows(gray: np.ndarray, device: torch.device, seeds: int) -> list[tuple]:
    """``seeds`` seeds of case a trained together (mifeatures.core.networks.together) against one seed alone, per
    step at fp32. train_together builds its models inside, so its step time is the difference of a two-epoch and a
    one-epoch run over the same images: the build cancels out."""
    steps = 10 if device.type == "cuda" else 2
    gray = gray[: steps * 10]
    sized = resize_images(gray, map_size("a"))
    runtime = set_up(device.type, torch.get_num_threads(), "fp32")

    def together_seconds(epochs: int) -> float:
        configs = [TrainConfig(epochs, TRAIN["batch_size"], TRAIN["lr"], 78 + seed, WEIGHTS.alpha, WEIGHTS.beta,
                               WEIGHTS.gamma, device.type, "fp32", False) for seed in range(seeds)]
        start = time.perf_counter()
        train_together("a", gray, sized, configs, runtime, critics=CRITICS)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    alone = step_seconds(our_loop, "a", gray, device, steps)
    together = (together_seconds(2) - together_seconds(1)) / steps
    return [(f"training step, case a, {seeds} seeds together (baseline: {seeds} steps of one seed)",
             f"{seeds * alone * 1e3:.1f} ms", f"{together * 1e3:.1f} ms; one seed alone {alone * 1e3:.1f} ms",
             seeds * alone / together)]


def scoring_rows(gray: np.ndarray, device: torch.device) -> list[tuple]:
    torch.manual_seed(0)
    encoder = build_encoder("c")
    images = gray[:64]

    def one_at_a_time():  # the article's all-images loop: maps, 32 MIs, upper and noise bound per image
        for image in images:
            article_mi(image, all_images_loop_normalisation(feature_maps(encoder, image)))
            article_mi(image, image[None])
            article_mi(image, np.random.standard_normal(image.shape)[None])

    article = best_of(one_at_a_time, 2)
    ours = best_of(lambda: score(encoder, images, images, BINS, 0, device), 2)
    return [("scoring, case c, 64 images", f"{len(images) / article:.0f} images/s",
             f"{len(images) / ours:.0f} images/s", article / ours)]


def tool(name: str) -> str | None:
    """``name`` as PATH has it (the device check puts its carried tools there), else beside this Python."""
    return shutil.which(name) or (str(BIN / name) if (BIN / name).is_file() else None)


def project_rows(project: Path | None) -> list[tuple]:
    tools = {name: tool(name) for name in ("git", "dvc", "snakemake")}
    if missing := [name for name, path in tools.items() if path is None]:
        return [("no-op `snakemake -n all` and `dvc repro` (tiny project)", "",
                 f"not measured: no {' or '.join(missing)} on PATH", None)]
    git, dvc, snakemake = tools.values()
    with tempfile.TemporaryDirectory() as scratch:
        if project is None:
            project = Path(scratch) / "tiny"
            project.mkdir()
            for name in ("workflow", "src", "config", "environment.yml", "dvc.yaml", ".dvcignore"):
                source = REPO / name
                (shutil.copytree if source.is_dir() else shutil.copy)(source, project / name)
            params = load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"])
            (project / "params.yaml").write_text(json.dumps(params))
            for command in ([git, "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"],
                            [dvc, "repro", "-q"]):
                subprocess.run(command, cwd=project, check=True, capture_output=True)
        env = {**os.environ, "PATH": f"{Path(snakemake).parent}{os.pathsep}{os.environ['PATH']}"}

        def timed(*command):
            result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=True)
            return result.stdout

        assert "Nothing to be done" in timed(snakemake, "-n", "all")
        dry_run = best_of(lambda: timed(snakemake, "-n", "all"), 3)
        assert "up to date" in timed(dvc, "repro")
        repro = best_of(lambda: timed(dvc, "repro"), 3)
    return [("no-op `snakemake -n all` (tiny project)", "", f"{dry_run:.2f} s", None),
            ("no-op `dvc repro` (tiny project)", "", f"{repro:.2f} s", None)]


# Peak memory is the process's VmHWM: ru_maxrss would carry over the parent's peak through fork and exec.
SIZE_PROBE = """
import re, sys, time, numpy as np, torch
from pathlib import Path
from mifeatures.core.networks.models import build_encoder
from mifeatures.core.information.scoring import score
torch.set_num_threads(int(sys.argv[4]))
gray = np.load(sys.argv[1], mmap_mode="r")[: int(sys.argv[2])]
torch.manual_seed(0)
start = time.perf_counter()
score(build_encoder("c"), gray, gray, 30, 0, sys.argv[3])
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(time.perf_counter() - start, peak / 1024)
"""


def size_rows(sizes: list[int], device: torch.device) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        images = Path(scratch) / "gray.npy"
        np.save(images, to_grayscale(make_sample(max(sizes), 78)))
        for size in sizes:
            said = subprocess.run([sys.executable, "-c", SIZE_PROBE, str(images), str(size), str(device),
                                   str(torch.get_num_threads())],
                                  capture_output=True, text=True, check=True).stdout.split()
            seconds, megabytes = map(float, said)
            rows.append((f"scoring {size} images, case c", "", f"{seconds:.1f} s, peak {megabytes:.0f} MB", None))
    return rows


# graph last: the first CUDA-graph run on a GPU must not cost the rows before it
SECTIONS = ("mi", "training", "allocator", "fused", "precision", "together", "scoring", "project", "sizes", "graph")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda; default: %(default)s")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1000, 5000], help="image counts to score")
    parser.add_argument("--project", type=Path, help="a built project for the no-op timings; default: build tiny")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (per core: 1); default: %(default)s")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS),
                        help="which rows to measure; default: all")
    parser.add_argument("--together", type=int,
                        help="seeds trained together in the seeds-together row; default: 20 on CUDA, 2 on a CPU "
                             "(each seed holds ≈ 2 GB of weights and Adam moments)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gray = to_grayscale(make_sample(200, 78))
    print(f"machine: {machine(device)}\n")
    print("| figure | article's way | ours | speed-up |\n|---|---|---|---|")
    together = args.together or (20 if device.type == "cuda" else 2)
    sections = {"mi": lambda: mi_rows(gray), "training": lambda: training_rows(gray, device),
                "graph": lambda: graph_rows(gray, device),
                "allocator": lambda: allocator_rows(gray, device), "fused": lambda: fused_adam_rows(gray, device),
                "precision": lambda: precision_rows(gray, device),
                "together": lambda: together_rows(gray, device, together),
                "scoring": lambda: scoring_rows(gray, device),
                "project": lambda: project_rows(args.project), "sizes": lambda: size_rows(args.sizes, device)}
    for name in args.sections:
        for figure, baseline, ours, ratio in sections[name]():
            print(f"| {figure} | {baseline} | {ours} | {f'{ratio:.1f}×' if ratio else ''} |", flush=True)


if __name__ == "__main__":
    main()
