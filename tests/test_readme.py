"""The README's Python example runs as written, and the README keeps exactly two set-up lines."""

import re
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_the_objective_example_runs():
    (example,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["samples"].shape == (1000, 2)


def test_two_set_up_lines():
    setup = README.split("## Set up")[1].split("\n## ")[0]
    lines = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert lines[0].endswith("ablate run experiments/quickstart.yaml")
    assert lines[1].endswith("python -m pytest -q")
    assert "python -m pytest -q" in (Path(__file__).parent.parent / ".ci" / "run").read_text()
