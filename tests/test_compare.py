"""`ablate compare`: folders side by side, effects per folder and rliable-style aggregates."""

import pandas as pd
from synthetic import make_synthetic_results

from ablate.cli import main


def test_compare_two_studies_with_opposite_metric_directions(tmp_path, capsys):
    # w2 (lower is better): the paper's tau_sampling level raises it, i.e. hurts; accuracy (higher is
    # better): the same +0.4 helps. The weight does nothing in either.
    make_synthetic_results(
        tmp_path / "a",
        {"tau_sampling": 0.4},
        noise_sd=0.02,
        seeds=range(3),
        steps=[1, 4],
        metrics=["w2"],
        seed=1,
        name="a",
    )
    make_synthetic_results(
        tmp_path / "b",
        {"tau_sampling": 0.4},
        noise_sd=0.02,
        seeds=range(3),
        steps=[1, 4],
        metrics=["accuracy"],
        metric_directions={"accuracy": "max"},
        seed=2,
        name="b",
    )
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv").set_index(["folder", "term"])
    assert table.loc[("a", "tau_sampling"), "normalised_effect"] < -0.5
    assert table.loc[("b", "tau_sampling"), "normalised_effect"] > 0.5
    assert table.loc[("a", "tau_sampling"), "probability_of_improvement"] == 0.0
    assert table.loc[("b", "tau_sampling"), "probability_of_improvement"] == 1.0
    assert table.loc[("a", "tau_sampling"), "ci_low"] <= 0.4 <= table.loc[("a", "tau_sampling"), "ci_high"]
    aggregate = pd.read_csv(out / "compare_aggregate.csv").set_index("term")
    weight = aggregate.loc["tau2_weight"]
    assert weight["effect_ci_low"] <= weight["normalised_effect"] <= weight["effect_ci_high"]
    assert abs(weight["normalised_effect"]) < 0.1 and weight["n_folders"] == 2
    text = (out / "compare.md").read_text()
    assert "## Across folders" in text and "figures/compare.png" in text and (out / "figures" / "compare.png").exists()

    # several K at once: one table of toggles by folder and K, one figure per K
    both = tmp_path / "both"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(both), "--steps", "1,4"]) == 0
    table = pd.read_csv(both / "compare.csv")
    assert sorted(set(zip(table["folder"], table["steps"]))) == [("a", 1), ("a", 4), ("b", 1), ("b", 4)]
    assert sorted(pd.read_csv(both / "compare_aggregate.csv")["steps"].unique()) == [1, 4]
    text = (both / "compare.md").read_text()
    header = "| toggle | a, w2 K = 1 | a, w2 K = 4 | b, accuracy K = 1 | b, accuracy K = 4 |"
    assert header in text
    tau_row = next(line for line in text.splitlines() if line.startswith("| `tau_sampling` |"))
    assert tau_row.count("**+0.") == 4  # the injected +0.4, bold: it survives Holm in every column
    weight_row = next(line for line in text.splitlines() if line.startswith("| `tau2_weight` |"))
    assert "**" not in weight_row
    assert all((both / "figures" / f"compare_K{k}.png").exists() for k in (1, 4))


def test_compare_errors_are_one_line(tmp_path, capsys):
    make_synthetic_results(tmp_path / "a", {}, noise_sd=0.02, seeds=range(2), steps=[4], metrics=["w2"])
    for args, named in (
        (["compare", str(tmp_path / "a"), "--output", str(tmp_path / "o")], "at least two"),
        (["compare", str(tmp_path / "a"), str(tmp_path), "--output", str(tmp_path / "o")], "not a results folder"),
        (
            ["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--output", str(tmp_path / "o"), "--metric", "fd"],
            "no quality metric 'fd'",
        ),
        (
            ["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--output", str(tmp_path / "o"), "--steps", "1,x"],
            "1,x",
        ),
        (
            ["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--output", str(tmp_path / "o"), "--steps", "2"],
            "K = 2",
        ),
    ):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err


def test_a_folder_compared_with_itself_is_two_columns_told_apart_by_position(tmp_path):
    a = tmp_path / "a"
    make_synthetic_results(a, {"tau_sampling": 0.4}, noise_sd=0.02, seeds=range(3), steps=[4], metrics=["w2"])
    assert main(["compare", str(a), str(a), "--output", str(tmp_path / "cmp")]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert list(dict.fromkeys(table["folder"])) == ["a (1)", "a (2)"]
    first, second = (
        table[table["folder"] == f].drop(columns="folder").reset_index(drop=True) for f in ("a (1)", "a (2)")
    )
    pd.testing.assert_frame_equal(first, second)  # the same folder: the same numbers
    assert "| toggle | a (1), w2 K = 4 | a (2), w2 K = 4 |" in (tmp_path / "cmp" / "compare.md").read_text()
    assert (tmp_path / "cmp" / "figures" / "compare.png").exists()


def test_compare_refuses_an_existing_output_and_bad_scales_writing_nothing(tmp_path, capsys):
    a = tmp_path / "a"
    make_synthetic_results(a, {}, noise_sd=0.02, seeds=range(2), steps=[4], metrics=["w2"])
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    for output, extra, named in (
        (existing, [], "already exists"),
        (tmp_path / "o", ["--scale", "fd=log"], "no folder has a quality metric 'fd'"),
        (tmp_path / "o", ["--scale", "w2=sqrt"], "log or raw"),
        (tmp_path / "o", ["--scale", "w2"], "metric=scale"),
    ):
        capsys.readouterr()
        assert main(["compare", str(a), str(a), "--output", str(output), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, err
    assert [p.name for p in existing.iterdir()] == ["notes.txt"] and not (tmp_path / "o").exists()


def test_compare_reads_a_metric_on_one_scale_in_every_folder(tmp_path):
    """Folder a's task declares w2 a distance (log), b's declares nothing (raw): both are read on log (the
    first folder's), and compare.md says so; `--scale w2=raw` reads both on raw."""
    for name, scales in (("a", {"w2": "log"}), ("b", {})):
        make_synthetic_results(
            tmp_path / name,
            {"tau_sampling": 0.4},
            noise_sd=0.02,
            seeds=range(3),
            steps=[4],
            metrics=["w2"],
            metric_scales=scales,
            name=name,
        )
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "log")]) == 0
    assert set(pd.read_csv(tmp_path / "log" / "compare.csv")["scale"]) == {"log"}
    text = (tmp_path / "log" / "compare.md").read_text()
    assert "One scale per metric in every folder: w2 log." in text
    assert "The folders declare different scales for w2: log (a), raw (b); it is read on the log scale" in text
    tau_row = next(line for line in text.splitlines() if line.startswith("| `tau_sampling` |"))
    assert tau_row.count("**x") == 2 and "+0." not in tau_row  # a ratio in both columns, never a difference
    args = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "raw"), "--scale", "w2=raw"]
    assert main(args) == 0
    assert set(pd.read_csv(tmp_path / "raw" / "compare.csv")["scale"]) == {"raw"}
    assert "(`--scale`)" in (tmp_path / "raw" / "compare.md").read_text()
