"""bench/render.py: docs/benchmarks.md is generated from the result files, table rows and
provenance exactly as written, and ``--check`` tells a stale page from a fresh one; the
committed page is what the committed results give; ``--save`` records what it says."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benches' package, as the bench scripts put it first
from bench import record  # noqa: E402

FIXTURES = ROOT / "tests" / "data" / "bench_results"
render = load_script("bench/render.py")

ITERATION_AMD = """\
(iteration)=
## iteration

Cost of CORY next to single-agent PPO, with ``GOALS``.

**Machine kind `amd-epyc-avx512-bf16-2t`**

| metric | what | value | goal | met |
|---|---|---|---|---|
| `cory_over_ppo_iteration` | one CORY iteration / one PPO iteration | 1.53 | <= 2.0 | yes |
| `cory_iteration_s` | one CORY iteration, seconds | 12.3 | report |  |
| `swap_ms` | one role swap, ms | 1.23e-04 | < 10 | yes |
| `peak_mb_cory-lora` | peak memory \\| MB | 1,835 | report |  |
| `absent` | a figure this result lacks | — | report |  |

- command: `python bench/iteration.py`
- machine: AMD EPYC (avx512_bf16, avx512f, avx2), 2 torch threads
- date: 2030-01-02; commit: `0123456789ab+dirty`

**Machine kind `nvidia-h200`**

| metric | what | value | goal | met |
|---|---|---|---|---|
| `cory_over_ppo_iteration` | one CORY iteration / one PPO iteration | 1.25 | <= 2.0 | yes |

- command: `python bench/iteration.py --device cuda`
- machine: AMD EPYC (avx2), 16 torch threads; NVIDIA H200
- date: 2030-01-03; commit: `fedcba987654`
"""


def test_the_page_holds_each_result_s_rows_and_provenance_benches_and_kinds_sorted():
    page = render.render(FIXTURES)
    assert (
        page.startswith("# Benchmarks\n")
        and "`--save`" in page
        and "python bench/render.py" in page
    )
    assert page.endswith(ITERATION_AMD)  # iteration sorts after default_run, its kinds sorted
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert (
        rows[:4]
        == [
            "| `wall_s` | the whole job, seconds | 313 | report |  |",
            "| `iterations` | training iterations | 24 | report |  |",
            "| `eval_last.model_a.reward` | model A's reward at the end | 0.432 | report |  |",  # a nested figure
            "| `eval_last.model_c.reward` | a model the run lacks | — | report |  |",
        ]
    )
    assert page.index("(default_run)=\n## default_run") < page.index("(iteration)=\n## iteration")
    assert render.render(FIXTURES) == page  # deterministic


def test_figures_are_rounded_to_three_significant_digits_or_whole_units():
    cells = [
        render.cell(v)
        for v in (
            1234.5,
            312.74,
            12.345,
            1.5312,
            0.04321,
            0.0,
            4.5e-05,
            7,
            True,
            None,
            [2, 3],
            "a|b",
        )
    ]
    assert cells == [
        "1,234",
        "313",
        "12.3",
        "1.53",
        "0.0432",
        "0",
        "4.50e-05",
        "7",
        "yes",
        "—",
        "2, 3",
        "a\\|b",
    ]


def test_a_bound_is_checked_against_its_figure_and_anything_else_left_blank():
    assert [
        render.met(1.5, "<= 2.0"),
        render.met(2.0, "< 2"),
        render.met(0.6, ">= 0.5"),
        render.met(3, ">2"),
    ] == ["yes", "no", "yes", "yes"]
    assert [render.met(1.5, "report"), render.met(None, "<= 2.0"), render.met("x", "<= 1")] == [
        "",
        "",
        "",
    ]


def test_check_fails_on_a_stale_page_and_passes_on_a_fresh_one(tmp_path, capsys):
    page = tmp_path / "benchmarks.md"
    flags = ["--results", str(FIXTURES), "--out", str(page)]
    assert render.main([*flags, "--check"]) == 1  # no page yet
    assert render.main(flags) == 0 and page.read_text() == render.render(FIXTURES)
    assert render.main([*flags, "--check"]) == 0
    page.write_text(page.read_text().replace("| 1.53 |", "| 1.54 |"))
    assert render.main([*flags, "--check"]) == 1
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 2 and all(
        "run python bench/render.py" in line for line in said
    )  # one line each


def test_the_committed_page_is_what_the_committed_results_give():
    assert (ROOT / "docs" / "benchmarks.md").read_text() == render.render(
        ROOT / "bench" / "results"
    )
    assert render.main(["--check"]) == 0


def test_each_committed_result_names_its_provenance_and_holds_its_goals_figures():
    files = sorted((ROOT / "bench" / "results").glob("*/*.json"))
    assert files, "no committed results"
    for path in files:
        result = json.loads(path.read_text())
        assert result["bench"] == path.parent.name and result["machine_kind"] == path.stem
        assert result["command"].startswith(f"python bench/{path.parent.name}.py")
        assert "--save" not in result["command"].split()
        datetime.date.fromisoformat(result["date"])
        assert len(result["commit"].removesuffix("+dirty")) == 40
        assert result["goals"] and all(
            render.lookup(result, g["metric"]) is not None for g in result["goals"]
        )


def test_a_saved_result_is_the_printed_object_with_its_provenance(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(record, "RESULTS", tmp_path)
    metrics = {"ratio": 1.5, "nested": {"x": 2}}
    goals = [("ratio", "a over b", "<= 2.0"), ("nested.x", "a nested figure", "report")]
    argv = [str(ROOT / "bench" / "fake.py"), "--model", "tiny", "--save"]
    monkeypatch.setattr("sys.argv", argv)
    assert record.emit(metrics, "fake", goals, True, "A fake bench.\n\nMore.") is metrics
    assert (
        json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == metrics
    )  # the last line printed
    path = tmp_path / "fake" / f"{record.machine_kind()}.json"
    saved = json.loads(path.read_text())
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert saved == {
        **metrics,
        "bench": "fake",
        "summary": "A fake bench.",
        "command": "python bench/fake.py --model tiny",
        "machine": record.machine(),
        "machine_kind": record.machine_kind(),
        "date": datetime.date.today().isoformat(),
        "commit": saved["commit"],
        "goals": [
            {"metric": "ratio", "what": "a over b", "goal": "<= 2.0"},
            {"metric": "nested.x", "what": "a nested figure", "goal": "report"},
        ],
    }
    assert saved["commit"] in (head, head + "+dirty")
    assert (
        record.emit(metrics, "other", goals, False) is metrics and not (tmp_path / "other").exists()
    )


def test_the_machine_kind_is_a_short_slug_of_the_cpu_its_matmul_feature_and_threads(monkeypatch):
    from agents.run import machine

    monkeypatch.setattr(
        machine, "_cpu", lambda: ("AMD EPYC 9B14 96-Core Processor", ["avx512_bf16", "avx2"])
    )
    monkeypatch.setattr(machine.torch, "get_num_threads", lambda: 2)
    assert machine.machine_kind() == "amd-epyc-9b14-96-core-processor-avx512-bf16-2t"
    monkeypatch.setattr(machine, "_cpu", lambda: ("Intel(R) Xeon(R) Platinum 8481C", []))
    assert machine.machine_kind() == "intel-r-xeon-r-platinum-8481c-generic-2t"


@pytest.mark.parametrize(
    "argv, shown",
    [
        (
            ["bench/iteration.py", "--save", "--model", "tiny"],
            "python bench/iteration.py --model tiny",
        ),
        (
            [str(ROOT / "bench" / "budget.py"), "--imdb", "a b.csv"],
            "python bench/budget.py --imdb 'a b.csv'",
        ),
    ],
)
def test_the_recorded_command_reproduces_the_run_from_the_checkout(argv, shown, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert record.command(argv) == shown


def test_a_bench_s_goals_are_read_from_its_table_of_metric_what_goal():
    table = "\n a | one over two | <= 2.0\n\nb.c | a nested figure | report\n"
    assert record.goals(table) == [
        ("a", "one over two", "<= 2.0"),
        ("b.c", "a nested figure", "report"),
    ]
    with pytest.raises(ValueError, match="metric \\| what \\| goal"):
        record.goals("a | no goal")
