"""MkDocs hook: the reference pages, written from the code at build time so that they cannot drift.

- ``reference/experiment-file.md``: every top-level key of an experiment file (``ablate.experiment.TOP_LEVEL``,
  with the defaults a minimal file resolves to) and every field of every configuration dataclass in
  ``ablate/config.py`` (type, default and the comment on its line);
- ``reference/cli.md``: every command and option of the ``ablate`` parser (``ablate/cli.py``);
- ``results.md``: ``results/README.md``, the results contract, as it is in the repository.

None of them is a file in docs/: they exist only in the built site. A top-level key or a field that has
no description fails the build (``mkdocs build --strict`` in ``.ci/run``), and tests/test_docs.py checks
that the pages name every field and option. No plugin: ``hooks:`` in mkdocs.yml points at this file.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import os
import re
import tokenize
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]

# What each top-level key of an experiment file means (ablate.experiment.TOP_LEVEL lists the keys; a key
# there without a line here fails the build). Sections with a dataclass get their own table below.
TOP_LEVEL_DOCS = {
    "name": "**Required.** The study's name, a word of letters, digits, `_`, `-` or `.`; results go to "
    "`results/<name>/`.",
    "task": "A built-in task (`toy2d`, `digits`, `sequence`, `latent_world`), `package.module:function`, a path "
    "to a `.py` file (its `make_task`) or `file.py:function`; a relative path is taken from the working "
    "directory or the experiment file. See [Tasks](../tasks.md).",
    "task_params": "Keyword arguments for the task's function (a mapping); any of them may be a factor, "
    "written `task_params.NAME`.",
    "objective": "The objective's keys and the four toggles: see [`objective:`](#objective) below.",
    "factors": "What varies: `{key: [level, ...]}` for any `objective:` or `train:` key, `task_params.NAME` or "
    "`preset`. Every combination of levels is a cell; the first level listed (the paper's, for a toggle) is "
    "the reference, coded +1 in `effects.csv`. Left out: the four toggles at both levels (16 cells).",
    "design": "Which cells of the factorial are run: `full`, `half`, `{fraction: 1/4}` or `{generators: "
    "[...]}`. See [Cheaper studies](../cheaper-studies.md).",
    "baseline": "`true` adds the flow-only baseline cell `flow` (one per level of the factors that are not "
    "toggles). See [Concepts](../concepts.md#the-flow-baseline).",
    "seeds": "The seeds every cell runs (the replicates of every interval), e.g. `[0, 1, 2]`; every cell of "
    "seed s shares its data, noise and (tau, d) streams. Rounds of seeds: see "
    "[Cheaper studies](../cheaper-studies.md).",
    "train": "The budget, the optimiser and the stabilisers: see [`train:`](#train) below.",
    "eval": "The sampling step counts K and the evaluation noise: see [`eval:`](#eval) below.",
    "resources": "Per trial: `{cpu: 1, gpu: 0}`; `gpu: 0.25` puts four trials on one GPU, `gpu: auto` takes "
    "0.25 of a GPU when the cluster has GPUs and none otherwise.",
    "max_concurrent": "At most this many trials at once (default: as many as the resources fit).",
    "pack": "Up to N trials that share a task, model, batch and step schedule trained in one process as one "
    "vectorised step; `auto`: 32 when trials get a GPU, 1 on CPUs. See "
    "[Performance and packing](../performance.md).",
    "primary": "`{metric: NAME, steps: K}`: what the report's opening answers (default: the task's primary "
    "metric at K = 4).",
    "output": "The results folder (default `results/<name>`; `--output` wins).",
    "checkpoint_seconds": "Seconds between a trial's checkpoints (its full state), from which a crashed or "
    "interrupted trial continues.",
    "max_failures": "How often a crashed trial is retried from its checkpoint (one that raises the same "
    "exception at the same step twice is recorded `failed` at once).",
    "labels": "Display names in figures, by role (`paper`, `simplified`, `baseline`) or cell label, e.g. "
    "`{paper: DreamerV4}`.",
    "loggers": "Trackers through Ray Tune's logger callbacks: `[tensorboard, csv, {mlflow: {tracking_uri: "
    "...}}, {wandb: {project: ..., mode: offline}}]`, each an extra (`pip install 'ablate[mlflow]'`).",
}


def _yaml(value) -> str:
    """A default as it is written in an experiment file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}" if value else "{}"
    return str(value)


def _cell(text: str) -> str:
    """Markdown for one table cell: one line; outside code spans a pipe escaped and ``<`` written as text (not
    a tag). Inside a code span both stay as they are: a table's code spans may hold pipes, and an escape
    there would show."""
    parts = re.split(r"(`[^`]*`)", str(text).replace("\n", " "))
    plain = lambda part: part.replace("|", "\\|").replace("<", "&lt;")
    return "".join(part if part.startswith("`") else plain(part) for part in parts)


def field_comments(cls: type) -> dict[str, str]:
    """The comment on each field's line of a dataclass's source (``name: type = default  # comment``)."""
    source = inspect.getsource(cls)
    lines = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines[node.lineno] = node.target.id
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and token.start[0] in lines:
            comments[lines[token.start[0]]] = token.string.lstrip("#").strip()
    return comments


def config_classes() -> list[type]:
    """Every dataclass defined in ablate/config.py, sections first in the order of ``SECTIONS``."""
    from ablate import config

    classes = [
        c
        for _, c in inspect.getmembers(config, inspect.isclass)
        if dataclasses.is_dataclass(c) and c.__module__ == config.__name__
    ]
    order = {c: i for i, c in enumerate(config.SECTIONS.values())}
    return sorted(classes, key=lambda c: (order.get(c, len(order)), inspect.getsourcelines(c)[1]))


def allowed_values() -> dict[tuple[type, str], tuple]:
    """The levels the code itself lists for a field (the toggles, the teacher, the presets)."""
    from ablate import config
    from ablate.presets import PRESETS
    from ablate.variants import TOGGLES

    allowed = {(config.ObjectiveConfig, name): levels for name, levels in TOGGLES.items()}
    allowed[(config.TrainConfig, "teacher")] = tuple(config.TEACHERS)
    allowed[(config.ObjectiveConfig, "preset")] = (None, *PRESETS)
    return allowed


def _default(f: dataclasses.Field) -> str:
    """A field's default as a table cell."""
    if f.default is not dataclasses.MISSING:
        return _cell(f"`{_yaml(f.default)}`")
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return _cell(f"`{_yaml(value)}`") if not dataclasses.is_dataclass(value) else f"`{type(value).__name__}()`"
    return "required"


def dataclass_table(cls: type, strict: bool = True) -> str:
    """Key, type, default and meaning of every field; ``strict``: a field without a comment fails the build."""
    from ablate.variants import TOGGLES

    comments, allowed = field_comments(cls), allowed_values()
    rows = ["| key | type | default | what |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        what = comments.get(f.name, "")
        if f.name in TOGGLES and cls.__name__ == "ObjectiveConfig":
            what = (what + "; " if what else "") + "a toggle, see [the four toggles](../concepts.md#the-four-toggles)"
        levels = allowed.get((cls, f.name))
        if levels:
            what += ("; " if what else "") + "one of " + ", ".join(f"`{_yaml(v)}`" for v in levels)
        if not what and strict:
            raise ValueError(f"docs: {cls.__name__}.{f.name} has no comment in ablate/config.py to document it by")
        rows.append(f"| `{f.name}` | {_cell(f'`{f.type}`')} | {_default(f)} | {_cell(what) or '—'} |")
    return "\n".join(rows)


def _quickstart_keys() -> str:
    """experiments/quickstart.yaml without its opening comments."""
    text = (ROOT / "experiments" / "quickstart.yaml").read_text()
    return text[text.index("\nname:") + 1 :].rstrip()


def minimal_spec() -> dict:
    """What a file holding only ``name:`` resolves to: the defaults of the top-level keys."""
    from ablate.experiment import parse_experiment

    return parse_experiment({"name": "example"}).spec


def experiment_file_page() -> str:
    from ablate import config
    from ablate.experiment import TOP_LEVEL

    missing = [key for key in TOP_LEVEL if key not in TOP_LEVEL_DOCS]
    if missing:
        raise ValueError(f"docs: top-level experiment keys without a description in docs/hooks/reference.py: {missing}")
    spec = minimal_spec()
    sections = {name: cls for name, cls in config.SECTIONS.items()}
    out = [
        "# Experiment file reference",
        "",
        "*Generated when the site is built, from `ablate/experiment.py` (`TOP_LEVEL`) and the configuration "
        "dataclasses of `ablate/config.py`: the keys, types and defaults below are the code's.*",
        "",
        "An experiment file is YAML. Every key is checked before Ray starts: an unknown key, a wrong type or an "
        "impossible value is one line naming the key (with a did-you-mean), exit status 2, and nothing is "
        "written. The same keys can be set on the command line as dotted overrides (`train.steps=500`, "
        "`seeds=[0,1,2]`, `factors.tau2_weight=[true]`), checked exactly like the file.",
        "",
        "```yaml",
        _quickstart_keys(),
        "```",
        "",
        "## Top-level keys",
        "",
        "| key | default | what |",
        "|---|---|---|",
    ]
    for key in TOP_LEVEL:
        if key in sections:
            default = "see below"
        elif key == "name":
            default = "required"
        else:
            default = _cell(f"`{_yaml(spec.get(key))}`") if key in spec else "—"
        out.append(f"| `{key}` | {default} | {_cell(TOP_LEVEL_DOCS[key])} |")
    for name, cls in sections.items():
        out += ["", f"## `{name}:`", "", inspect.cleandoc(cls.__doc__ or ""), "", dataclass_table(cls)]
    out += [
        "",
        "## Factors",
        "",
        "Any key of `objective:` or `train:` may be a factor with a list of levels, and so may "
        "`task_params.NAME` and `preset` (one cell per named implementation). The levels are checked as the "
        "section checks its keys. Factor keys:",
        "",
        ", ".join(f"`{key}`" for key in config.FACTOR_SECTIONS) + ", `task_params.NAME`.",
    ]
    others = [cls for cls in config_classes() if cls not in sections.values()]
    if others:
        out += ["", "## In code", "", "The configuration classes a trial is built from (`ablate.config`)."]
        for cls in others:
            doc = inspect.cleandoc(cls.__doc__ or "")
            out += ["", f"### `{cls.__name__}`", "", doc, "", dataclass_table(cls, strict=False)]
    return "\n".join(out) + "\n"


class _Parser(Exception):
    """Carries the parser ``ablate.cli.main`` builds out of it, before it parses anything."""


def cli_parser() -> argparse.ArgumentParser:
    """The ``ablate`` parser exactly as ``ablate.cli.main`` builds it."""
    from ablate import cli

    def capture(self, *args, **kwargs):
        raise _Parser(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", capture):
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                cli.main(["--help"])
        except _Parser as captured:
            return captured.args[0]
    raise RuntimeError("docs: ablate.cli.main did not build a parser")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """{name: (help, parser)} of the parser's subcommands, in the order they were added."""
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    return {name: (helps.get(name, ""), sub) for name, sub in action.choices.items()}


def _argument(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(f"`{o}`" for o in action.option_strings)
        if action.nargs == 0:
            return names
        return f"{names} `{action.metavar or action.dest.upper()}`"
    name = action.metavar or action.dest
    return f"`{name} ...`" if action.nargs in ("*", "+") else f"`{name}`"


def cli_page() -> str:
    with mock.patch.dict(os.environ, {"COLUMNS": "100"}):  # the usage lines wrap the same on every machine
        return _cli_page(cli_parser())


def _cli_page(parser: argparse.ArgumentParser) -> str:
    out = [
        "# CLI reference",
        "",
        "*Generated when the site is built, from the parser of `ablate/cli.py`: every command and option "
        "below is the code's.*",
        "",
        inspect.cleandoc(parser.description or ""),
        "",
        "Exit status: 0 done; 1 a trial failed or a file could not be written; 2 a bad experiment file, "
        "override or folder (one line, nothing written); 130 interrupted (Ctrl-C or SIGTERM; finish with "
        "`--resume`).",
    ]
    for name, (help_text, sub) in subcommands(parser).items():
        out += ["", f"## `ablate {name}`", "", f"{help_text[:1].upper()}{help_text[1:]}.", ""]
        out += ["```text", sub.format_usage().strip(), "```", ""]
        out += ["| argument | default | what |", "|---|---|---|"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            required = action.required if action.option_strings else action.nargs not in ("*", "?")
            if required:
                default = "required"
            elif action.nargs == 0 or action.default in (None, [], argparse.SUPPRESS):
                default = "—"
            else:
                default = f"`{_yaml(action.default)}`"
            out.append(f"| {_argument(action)} | {default} | {_cell(action.help or '')} |")
    out += [
        "",
        "## Environment",
        "",
        "| variable | what |",
        "|---|---|",
        "| `RAY_ADDRESS` | the Ray cluster `ablate run` joins when `--address` is not given (default: a local "
        "Ray, stopped at the end) |",
        "| `ABLATE_RESULTS` | the results folder `notebooks/compare_variants.ipynb` reads (default "
        "`../results/quickstart`, relative to the notebook) |",
        "| `ABLATE_CACHE` | where the digits task caches its frozen feature classifier (default `~/.cache/ablate`) |",
    ]
    return "\n".join(out) + "\n"


def results_page() -> str:
    """results/README.md, the contract as the repository keeps it next to the results."""
    text = (ROOT / "results" / "README.md").read_text()
    title, _, body = text.partition("\n")
    note = (
        "*This page is `results/README.md`, the file kept next to the results; the report and the notebook "
        "read only the files it lists.*"
    )
    body = body.replace('the README\'s "Reading the report"', "[Reading the report](reading-the-report.md)")
    return f"# The results contract\n\n{note}\n{body}"


PAGES = {
    "reference/experiment-file.md": experiment_file_page,
    "reference/cli.md": cli_page,
    "results.md": results_page,
}


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, render in PAGES.items():
        files.append(File.generated(config, path, content=render()))
    return files
