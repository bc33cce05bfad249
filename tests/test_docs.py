"""The README and docs/ stay runnable, and the generated reference pages stay complete.

- every `ablate run` command of a fenced bash block is run with `--dry-run` appended (in-process, through
  `ablate.cli.main`): the experiment file, the overrides and the options must still exist;
- every `ablate report`, `compare` and `merge` command is parsed by the CLI's own parser, so a renamed option
  fails here;
- every experiment YAML block is a valid experiment, and the Python example of the concepts page runs;
- the pages docs/hooks/reference.py writes at build time name every field of every configuration dataclass,
  every top-level key and every CLI command and option.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import shlex
from contextlib import redirect_stdout
from functools import cache
from io import StringIO
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", flags=re.S | re.M)


@cache
def hook():
    """docs/hooks/reference.py, the MkDocs hook, as a module."""
    spec = importlib.util.spec_from_file_location("docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blocks(languages: tuple[str, ...]) -> list[tuple[str, str]]:
    """(page, text) of every fenced block in one of these languages."""
    found = []
    for page in PAGES:
        for language, text in BLOCK.findall(page.read_text()):
            if language in languages:
                found.append((str(page.relative_to(ROOT)), text))
    return found


def ablate_commands() -> list[tuple[str, tuple[str, ...]]]:
    """(page, argv after `ablate`) of every `ablate ...` command in a bash block, also after `&&`; unique."""
    found = {}
    for page, text in blocks(("bash", "sh", "shell", "console")):
        for line in text.replace("\\\n", " ").splitlines():
            for command in line.removeprefix("$ ").split("&&"):
                words = shlex.split(command, comments=True)
                if words[:1] == ["ablate"]:
                    found.setdefault(tuple(words[1:]), page)
    return [(page, argv) for argv, page in found.items()]


COMMANDS = ablate_commands()
RUNS = [(page, argv) for page, argv in COMMANDS if argv[:1] == ("run",)]
OTHERS = [(page, argv) for page, argv in COMMANDS if argv[:1] != ("run",)]


def test_the_pages_hold_commands_of_every_kind():
    assert {argv[0] for _, argv in COMMANDS} == {"run", "report", "compare", "merge"}
    assert len(RUNS) >= 8


@pytest.mark.parametrize(("page", "argv"), RUNS, ids=[" ".join(argv) for _, argv in RUNS])
def test_every_run_command_passes_a_dry_run(page, argv, monkeypatch):
    from ablate.cli import main

    if any("dreamer4_world" in word for word in argv) and importlib.util.find_spec("dreamer4") is None:
        pytest.skip("needs the dreamer4 package (pip install dreamer4==0.20.2)")
    monkeypatch.chdir(ROOT)
    out = StringIO()
    with redirect_stdout(out):
        status = main([*argv, "--dry-run"])
    assert status == 0, f"{page}: `ablate {' '.join(argv)} --dry-run` exited {status}"
    assert " trials" in out.getvalue()


@pytest.mark.parametrize(("page", "argv"), OTHERS, ids=[" ".join(argv) for _, argv in OTHERS])
def test_every_other_command_parses(page, argv):
    parser = hook().cli_parser()
    try:
        args, extra = parser.parse_known_args(list(argv))
    except SystemExit:
        pytest.fail(f"{page}: `ablate {' '.join(argv)}` does not parse")
    assert not extra, f"{page}: `ablate {' '.join(argv)}`: unknown {extra}"
    assert args.command == argv[0]


def test_a_renamed_option_would_fail():
    parser = hook().cli_parser()
    with pytest.raises(SystemExit), redirect_stdout(StringIO()):
        parser.parse_args(["report", "results/x", "--colour-by", "tau2_weight"])
    _, extra = parser.parse_known_args(["report", "results/x", "--colour-by", "tau2_weight"])
    assert extra


@pytest.mark.parametrize(("page", "text"), [b for b in blocks(("yaml",)) if re.search(r"^name:", b[1], re.M)])
def test_every_experiment_block_is_a_valid_experiment(page, text, monkeypatch):
    from ablate.experiment import parse_experiment

    monkeypatch.chdir(ROOT)
    experiment = parse_experiment(yaml.safe_load(text), source=ROOT / "experiments" / "example.yaml")
    assert experiment.trials, page


def test_the_objective_example_runs():
    (example,) = [text for page, text in blocks(("python",)) if page == "docs/concepts.md"]
    namespace: dict = {}
    exec(compile(example, "docs/concepts.md", "exec"), namespace)
    assert namespace["samples"].shape == (1000, 2)


# --- the generated reference pages --------------------------------------------------------------------------


def _section(page: str, heading: str) -> str:
    """The text under one `## heading` of a page, up to the next heading of that level or above."""
    start = page.index(f"\n{heading}\n")
    rest = page[start + len(heading) + 2 :]
    level = heading.index(" ")  # the number of #s
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def test_the_experiment_file_reference_lists_every_key_and_field():
    from ablate import config
    from ablate.experiment import TOP_LEVEL

    page = hook().experiment_file_page()
    top = _section(page, "## Top-level keys")
    for key in TOP_LEVEL:
        assert f"| `{key}` |" in top, key
    classes = hook().config_classes()
    assert set(config.SECTIONS.values()) <= set(classes) and config.TrialConfig in classes
    for name, cls in config.SECTIONS.items():
        table = _section(page, f"## `{name}:`")
        for field in dataclasses.fields(cls):
            row = next((line for line in table.splitlines() if line.startswith(f"| `{field.name}` |")), None)
            assert row is not None, f"{name}.{field.name}"
            assert f"| `{field.type}` |" in row, f"{name}.{field.name}: its type"
            cells = [cell.strip() for cell in row.split(" | ")]
            assert cells[-1].rstrip(" |") not in ("", "—"), f"{name}.{field.name} has no description"
    for cls in classes:
        for field in dataclasses.fields(cls):
            assert f"| `{field.name}` |" in page, f"{cls.__name__}.{field.name}"
    for factor in config.FACTOR_SECTIONS:
        assert f"`{factor}`" in _section(page, "## Factors")


def test_the_defaults_in_the_reference_are_the_code_s():
    from ablate.config import ObjectiveConfig, TrainConfig

    page = hook().experiment_file_page()
    assert f"| `k_max` | `int` | `{ObjectiveConfig.k_max}` |" in page
    assert f"| `teacher_decay` | `float` | `{TrainConfig.teacher_decay}` |" in page
    spec = hook().minimal_spec()  # what a file of only `name:` resolves to
    for key in ("seeds", "baseline", "pack", "max_failures"):
        assert f"| `{key}` | `{hook()._yaml(spec[key])}` |" in page, key


def test_the_cli_reference_lists_every_command_and_option():
    page = hook().cli_page()
    commands = hook().subcommands(hook().cli_parser())
    assert set(commands) == {"run", "report", "compare", "merge"}
    for name, (_, parser) in commands.items():
        section = _section(page, f"## `ablate {name}`")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"`{option}`" in section, f"ablate {name} {option}"
            if not action.option_strings:
                assert f"`{action.metavar or action.dest}" in section, f"ablate {name} {action.dest}"
            if action.help:
                assert hook()._cell(action.help) in section, f"ablate {name} {action.dest}: its help"


def test_run_s_overrides_are_optional():
    parser = hook().cli_parser()
    args, _ = parser.parse_known_args(["run", "experiments/quickstart.yaml"])
    assert args.overrides == []
    assert "| `KEY=VALUE ...` | — |" in hook().cli_page()


def test_the_results_page_is_the_contract():
    page = hook().results_page()
    contract = (ROOT / "results" / "README.md").read_text()
    assert page.startswith("# The results contract")
    kept = [line for line in contract.splitlines()[1:] if "the README's" not in line]  # that one becomes a link
    assert all(line in page for line in kept)
