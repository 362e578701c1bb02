"""The `mifeatures` command as users expect it: help on stdout, a version, and an invalid command named."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from mifeatures.cli import COMMANDS
from mifeatures.workflow import usage

MIFEATURES = str(Path(sys.executable).parent / "mifeatures")


def test_help_wrote_to_stderr_and_listed_commands_without_what_they_do():
    """`mifeatures --help` goes to stdout, exit 0, one line per command saying what it does."""
    said = subprocess.run([MIFEATURES, "--help"], capture_output=True, text=True)
    assert said.returncode == 0 and said.stderr == ""
    for name, (_, summary) in COMMANDS.items():
        assert any(line.split() and line.split()[0] == name and summary in line for line in said.stdout.splitlines())


def test_there_was_no_version():
    said = subprocess.run([MIFEATURES, "--version"], capture_output=True, text=True)
    assert said.returncode == 0 and said.stdout == f"mifeatures {importlib.metadata.version('mifeatures')}\n"


def test_bogus_printed_usage_without_saying_the_choice_is_invalid():
    said = subprocess.run([MIFEATURES, "bogus"], capture_output=True, text=True)
    assert said.returncode == 2 and "mifeatures: error: invalid command 'bogus'" in said.stderr


def test_every_command_has_a_module_with_a_main():
    for module, _ in COMMANDS.values():
        assert callable(importlib.import_module(f"mifeatures.{module}").main)


def test_help_descriptions_were_cut_mid_sentence_and_showed_rest_markup():
    """`mifeatures train --help` described the stage with its docstring's first line, cut mid-sentence, and
    showed ``double backticks``: each command's description is now its first paragraph, whole and plain."""
    for name, (module, _) in COMMANDS.items():
        said = subprocess.run([MIFEATURES, name, "--help"], capture_output=True, text=True)
        assert said.returncode == 0, said.stderr
        description = said.stdout.split("\n\n")[1]
        assert "``" not in description and description.rstrip().endswith((".", ")", "?")), (name, description)
        assert " ".join(description.split()) == usage.summary(importlib.import_module(f"mifeatures.{module}").__doc__)


def test_a_missing_configfile_is_one_line_not_a_traceback(tmp_path):
    """A wrong `--configfile` path gave a 20-line Snakemake traceback; `mifeatures build` and `mifeatures pull`
    name it in one line and run nothing."""
    for command in ("build", "pull"):
        said = subprocess.run([MIFEATURES, command, "--configfile", "nope.yaml"], cwd=tmp_path, capture_output=True,
                              text=True)
        assert said.returncode == 2 and "Traceback" not in said.stderr
        assert said.stderr.strip().splitlines()[-1] == (f"mifeatures {command}: error: --configfile nope.yaml: no such "
                                                        f"file in {tmp_path}")
