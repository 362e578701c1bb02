# All Python of the workflow: config checks, paths, targets and input/params functions.
import itertools
import json
import os
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

# The workflow and its jobs run the library of this tree, whichever copy is installed (a `dvc exp run
# --temp` copy, a test copy): the code digests below and the jobs' code must be the same files.
SOURCE = str(Path(workflow.basedir).parent / "src")
sys.path.insert(0, SOURCE)

from mifeatures.workflow import records, runlock, sources
from mifeatures.workflow.memory import ALLOCATOR_TUNABLES, local_mem_mb, stage_mb
from mifeatures.core.networks.shapes import INPUT_SIZE, Critics, map_size
from mifeatures.workflow.params import (
    STL10_TRAIN_IMAGES,
    ParamsError,
    case_train,
    folder_images,
    load_params,
    validate_params,
)
from mifeatures.core.protocols import PROTOCOLS
from mifeatures.workflow.plan import PLANNING_VARIABLE
from mifeatures.workflow.provenance import (
    CONFIG_FILES_VARIABLE,
    LEDGER,
    LEDGER_VARIABLE,
    SUFFIX,
)
from mifeatures.workflow.reconcile import RECONCILED_VARIABLE
from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod


def relative(path):
    """``path`` relative to the working directory when inside it, so records hold it as a copy has it."""
    absolute = Path(path).resolve()
    return (
        str(absolute.relative_to(Path.cwd()))
        if absolute.is_relative_to(Path.cwd())
        else str(absolute)
    )


CONFIG_FILES = ["params.yaml", *map(relative, workflow.overwrite_configfiles or [])]
# Fails before any job runs, naming the key (e.g. "params.yaml: train.lr: 0 is less than …")
# and every file the config was merged from. Numbers DVC writes as 1e-05 become numbers here;
# the files themselves are read again only to refuse what YAML 1.1 (Snakemake) and YAML 1.2 (DVC)
# read differently, and keys given twice.
load_params(CONFIG_FILES)
validate_params(
    config,
    Path(workflow.basedir) / "schemas/params.schema.yaml",
    source=" + ".join(CONFIG_FILES),
)

# The run that reads this file: Snakemake's own (not a job on a cluster node, which parses it too), and not the
# audit or `mifeatures build` planning through the API, which write nothing.
MAIN_RUN = not (
    workflow.remote_exec
    or workflow.subprocess_exec
    or os.environ.get(PLANNING_VARIABLE)
)
# Snakemake says whether it is a dry run only after parsing (workflow.dryrun is False until then): its flag,
# alone or among other one-letter flags (-np), is read here.
DRY_RUN = any(
    re.fullmatch(r"--dry-?run|--just-print|-[A-Za-z]*n[A-Za-z]*", word)
    for word in itertools.takewhile(lambda word: word != "--", sys.argv[1:])
)
# A run killed with its jobs (power loss, SIGKILL) leaves Snakemake's locks: the next run clears
# them when no run that could hold them is alive (mifeatures.workflow.runlock), then registers itself. A dry run
# takes no locks, so it neither clears nor registers: it writes nothing.
if MAIN_RUN and not DRY_RUN:
    for stale in runlock.clear_stale():
        print(f"removed {stale}: the run that held it is gone", file=sys.stderr)
    runlock.register()
# Outputs that arrived from elsewhere (dvc checkout, dvc pull, a copy) carry records this checkout's runs did
# not write: Snakemake's cache may then be wrong, and `mifeatures build` (make, dvc repro) reconciles them.
if MAIN_RUN and not os.environ.get(RECONCILED_VARIABLE):
    records.warn_of_strangers()
# A local run hands its jobs at most the memory available when it starts (each torch rule declares its
# peak as mem_mb, mifeatures.workflow.memory), so it never starts more trainings than the machine holds; a
# `--resources mem_mb=N` of the user's wins. A cluster's jobs ask the scheduler for their own.
if (
    MAIN_RUN
    and workflow.local_exec
    and not {"mem_mb", "mem"} & set(workflow.global_resources.keys())
):
    workflow.register_resource("mem_mb", local_mem_mb())
# A job killed by SIGKILL (exit status 137) is said to be, most likely, the kernel's out-of-memory killer's
# doing, on stderr (Snakemake's output) and at the end of the job's log (its command's `> LOG` redirection).
KILLED = (
    "mifeatures: this job was killed with SIGKILL (exit status 137), most likely by the kernel's "
    "out-of-memory killer (dmesg or journalctl -k says). Run fewer jobs at once: --resources mem_mb=N "
    "with N below the memory free, or --cores 1; see docs/failures.md."
)
KILLED_TRAP = (
    f"mifeatures_killed={shlex.quote(KILLED)}; mifeatures_log='> ([^ ]+) 2>&1$'; "
    'trap \'if [ $? -eq 137 ]; then echo "$mifeatures_killed" >&2; if [[ $BASH_COMMAND =~ $mifeatures_log ]]; '
    'then echo "$mifeatures_killed" >> "${BASH_REMATCH[1]}"; fi; fi\' ERR; '
)
# Every job runs this tree's library, records the config files in its provenance so that a figure is
# verified against its own config, and notes each record it writes in the ledger. Set in the shell prefix,
# so none is a rerun trigger. Torch's large tensors stay in glibc's heap (mifeatures.workflow.memory).
shell.prefix(
    (
        "set -euo pipefail; "
        f"export PYTHONPATH={shlex.quote(SOURCE)}${{PYTHONPATH:+:$PYTHONPATH}}; "
        f"export {CONFIG_FILES_VARIABLE}={shlex.quote(json.dumps(CONFIG_FILES))}; "
        f"export {LEDGER_VARIABLE}={shlex.quote(str(LEDGER))}; "
        f"export GLIBC_TUNABLES=${{GLIBC_TUNABLES:+$GLIBC_TUNABLES:}}{ALLOCATOR_TUNABLES}; "
        + KILLED_TRAP
    )
    .replace("{", "{{")
    .replace("}", "}}")
)

# `--sdm apptainer` runs every job in this image (the Snakefile's `container:`), which the user builds from
# workflow/envs/apptainer.def. Its absence is said at parse time: a dry run would otherwise plan jobs that
# cannot start.
IMAGE = "mifeatures.sif"
if (
    DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
    and not Path(IMAGE).is_file()
):
    raise WorkflowError(
        f"--sdm apptainer: the image {IMAGE} is not in {Path.cwd()}; build it there first: "
        f"apptainer build {IMAGE} workflow/envs/apptainer.def"
    )

CASES = config["cases"]
SEEDS = config["train"]["seeds"]
# The article's figures come from one run per case: the faithful protocol, first seed, scored as the
# article scored. The findings take every (protocol, seed, case) from the same rules, each run scored by
# both protocols' scorers, so that what training changes is told apart from what scoring changes.
ARTICLE_RUN = {"protocol": "faithful", "seed": SEEDS[0], "scoring": "faithful"}
# Each rule's conda environment (`--sdm conda`), by what its stage imports: tests/test_packaging.py checks
# that every rule's environment holds every package its code imports, at requirements.lock's pins.
ENVS = {
    group: f"../envs/{group}.yaml" for group in ("data", "torch", "tables", "figures")
}

RAW_IMAGES = f"data/{config['data']['dataset']}/stl10_binary/train_X.bin"
GRAY = "results/grayscale/size{size}.npy"
RUN = "{protocol}/seed{seed}/{case}"
ENCODER = f"results/train/{RUN}/encoder.pt"
LOSS = f"results/train/{RUN}/loss.csv"
RESUME = (
    f"results/train/{RUN}/resume.pt"  # exists only while a training job is unfinished
)
# train.together: one job trains each (protocol, case)'s seeds (mifeatures.core.networks.together) and writes
# every seed's outputs; with one seed, the job is its solo run.
TOGETHER = config["train"]["together"] and len(SEEDS) > 1
SCORED = f"{RUN}/scored-{{scoring}}"  # a trained run, scored by a protocol's scorer
PROGRESS = f"results/logs/progress/{RUN}.txt"  # a training job's steps, time left and loss, live
MI_TABLE = f"results/score/{SCORED}/mi.csv"
SUMMARY = f"results/score/{SCORED}/summary.csv"
IMAGE_MAPS = f"results/maps/{SCORED}/image{{image}}.npy"  # an image's maps, as its scorer computes them
IMAGE_BOUNDS = f"results/maps/{SCORED}/image{{image}}_bounds.csv"  # and its MI bounds
CROSSCHECK = f"results/crosscheck/{RUN}.csv"
FIGURES = "results/figures"
FINDINGS = "results/findings"


def code(*modules):
    """Digest of the library code a job runs, from the imports of its stage (and of a module the stage
    imports by name): a params entry, so any change to that code (not to comments or docstrings)
    reruns the job, and nothing else does.
    """
    return sources.digest(*modules)


def recorded(**outputs):
    """The outputs (a path or a list of paths each) plus their provenance records, declared so that a failed
    job leaves neither."""
    return outputs | {
        f"{name}_record": (
            [f"{each}{SUFFIX}" for each in path]
            if isinstance(path, list)
            else f"{path}{SUFFIX}"
        )
        for name, path in outputs.items()
    }


def encoder_images():
    return GRAY.format(size=INPUT_SIZE)


def sized_images(wildcards):
    """The grayscale images at the case's map size (what the critics and MI see)."""
    return GRAY.format(size=map_size(wildcards.case))


def scoring(wildcards):
    """The protocol a job scores by: its ``scoring`` wildcard (score), else its run's protocol (crosscheck)."""
    return PROTOCOLS[getattr(wildcards, "scoring", wildcards.protocol)]


def protocol_sized_images(wildcards):
    """The images at the map size, for a protocol that pairs maps with them (the faithful one); the
    corrected one scores against the 96×96 encoder input."""
    return sized_images(wildcards) if scoring(wildcards).needs_sized_images else []


# Params functions of wildcards only: Snakemake leaves a function that takes input, output, threads
# or resources out of its params trigger (Rule._is_deriving_function), so a change would rerun nothing.
def sized_images_arg(wildcards):
    """--sized-images for a protocol that pairs each map with the image at its size (the faithful one)."""
    return (
        f"--sized-images {sized_images(wildcards)}"
        if scoring(wildcards).needs_sized_images
        else ""
    )


def score_protocol_args(wildcards):
    """What the protocol's scorer takes (its score.* settings, its images): only these values reach, and can
    rerun, its jobs."""
    settings = " ".join(
        f"--{name.replace('_', '-')} {config['score'][name]}"
        for name in scoring(wildcards).score_params
    )
    return " ".join(filter(None, (sized_images_arg(wildcards), settings)))


def canonical(section):
    """A section with its keys sorted, at every depth: Snakemake compares dict params by repr, key order
    included, so reordered lines in params.yaml must not rerun anything."""
    return {
        key: canonical(value) if isinstance(value, dict) else value
        for key, value in sorted(section.items())
    }


def train_params(wildcards):
    """train: hyperparameters with the case's overrides applied; only these values reach the job.

    checkpoint_every is left out: how often state is saved never changes a result. The seed is
    the job's own, a wildcard.
    """
    return canonical(
        {
            key: value
            for key, value in case_train(config, wildcards.case).items()
            if key not in ("checkpoint_every", "seeds")
        }
    )


def critics(wildcards):
    """A training job's critics' widths (train.critic_channels and train.global_units, a case may override them)."""
    hp = train_params(wildcards)
    return Critics(hp["critic_channels"], hp["global_units"])


def trained(pattern):
    """A training job's outputs of ``pattern``: its seed's, or with train.together each seed's of its
    (protocol, case)."""
    return expand(pattern, seed=SEEDS, allow_missing=True) if TOGETHER else pattern


def job_seeds(wildcards):
    """The seeds a training job trains: its own, or with train.together every seed."""
    return SEEDS if TOGETHER else [wildcards.seed]


def written(pattern):
    """Where a training job writes ``pattern``: its seed's path, or with train.together one holding {seed},
    which the stage fills in for each seed."""

    def path(wildcards):
        seed = "{seed}" if TOGETHER else wildcards.seed
        return pattern.format(
            protocol=wildcards.protocol, case=wildcards.case, seed=seed
        )

    return path


def solo_option(option, pattern):
    """``option PATH`` for a one-seed training job (a resume state, a progress file); seeds trained together
    keep neither."""
    return lambda wildcards: (
        "" if TOGETHER else f"{option} {written(pattern)(wildcards)}"
    )


def together_flag(wildcards):
    """The train stage's train.together switch, as the job's record states it."""
    return "--together" if config["train"]["together"] else "--no-together"


def graph_flag(wildcards):
    """The train stage's switch for the CUDA-graph step (train.cuda_graph, a case may override it)."""
    return (
        "--cuda-graph" if train_params(wildcards)["cuda_graph"] else "--no-cuda-graph"
    )


def adam_flag(wildcards):
    """The train stage's switch for Adam's fused CPU kernel (train.fused_adam, a case may override it)."""
    return (
        "--fused-adam" if train_params(wildcards)["fused_adam"] else "--no-fused-adam"
    )


# data.dataset: folder reads the folder's image files, each an input of the folder job. The validator listed
# them; each is checked here too, from its header, so that no job starts on an image it cannot use.
FOLDER_IMAGES = (
    [relative(path) for path in folder_images(config)]
    if config["data"]["dataset"] == "folder"
    else []
)
if FOLDER_IMAGES:
    from mifeatures.core.data.folder import FolderError
    from mifeatures.core.data.own_images import check_size

    try:
        for image in FOLDER_IMAGES:
            check_size(image)
    except FolderError as error:
        raise ParamsError(f"{' + '.join(CONFIG_FILES)}: data.folder.path: {error}")
N_IMAGES = {
    "sample": config["data"]["sample"]["n_images"],
    "stl10": STL10_TRAIN_IMAGES,
    "folder": len(FOLDER_IMAGES),
}[config["data"]["dataset"]]
# Pessimistic seconds per training step of batch 10 (measured: ≈ 3 s on one CPU core, 12–16 ms
# on an H100), doubled again for the runtime a scheduler is asked for.
STEP_SECONDS = {"cpu": 5.0, "gpu": 0.05}


def gpus(wildcards):
    """GPUs a case's jobs ask for: one when its device is cuda, or auto (which picks a GPU if there is one)."""
    return int(train_params(wildcards)["device"] != "cpu")


def train_runtime(wildcards):
    """Minutes a scheduler should allow a training job (seeds trained together: each seed's steps, which a CPU
    runs one after the other)."""
    hp = train_params(wildcards)
    steps = len(job_seeds(wildcards)) * hp["epochs"] * (N_IMAGES // hp["batch_size"])
    seconds = steps * STEP_SECONDS["gpu" if gpus(wildcards) else "cpu"]
    return max(10, round(2 * seconds / 60))


def article(pattern):
    """``pattern`` of the article's run, ``{case}`` left open."""
    return expand(pattern, allow_missing=True, **ARTICLE_RUN)[0]


def per_case(pattern):
    """``pattern`` for each case of the article's run."""
    return [article(pattern).format(case=case) for case in CASES]


def case_pairs(pattern):
    """CASE=PATH arguments for the CLIs that combine the article's cases."""
    return [f"{case}={path}" for case, path in zip(CASES, per_case(pattern))]


def every_run(pattern):
    """``pattern`` for every (protocol, seed, case)."""
    return expand(pattern, protocol=PROTOCOLS, seed=SEEDS, case=CASES)


def own_scoring(pattern):
    """``pattern`` for every (protocol, seed, case) scored by its own protocol, as the cross-check is."""
    return [
        pattern.format(protocol=protocol, scoring=protocol, seed=seed, case=case)
        for protocol in PROTOCOLS
        for seed in SEEDS
        for case in CASES
    ]


def every_scoring(pattern):
    """``pattern`` for every (protocol, seed, case) and every protocol's scoring of it."""
    return expand(
        pattern, protocol=PROTOCOLS, seed=SEEDS, case=CASES, scoring=PROTOCOLS
    )


def findings_runs():
    """--run arguments of the findings stage: each scored run with its summary; then each run's
    cross-check with the per-map table of its own protocol's scoring, which it is compared with.
    """
    runs = [
        f"--run {protocol} {scored} {seed} {case} "
        + SUMMARY.format(protocol=protocol, scoring=scored, seed=seed, case=case)
        for protocol, scored, seed, case in itertools.product(
            PROTOCOLS, PROTOCOLS, SEEDS, CASES
        )
    ]
    checks = [
        f"--crosscheck {protocol} {seed} {case} "
        + " ".join(
            pattern.format(protocol=protocol, scoring=protocol, seed=seed, case=case)
            for pattern in (CROSSCHECK, MI_TABLE)
        )
        for protocol, seed, case in itertools.product(PROTOCOLS, SEEDS, CASES)
    ]
    return runs + checks


def checked_reference(wildcards):
    """No input: findings.reference checked against cases when the findings are planned, before any job (a
    selection without case c still builds the article's figures). The audit's planning, which runs no job, plans
    `protocols` beside `all` whatever the selection, and is not stopped."""
    reference = config["findings"]["reference"]
    if reference not in CASES and not os.environ.get(PLANNING_VARIABLE):
        raise WorkflowError(
            f"{' + '.join(CONFIG_FILES)}: findings.reference: case {reference!r} is not in cases {CASES}; "
            f"the findings test one case's lead over the others: set findings.reference to one of {', '.join(CASES)}"
        )
    return []


def with_records(files):
    return [*files, *(f"{file}{SUFFIX}" for file in files)]


def article_tables():
    """Every file behind the article's figures, records included. Named as targets of `all`, so that a
    deleted table or checkpoint is rebuilt, and what depends on it, rather than left missing while its
    dependents look current."""
    sizes = sorted({INPUT_SIZE, *map(map_size, CASES)})
    return with_records(
        [
            RAW_IMAGES,
            *(GRAY.format(size=size) for size in sizes),
            *(
                path
                for pattern in (
                    ENCODER,
                    LOSS,
                    MI_TABLE,
                    SUMMARY,
                )
                for path in per_case(pattern)
            ),
            *(
                article(pattern).format(case=case, image=image)
                for pattern in (IMAGE_MAPS, IMAGE_BOUNDS)
                for case in CASES
                for image in config["figures"]["images"]
            ),
            *(
                f"results/aggregate/{name}"
                for name in ("cases.csv", "cases.html", "images.csv", "metrics.json")
            ),
        ]
    )


def findings_tables():
    """Every run's tables behind the findings, records included (see article_tables)."""
    return with_records(
        [
            *(
                path
                for pattern in (ENCODER, LOSS, CROSSCHECK)
                for path in every_run(pattern)
            ),
            *(
                path
                for pattern in (MI_TABLE, SUMMARY)
                for path in every_scoring(pattern)
            ),
        ]
    )


def check_devices():
    """`device: cuda` for jobs this machine runs (not a cluster's nodes) needs CUDA here: said before
    any job starts, so no job deletes its previous outputs only to fail."""
    wanting = [
        case
        for case in CASES
        if train_params(SimpleNamespace(case=case))["device"] == "cuda"
    ]
    if wanting and workflow.local_exec:
        import torch

        if not torch.cuda.is_available():
            sys.exit(
                f"{' + '.join(CONFIG_FILES)}: train.device: 'cuda' for case(s) {', '.join(wanting)}, "
                "but this machine has no CUDA device; use auto or cpu, or run on a GPU machine or cluster"
            )


def map_figures():
    return [
        f"{FIGURES}/maps_{case}_image{image}.png"
        for image in config["figures"]["images"]
        for case in CASES
    ]


def all_figures():
    return [
        f"{FIGURES}/loss.png",
        *map_figures(),
        f"{FIGURES}/chosen_mean_mi.png",
        f"{FIGURES}/mi_distribution.png",
        f"{FIGURES}/wins.png",
    ]
