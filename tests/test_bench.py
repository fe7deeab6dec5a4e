"""bench/update.py on the tiny model: its phase split adds up and its counts are sane (the
bench prints measured ratios; no wall time is asserted)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.scripts import load_script


def test_the_update_bench_splits_an_iteration_into_its_phases():
    bench = load_script("bench/update.py")
    out = bench.main(
        bench.Args(model="tiny", iterations=1, batch_size=4, mini_batch_size=2, ppo_epochs=1)
    )
    assert "torch threads" in out["machine"]  # the figures name their machine
    for name in ("cory", "ppo"):
        assert out[f"{name}_trainer"] == name  # each child ran the trainer it was asked for
        # the peaks from a second, sampled run of the same iterations (checked: the same tokens)
        assert (
            out[f"{name}_peak_gib"] >= out[f"{name}_peak_optimisation_gib"] > 0
        )  # phase peaks kept
        parts = sum(
            out[f"{name}_{k}"] for k in ("rollout_s", "old_pass_s", "ref_pass_s", "optimisation_s")
        )
        assert parts == pytest.approx(out[f"{name}_iteration_s"], rel=1e-6)
        assert 0.0 <= out[f"{name}_padding_fraction"] < 1.0 and out[f"{name}_update_flops"] > 0
        assert out[f"{name}_old_pass_s"] > 0 and out[f"{name}_ref_pass_s"] > 0
        # the floor: the same rollout, the update's FLOPs at the run's matmul peak
        assert out[f"{name}_matmul_peak"] == out[f"{name}_matmul_peak_fp32"]  # an fp32 run
        at_peak = out[f"{name}_update_flops"] / out[f"{name}_matmul_peak_fp32"]
        assert out[f"{name}_update_at_peak_s"] == pytest.approx(at_peak, rel=1e-9)
        assert out[f"{name}_iteration_floor_s"] == pytest.approx(
            out[f"{name}_rollout_s"] + at_peak, rel=1e-9
        )
        assert out[f"{name}_iteration_floor_s"] < out[f"{name}_iteration_s"]
    assert (
        out["cory_update_flops"] > out["ppo_update_flops"]
    )  # two updates, the observer's longer prompts


def test_random_models_are_built_offline_from_a_shape(monkeypatch, tokenizer):
    from bench import models

    monkeypatch.setitem(
        models.SHAPES,
        "test-llama",
        (
            "llama",
            dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                intermediate_size=64,
            ),
        ),
    )
    a = models.random_model("test-llama", vocab_size=len(tokenizer))
    b = models.random_model("test-llama", vocab_size=len(tokenizer))
    assert a.config.vocab_size == len(tokenizer) and a.config.num_hidden_layers == 2
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    out = a(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert out.shape == (1, 3, len(tokenizer))
    with pytest.raises(SystemExit, match="unknown random model shape"):
        models.random_model("nope", 10)
    assert models.SHAPES["gpt2-large"][1]["n_layer"] == 36


@pytest.mark.slow
def test_the_goals_table_comes_from_one_run(tmp_path, capsys):
    import csv

    path = tmp_path / "reviews.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(40):
            w.writerow(
                [
                    f"This film number {i} was a story about people and it went on and on. " * 4,
                    "positive",
                ]
            )
    bench = load_script("bench/update.py")
    out = bench.main(
        bench.Args(model="tiny", imdb=str(path), iterations=1, goals=True, goals_bf16=True)
    )
    printed = capsys.readouterr().out
    assert printed.count("| ") >= 7 and "<= 0.35" in printed and "<= 2.5 GiB" in printed
    fp32 = out["goals_fp32"]
    floor = fp32["iteration_floor_s"] / bench.OFFICIAL_CORY_ITERATION_S
    assert f"s: {floor:.2f})" in printed  # the fp32 row shows its floor ratio
    for key in (
        "goals_fp32",
        "goals_bf16",
        "goals_lora",
        "goals_lora_budget_512",
        "goals_lora_observers_cut",
    ):
        assert out[key]["iteration_s"] > 0 and 0.0 <= out[key]["padding_fraction"] < 1.0
        assert out[key]["peak_gib"] > 0 and out[key]["trainer"] == "cory"
    assert (
        out["goals_cory_lora_peak"]["peak_bytes"] > 0
        and out["goals_ppo_lora_peak"]["peak_bytes"] > 0
    )
    assert out["goals_cory_lora_observers_cut_peak"]["peak_bytes"] > 0
    assert (
        out["goals_lora_observers_cut"]["observer_token_budget"]
        and not out["goals_lora"]["observer_token_budget"]
    )


@pytest.mark.slow
def test_the_processes_bench_records_the_world_and_each_processs_peak(tmp_path):
    """One process against two (``accelerate launch --multi_gpu`` on gloo), on a tiny model
    folder: the world size is what ``config.json`` recorded, one peak per process."""
    from helpers.tiny import tiny_model, tiny_tokenizer

    folder = tmp_path / "tiny"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    bench = load_script("bench/processes.py")
    small = [
        "--model",
        str(folder),
        "--batch-size",
        "4",
        "--mini-batch-size",
        "2",
        "--ppo-epochs",
        "1",
        "--max-new-tokens",
        "3",
        "--eval-every",
        "0",
    ]
    out = bench.main(bench.Args(cases=["lora", "lora_ddp"], iterations=1, extra=small))
    assert out["lora"]["num_processes"] == 1 and len(out["lora"]["peak_gib"]) == 1
    assert out["lora_ddp"]["num_processes"] == 2 and len(out["lora_ddp"]["peak_gib"]) == 2
    for case in ("lora", "lora_ddp"):
        assert len(out[case]["iteration_s"]) == 1 and all(g > 0 for g in out[case]["peak_gib"])
        assert all(
            0 < b <= g for b, g in zip(out[case]["built_gib"], out[case]["peak_gib"], strict=True)
        )
    assert out["lora_ddp/lora_wall"] > 0
    with pytest.raises(SystemExit, match="unknown case"):
        bench.main(bench.Args(cases=["nope"]))


def test_the_budget_bench_times_the_observers_update_whole_and_cut_from_the_same_state():
    bench = load_script("bench/budget.py")
    out = bench.main(bench.Args(model="tiny", rounds=1, sizes=(2, 4)))
    assert "torch threads" in out["machine"]
    assert (
        out["budget_tokens"] == out["mini_batch_size"] * out["pioneer_longest"]
    )  # the pioneer's tokens
    assert (
        out["observer_padded_tokens_per_mini_batch"] > out["budget_tokens"]
    )  # the observer's are more...
    assert all(p > 1 for p in out["pieces_per_mini_batch"])  # ...so its mini-batches are cut
    assert (
        set(out["update_s"]) == {"whole", "cut", "cut_unfused"}
        and min(out["update_s"].values()) > 0
    )
    assert out["over_whole"]["whole"] == 1.0
    for fit in (out["piece_fit"], out["piece_fit_peft"]):  # LoRA fused, and peft's layers
        assert len(fit["tokens"]) == 2 and fit["tokens"][0] < fit["tokens"][1]
        assert min(fit["seconds"]) > 0
    assert out["piece_fit"]["tokens"] == out["piece_fit_peft"]["tokens"]


def test_the_op_overhead_bench_charges_each_call_to_the_module_that_made_it():
    bench = load_script("bench/op_overhead.py")
    runs = {
        fast: bench.main(bench.Args(model="tiny", repeats=1, decode_steps=3, fast_lora=fast))
        for fast in (False, True)
    }
    # the tiny Llama: 2 layers of 7 LoRA'd linears, and the output head (no adapter); merged
    # and fused, the LoRA layers compute their base's product themselves
    lora_layers = 2 * 7
    peft, fast = runs[False]["decode"]["by_kind"], runs[True]["decode"]["by_kind"]
    # peft's layers: one call per base linear per step, which the merged layers do not make
    assert peft["linear"]["calls_forward"] - fast["linear"]["calls_forward"] == lora_layers
    for kinds, per_layer in ((peft, 2), (fast, 1)):  # lora_A and lora_B; the merged linear
        assert kinds["lora"]["calls_forward"] % lora_layers == 0  # the same per layer
        assert kinds["lora"]["calls_forward"] >= per_layer * lora_layers
    for out in runs.values():
        assert 0 <= out["decode"]["sampler_python_share"] < 1
        for step in ("mini_batch", "group"):
            m = out[step]
            kinds = m["by_kind"]
            assert sum(k["calls_forward"] for k in kinds.values()) == m["calls_forward"]
            assert sum(k["calls_backward"] for k in kinds.values()) == m["calls_backward"]
            assert kinds["lora"]["calls_backward"] > 0  # the adapters' gradients, charged to them
            assert kinds["embedding"]["calls_backward"] == 0  # the frozen input embeddings
            assert sum(k["share"] for k in kinds.values()) == pytest.approx(1, abs=1e-3)
            assert 0 < m["matmul_share"] < 1 and m["us_per_call"] > 0
        assert out["group"]["rows"] > out["mini_batch"]["rows"]


def test_the_mixed_pair_bench_times_both_pairs_in_turn():
    bench = load_script("bench/mixed_pair.py")
    out = bench.main(bench.Args(iterations=2, batch_size=4, new_tokens=3))
    assert out["shared_iteration_s"] > 0 and out["mixed_iteration_s"] > 0
    assert out["mixed_over_shared"] == pytest.approx(
        out["mixed_iteration_s"] / out["shared_iteration_s"]
    )


def test_the_goals_run_bf16_only_where_the_cpu_computes_it_unless_told(monkeypatch):
    from agents.policy import loading

    bench = load_script("bench/update.py")
    for native in (True, False):
        monkeypatch.setattr(
            loading, "cpu_computes_natively", lambda dtype, native=native: native or dtype == "fp32"
        )
        assert bench.runs_bf16(bench.Args()) is native
        assert bench.runs_bf16(bench.Args(goals_bf16=True)) and not bench.runs_bf16(
            bench.Args(goals_bf16=False)
        )


def test_the_budget_bench_saves_its_printed_object_with_its_provenance(
    tmp_path, monkeypatch, capsys
):
    bench = load_script("bench/budget.py")  # puts the checkout first on sys.path
    from bench import record

    monkeypatch.setattr(record, "RESULTS", tmp_path)
    out = bench.main(bench.Args(model="tiny", rounds=1, sizes=(2, 4), save=True))
    saved = json.loads((tmp_path / "budget" / f"{record.machine_kind()}.json").read_text())
    assert (
        json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    )  # the last line printed
    assert {k: saved[k] for k in out} == json.loads(json.dumps(out))
    assert {"command", "machine", "machine_kind", "date", "commit", "goals", "summary"} <= set(
        saved
    )
    assert saved["bench"] == "budget" and [g["metric"] for g in saved["goals"]] == [
        m for m, _, _ in bench.GOALS
    ]


def test_the_default_run_bench_splits_the_wall_time_by_the_run_s_metrics():
    bench = load_script("bench/default_run.py")
    rows = [
        {
            "iteration": 0,
            "eval/model_a/reward": 0.1,
            "eval/model_a/kl": 0.0,
            "eval/model_b/reward": 0.2,
            "eval/model_b/kl": 0.0,
            "charts/iteration_s": 3.0,
            "charts/rollout_s": 1.0,
        },
        {"iteration": 1, "charts/iteration_s": 5.0, "charts/rollout_s": 2.0},
        {
            "iteration": 2,
            "eval/model_a/reward": 0.3,
            "eval/model_a/kl": 0.05,
            "eval/model_b/reward": 0.4,
            "eval/model_b/kl": 0.07,
        },
    ]
    assert bench.figures(rows, wall_s=20.0) == {
        "wall_s": 20.0,
        "wall_min": 20.0 / 60,
        "iterations": 2,
        "training_s": 8.0,
        "rollout_s": 3.0,
        "update_s": 5.0,
        "other_s": 12.0,
        "mean_iteration_s": 4.0,
    }
    assert bench.evaluations(rows) == {
        "eval_first": {
            "model_a": {"reward": 0.1, "kl": 0.0},
            "model_b": {"reward": 0.2, "kl": 0.0},
        },
        "eval_last": {
            "model_a": {"reward": 0.3, "kl": 0.05},
            "model_b": {"reward": 0.4, "kl": 0.07},
        },
    }
    assert bench.evaluations(rows[1:2]) == {}
    for metric, _, _ in bench.GOALS:  # every figure the page shows is one the bench reports
        value = {**bench.figures(rows, 20.0), **bench.evaluations(rows)}
        for key in metric.split("."):
            value = value[key]
        assert isinstance(value, (int, float))


def test_the_merged_tokens_bench_compares_each_sequence_up_to_its_first_difference():
    bench = load_script("bench/merged_tokens.py")
    a = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])  # (steps, B)
    b = torch.tensor([[1, 0, 3], [4, 5, 0], [0, 8, 9]])
    # column 0 differs at step 2 (3 compared), column 1 at 0 (1), column 2 at 1 (2)
    assert bench.first_differences(a, b) == (6, 3)
    assert bench.first_differences(a, a) == (9, 0)
    out = bench.main(bench.Args(models=("tiny",), prompts=4, new_tokens=5, seeds=2))["tiny"]
    assert out["sequences"] == 8
    assert out["tokens_compared"] <= 8 * 5 and out["sequences_that_differ"] <= 8
    assert out["differ_per_1k_tokens"] == pytest.approx(
        1000 * out["sequences_that_differ"] / out["tokens_compared"]
    )
    assert 0 <= out["max_logit_gap"] < 1e-4  # the same logits to float rounding


def test_the_dtype_bench_times_both_dtypes_in_one_run_and_refuses_emulated_bf16(monkeypatch):
    from agents.policy import loading

    bench = load_script("bench/dtype.py")
    args = bench.Args(model="tiny", iterations=1, batch_size=4, new_tokens=3)
    if loading.cpu_computes_natively("bf16"):
        out = bench.main(args)
        assert out["bf16_over_fp32_iteration"] == pytest.approx(
            out["bf16_iteration_s"] / out["fp32_iteration_s"]
        )
        assert out["peak_mem_bf16_over_fp32"] == pytest.approx(
            out["peak_mb_bf16"] / out["peak_mb_fp32"], rel=1e-3
        )
    monkeypatch.setattr(loading, "cpu_computes_natively", lambda dtype: dtype == "fp32")
    with pytest.raises(SystemExit, match="emulates bf16"):
        bench.main(args)
