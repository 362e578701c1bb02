"""Every command the README and docs/ show in a shell block: run here on a copy of the tiny build, run by the
tests a marker names (`<!-- run by: tests/test_x.py::test_y, … -->` on the line before the block), or marked
`<!-- illustrative: why it is not run -->` (a GPU, a cluster, hours of training, your own pictures)."""

from __future__ import annotations

import re
import subprocess

import pytest

from builds import DVC, ENV, GIT_USER, REPO, copy_of, init_dvc, run

pytestmark = pytest.mark.slow

DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
SHELL = ("bash", "sh", "console")
FENCE = re.compile(r"(?:^<!-- (illustrative|run by): (.+?) -->\n)?^```(\w*)\n(.*?)^```", re.M | re.S)
TEST_ID = re.compile(r"(tests/test_\w+\.py)::(test_\w+)")
# The DVC commands of docs/dvc.md that train nothing; the others (exp run, checkout, pull) are run by the tests
# its blocks name.
DVC_READING = ("repro", "status", "metrics", "plots", "params", "dag")


def shell_blocks() -> list[tuple[str, str | None, str, list[str]]]:
    """(where, marker, what the marker says, commands) of every shell block; a console block's commands are its
    `$ ` lines, a bash block's its lines but comments, each without its trailing comment."""
    blocks = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            marker, said, language, body = match.groups()
            if language not in SHELL:
                continue
            lines = body.replace("\\\n", " ").splitlines()
            if language == "console":
                lines = [line[2:] for line in lines if line.startswith("$ ")]
            commands = [re.sub(r"\s+#\s.*$", "", line).strip() for line in lines]
            where = f"{path.relative_to(REPO)}:{text[:match.start()].count(chr(10)) + 1}"
            blocks.append((where, marker, said, [command for command in commands if command and command[0] != "#"]))
    return blocks


BLOCKS = shell_blocks()
RUN_HERE = [(where, commands) for where, marker, _, commands in BLOCKS if marker is None]


def test_every_shell_block_is_run_or_says_why_not():
    """An illustrative block gives its reason; a block run elsewhere names tests that exist, by file and name."""
    assert len(BLOCKS) >= 10 and RUN_HERE
    for where, marker, said, commands in BLOCKS:
        assert commands, where
        if marker == "illustrative":
            assert len(said.split()) >= 3, f"{where}: say why the block is not run"
        elif marker == "run by":
            named = TEST_ID.findall(said)
            assert named and len(named) == said.count("::"), f"{where}: {said}"
            for file, test in named:
                assert re.search(rf"^def {test}\(", (REPO / file).read_text(), re.M), f"{where}: {file}::{test}"


@pytest.mark.parametrize("where, commands", RUN_HERE, ids=[where for where, _ in RUN_HERE])
def test_each_unmarked_block_runs_on_the_tiny_build(built, tmp_path, where, commands):
    """Each command of the block, in order, in a copy of the tiny build, exits 0."""
    root = copy_of(built, tmp_path)
    for command in commands:
        said = subprocess.run(["bash", "-c", command], cwd=root, env=ENV, capture_output=True, text=True,
                              timeout=600)
        assert said.returncode == 0, f"{where}: {command}\n{said.stdout[-2000:]}\n{said.stderr[-2000:]}"


def test_the_dvc_commands_that_train_nothing_run_in_a_dvc_repository_of_the_tiny_build(built, tmp_path):
    """docs/dvc.md's commands that train nothing, as written there, in a copy of the tiny build made a git + DVC
    repository on branch master, with the baseline and its first `dvc repro` committed (so that `HEAD~1` and
    `master` exist); each exits 0, and `dvc metrics show` prints every case's metrics."""
    root = copy_of(built, tmp_path)
    init_dvc(root)
    with (root / ".gitignore").open("a") as ignored:
        ignored.write("/data\n/results\n")  # the DVC stage's outputs, which `dvc repro` would list there
    run(root, "git", "checkout", "-q", "-b", "master")
    for step in ("baseline", "first dvc repro"):
        if step != "baseline":
            run(root, DVC, "repro")
        run(root, "git", "add", "-A")
        run(root, "git", *GIT_USER, "commit", "-q", "-m", step)
    commands = [command for where, _, _, block in BLOCKS if where.startswith("docs/dvc.md") for command in block
                if command.startswith("dvc ") and command.split()[1] in DVC_READING]
    assert {"dvc repro", "dvc metrics show", "dvc plots diff HEAD~1", "dvc params diff master"} <= set(commands)
    for command in commands:
        said = subprocess.run(["bash", "-c", command], cwd=root, env=ENV, capture_output=True, text=True,
                              timeout=600)
        assert said.returncode == 0, f"{command}\n{said.stdout[-2000:]}\n{said.stderr[-2000:]}"
        if command == "dvc metrics show":
            assert all(f"mean_mi.{case}" in said.stdout and f"wins.{case}" in said.stdout for case in "abcd")
