"""The README stays short, keeps exactly two set-up lines, and its links lead somewhere.

Its commands are run (with --dry-run) by tests/test_docs.py, with the docs' own; the Python example of the
objective moved to docs/concepts.md and runs there.
"""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_two_set_up_lines():
    setup = README.split("## Set up")[1].split("\n## ")[0]
    lines = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert lines[0].endswith("ablate run experiments/quickstart.yaml")
    assert lines[1].endswith("python -m pytest -q")
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
    getting_started = (ROOT / "docs" / "getting-started.md").read_text()
    assert all(f"```bash\n{line}\n```" in getting_started for line in lines)


def test_short():
    assert len(README.splitlines()) <= 200


def test_every_relative_link_exists():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link]
    assert local, "the README links into docs/"
    for link in local:
        assert (ROOT / link).exists(), link
