#!/usr/bin/env bash
# Mutation testing of one part of `ablate` with mutmut 3 (pip install -e '.[mutation]'). Not part of CI: slow.
#
#   benchmarks/mutation.sh TARGET [MUTANT_NAME_OR_GLOB ...]
#
# TARGET is one of the names in the `case` below (objective, packing, statistics, runner). The working tree, uncommitted
# and untracked-but-not-ignored files included, is copied into a scratch folder under ${TMPDIR:-/tmp};
# mutmut runs there, so nothing is written into the checkout. At the end it prints the count per status,
# the kill percentage, the survivors and the wall time. See docs/mutation.md.
#
# Environment:
#   MUTATION_DIR=path    use (and keep) this scratch folder instead of a fresh temporary one. A second run
#                        in the same folder re-copies the working tree and lets mutmut reuse its cached
#                        verdicts; name mutants (or globs, quoted) after TARGET to re-test just those.
#   MUTATION_KEEP=1      keep the temporary scratch folder (it is deleted otherwise).
#   MUTATION_CHILDREN=n  parallel mutant workers (default: the number of CPUs this process may use).
#   PYTHON=path          the interpreter whose environment has mutmut (default: the project's .venv).
#
# Adding a target: a new branch in the `case` with the files to mutate, the tests that judge them and, if
# those tests spend long in fixtures, a larger TIMEOUT_CONSTANT. Where only some functions of a file are
# the target, FUNCTIONS lists them: mutmut still generates the whole file's mutants but runs only these
# (they are passed to `mutmut run` when no names are given), and the score counts only these.
set -euo pipefail

usage() {
    echo "usage: $0 {objective|packing|statistics|runner} [MUTANT_NAME_OR_GLOB ...]" >&2
    exit 2
}
[[ $# -ge 1 ]] || usage
TARGET=$1
shift

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
MUTMUT=$(dirname "$PYTHON")/mutmut
[[ -x $MUTMUT ]] || { echo "no mutmut next to $PYTHON: pip install -e '.[mutation]'" >&2; exit 2; }
# source_paths, only_mutate, timeout_constant and pytest_add_cli_args_test_selection need mutmut 3.6
"$PYTHON" - <<'PY'
import sys
from importlib.metadata import version
found = version("mutmut")
if tuple(int(part) for part in found.split(".")[:2]) < (3, 6):
    sys.exit(f"mutmut {found} is too old: this script needs mutmut >= 3.6 (pip install -e '.[mutation]')")
PY

# mutmut runs a mutant's tests fastest first, by call duration, and stops at the first failure. Time spent
# in module-scoped fixtures is not in those durations, so a test file with an expensive fixture would run
# first for every mutant it reaches: RUN_LAST moves such files to the end (a pytest plugin in the scratch
# folder). Such fixtures also count against mutmut's timeout per mutant, (sum of the selected tests' call
# durations + TIMEOUT_CONSTANT) * 15 s of wall time, so raise the constant or they read as timeouts.
TIMEOUT_CONSTANT=1
RUN_LAST=()  # test files whose fixtures are slow: run after every other selected test of a mutant
FUNCTIONS=()  # if set: only these functions of the MUTATE files are the target (module.function, Class.method)
case $TARGET in
    objective)
        # the toggles and Variant live in variants.py; the knob and input checks and the fixed teacher context
        # in their own modules; the knobs' tests in test_objective_knobs.py
        MUTATE=(ablate/objective.py ablate/objective_checks.py ablate/teacher_context.py ablate/variants.py)
        TESTS=(tests/test_objective.py tests/test_objective_knobs.py)
        ;;
    packing)
        # Packed training and evaluation: a member of a pack must score what its config scores alone.
        MUTATE=(ablate/packing.py ablate/packed_objective.py ablate/packed_evaluation.py)
        TESTS=(tests/test_packing.py tests/test_packed_evaluation.py)
        ;;
    statistics)
        MUTATE=(ablate/analysis/inference.py ablate/analysis/grid.py ablate/analysis/effects.py
                ablate/analysis/cells.py ablate/analysis/comparisons.py ablate/analysis/power.py
                ablate/analysis/tables.py)
        TESTS=(tests/test_analysis.py tests/test_coverage.py)
        RUN_LAST=(tests/test_coverage.py)
        TIMEOUT_CONSTANT=10  # test_coverage.py's fixture simulates 1200 grids (~15 s) outside any call
        ;;
    runner)
        # The resume and fault logic, judged by the fast tests of tests/test_runner.py (no Ray: Tune's
        # report/get_checkpoint are replaced by a recorder). Left out, because only the end-to-end tests
        # that start Ray reach them (test_cli_run.py, test_faults.py; minutes per mutant): run_experiment,
        # _run_locked, _tuner, _trial_name; and what is not resume logic: the progress line (ProgressView,
        # _running_steps, _duration), package_versions, git_commit, and the read side of results.py (load,
        # Results, _read_table, _canonical_factors, _level_key, _is_missing). mutmut 3 makes no mutants of
        # decorated functions, so folder_lock, ray_session and sigterm_as_sigint (@contextmanager) cannot
        # be in the list; nor of LiveTables.__enter__ / __exit__ (nothing to mutate).
        MUTATE=(ablate/runner.py ablate/worker.py ablate/results.py ablate/records.py ablate/progress.py
                ablate/provenance.py)
        TESTS=(tests/test_runner.py)
        FUNCTIONS=(runner.resolve_output runner.check_output runner._gpu_share progress.LiveTables.__init__
                   progress.LiveTables.run worker.train_one worker._restore worker._give_up
                   worker._report_with_checkpoint worker.save_trial_result runner.write_results
                   runner.collect_tables provenance.run_info provenance.iso_time provenance.jsonable
                   results.atomic_write results.write_text results._factor_names results._check_columns
                   results._parquet_safe results.write_tables results._to_parquet
                   results.default_primary_steps records.record_path records.write_trial_result
                   records._save_npz records.record_names records.read_trial_records records.rebuild_tables
                   records.collect_tables results.first_line results.json_default results.read_run)
        ;;
    *)
        usage
        ;;
esac

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# mutmut's mutant names: ablate.<module>.x_<function>__mutmut_N, ablate.<module>.xǁ<Class>ǁ<method>__mutmut_N
SELECTED=()
for function in "${FUNCTIONS[@]}"; do
    module=${function%%.*} name=${function#*.}
    if [[ $name == *.* ]]; then
        SELECTED+=("ablate.$module.xǁ${name%%.*}ǁ${name#*.}__mutmut_*")
    else
        SELECTED+=("ablate.$module.x_${name}__mutmut_*")
    fi
done
if [[ $# -eq 0 && ${#SELECTED[@]} -gt 0 ]]; then
    set -- "${SELECTED[@]}"
fi
CHILDREN=${MUTATION_CHILDREN:-$("$PYTHON" -c 'import os; print(len(os.sched_getaffinity(0)))')}

if [[ -n ${MUTATION_DIR:-} ]]; then
    WORK=$MUTATION_DIR
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/ablate-mutation-$TARGET.XXXXXX")
    if [[ -z ${MUTATION_KEEP:-} ]]; then
        trap 'rm -rf "$WORK"' EXIT
    fi
fi
case $WORK in
    "$REPO"|"$REPO"/*) echo "MUTATION_DIR must lie outside the checkout ($REPO)" >&2; exit 2 ;;
esac

START=$(date +%s)

# The working tree as it is: tracked files (with their uncommitted edits) and untracked files that are not
# ignored; deleted tracked files are skipped. tar keeps modification times, which mutmut uses to tell which
# sources changed since it last generated mutants in a reused folder.
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | "$PYTHON" -c 'import os, sys; sys.stdout.write("".join(p + "\0" for p in sys.stdin.read().split("\0") if p and os.path.isfile(p)))' \
    | tar --null --files-from=- -cf -) | tar -xf - -C "$WORK"

lines() { printf '    %s\n' "$@"; }
# mutmut copies also_copy files into mutants/, which is first on sys.path when pytest loads the plugin.
cat > "$WORK/mutation_run_last.py" <<EOF
"""pytest plugin of benchmarks/mutation.sh: the tests of these files run last, in their own order."""
RUN_LAST = ($( ((${#RUN_LAST[@]})) && printf '"%s", ' "${RUN_LAST[@]}"))


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.nodeid.split("::")[0] in RUN_LAST)  # stable: keeps mutmut's order
EOF
# A [tool.mutmut] table in pyproject.toml would take precedence over setup.cfg; the project has none.
cat > "$WORK/setup.cfg" <<EOF
[mutmut]
source_paths =
$(lines ablate)
only_mutate =
$(lines "${MUTATE[@]}")
pytest_add_cli_args_test_selection =
$(lines "${TESTS[@]}")
pytest_add_cli_args =
    -p
    no:cacheprovider
    -p
    mutation_run_last
also_copy =
    mutation_run_last.py
timeout_constant = $TIMEOUT_CONSTANT
EOF

# How the mutated copy gets imported: mutmut copies `ablate/` into $WORK/mutants/, puts that folder first
# on sys.path and removes $WORK itself, and runs pytest inside it. The editable install of the checkout is
# a meta-path finder that Python consults only after sys.path, so `import ablate` finds the mutants.
# mutmut checks it: it stops unless a forced failure planted in the mutated code makes the tests fail,
# and unless the tests reach the mutated functions under the module names it generated.
cd "$WORK"
echo "scratch folder: $WORK (target $TARGET, $CHILDREN workers)"
set +e
if [[ -t 1 ]]; then
    "$MUTMUT" run --max-children "$CHILDREN" "$@"
    RC=$?
else  # a log, not a terminal: keep only the last state of each in-place (\r) status line
    "$MUTMUT" run --max-children "$CHILDREN" "$@" 2>&1 | awk -F'\r' '{ print $NF }'
    RC=${PIPESTATUS[0]}
fi
set -e
END=$(date +%s)
[[ $RC -eq 0 ]] || echo "mutmut run exited with $RC" >&2

"$MUTMUT" results --all true > mutmut-results.txt
"$PYTHON" - mutmut-results.txt "$TARGET" $((END - START)) "${SELECTED[@]}" <<'EOF'
import collections
import fnmatch
import sys

path, target, seconds, selected = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
status = {}
for line in open(path):
    name, sep, verdict = line.strip().rpartition(": ")
    if sep:
        status[name] = verdict
if selected:  # the target is some functions of its files: the other mutants were generated, not run
    outside = [k for k in status if not any(fnmatch.fnmatchcase(k, glob) for glob in selected)]
    for name in outside:
        del status[name]
    print(f"\n{len(outside)} mutants of functions outside the target left out (see FUNCTIONS in benchmarks/mutation.sh)")
counts = collections.Counter(status.values())
# Not run: mutmut could not judge these (no test reaches the code, a check it skipped, or not yet run).
not_run = {"no tests", "skipped", "not checked", "check was interrupted by user"}
ran = {k: v for k, v in status.items() if v not in not_run}
# A timeout is a kill: the tests did not pass (benchmarks/mutation.sh sets the limit well above the tests' time;
# check the listed ones are hangs, e.g. a loop that no longer ends).
killed = sum(v in ("killed", "timeout") for v in ran.values())
print(f"\n== mutation score, target {target} ==")
for verdict, n in sorted(counts.items(), key=lambda kv: -kv[1]):
    print(f"  {verdict:<30} {n}")
print(f"  {'total':<30} {len(status)}")
if ran:
    print(f"killed {killed} (timeouts included) / {len(ran)} mutants that ran = {100 * killed / len(ran):.1f} %")
    modules = sorted({k.split(".x")[0] for k in ran})
    if len(modules) > 1:
        for module in modules:
            mine = [v for k, v in ran.items() if k.split(".x")[0] == module]
            hit = sum(v in ("killed", "timeout") for v in mine)
            print(f"  {module:<30} {hit} / {len(mine)} = {100 * hit / len(mine):.1f} %")
for label, keep in (("survived", {"survived"}), ("timeout, suspicious, segfault, ...",
                     set(counts) - not_run - {"killed", "survived"}), ("not run", not_run)):
    names = sorted(k for k, v in status.items() if v in keep)
    if names:
        print(f"\n{label} ({len(names)}):")
        for name in names:
            print(f"  {name}" if keep == {"survived"} else f"  {name}  [{status[name]}]")
print(f"\nwall time {seconds // 60} min {seconds % 60} s")
EOF
if [[ -n ${MUTATION_DIR:-} || -n ${MUTATION_KEEP:-} ]]; then
    echo "kept $WORK: cd there and run '$MUTMUT show NAME' to see a mutant"
fi
exit $RC
