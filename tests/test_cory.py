"""CORY and PPO trainers end to end on the tiny model: learning, swaps, files, resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers.configs import small_config
from helpers.scripts import load_script
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.run.checkpoint import load_checkpoint
from baselines.ppo import SingleAgentTrainer

TIMING = ("charts/rollout_s", "charts/iteration_s")


def trainable(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.agent.trainable_parameters()]


def changed(before, learner) -> bool:
    return any(
        not torch.equal(a, b.detach()) for a, b in zip(before, learner.agent.trainable_parameters())
    )


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_cory_trains_both_models_swaps_and_writes_the_run(tmp_path, mode):
    config = small_config(tmp_path, mode=mode)
    trainer = CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer())
    before = {m: trainable(lr) for m, lr in trainer.learners.items()}
    a, b = trainer.learners["model_a"], trainer.learners["model_b"]
    rows = trainer.train()

    for m, learner in trainer.learners.items():
        assert changed(before[m], learner), f"{m} did not change"
    # swap_period=2: roles exchange after iteration 1, so model_b is pioneer at iteration 2
    assert [r["model_a/role"] for r in rows[:3]] == [0.0, 0.0, 1.0]
    assert trainer.roles.num_swaps == 1
    assert trainer.roles[("pioneer_0")] is b and trainer.roles["observer_0"] is a
    # the optimiser state survived the swap: Adam has taken a step on every iteration
    for learner in (a, b):
        steps = [s["step"] for s in learner.optimizer.state_dict()["state"].values()]
        assert steps and all(float(s) >= 3 for s in steps)

    out = tmp_path / "run"
    for name in (
        "config.json",
        "metrics.csv",
        "metrics.jsonl",
        "samples.jsonl",
        "checkpoints/iter_000003/state.json",
        "checkpoints/iter_000003/tensors.safetensors",
        "plots/reward.png",
        "plots/kl.png",
        "plots/reward_vs_kl.png",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    assert json.loads((out / "config.json").read_text())["mode"] == mode
    # cooperative reward: both roles received r(q,a1) + r(q,a2)
    assert rows[0]["charts/reward"] == pytest.approx(
        rows[0]["pioneer/score"] + rows[0]["observer/score"], abs=1e-5
    )
    assert "eval/model_a/reward" in rows[0] and "eval/model_b/distinct2" in rows[-1]
    assert rows[-1]["iteration"] == 3  # the final evaluation row


def test_cory_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = CoryTrainer(small_config(tmp_path / "a"), model=tiny_model(), tokenizer=tiny_tokenizer())
    rows_full = full.train()

    cfg = small_config(tmp_path / "b")
    CoryTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train(stop_after=2)
    resumed = CoryTrainer(
        dataclasses.replace(cfg, resume=True), model=tiny_model(), tokenizer=tiny_tokenizer()
    )
    rows_resumed = resumed.train()

    assert without_timing(rows_resumed) == without_timing(rows_full)
    for m in full.learners:
        for p, q in zip(
            full.learners[m].agent.trainable_parameters(),
            resumed.learners[m].agent.trainable_parameters(),
        ):
            assert torch.equal(p, q)


def test_output_dir_of_an_existing_run_is_not_overwritten(tmp_path):
    cfg = small_config(tmp_path, iterations=1, eval_every=0)
    CoryTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    with pytest.raises(FileExistsError, match="--resume"):
        CoryTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()


def test_ppo_baseline_trains_and_resumes(tmp_path):
    cfg = small_config(tmp_path / "a")
    full = SingleAgentTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    before = trainable(full.learner)
    rows_full = full.train()
    assert changed(before, full.learner)
    assert (tmp_path / "a" / "run" / "plots" / "reward.png").is_file()
    assert rows_full[0]["charts/reward"] == pytest.approx(rows_full[0]["policy/score"])

    cfg_b = small_config(tmp_path / "b")
    SingleAgentTrainer(cfg_b, model=tiny_model(), tokenizer=tiny_tokenizer()).train(stop_after=1)
    resumed = SingleAgentTrainer(
        dataclasses.replace(cfg_b, resume=True), model=tiny_model(), tokenizer=tiny_tokenizer()
    )
    assert without_timing(resumed.train()) == without_timing(rows_full)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_activation_checkpointing_keeps_the_training_numbers(tmp_path, mode):
    def run(checkpointing: bool):
        cfg = small_config(
            tmp_path / str(checkpointing),
            mode=mode,
            iterations=2,
            eval_every=0,
            activation_checkpointing=checkpointing,
        )
        trainer = CoryTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
        rows = trainer.train()
        return trainer, rows

    plain, rows_plain = run(False)
    ckpt, rows_ckpt = run(True)
    layers = [
        m
        for m in ckpt.learners["model_a"].agent.model.modules()
        if hasattr(m, "gradient_checkpointing")
    ]
    assert layers and all(m.gradient_checkpointing for m in layers)
    assert not any(
        getattr(m, "gradient_checkpointing", False)
        for m in plain.learners["model_a"].agent.model.modules()
    )
    # the recomputed activations are the same numbers: same losses, same weights
    for key in ("charts/reward", "pioneer/ppo/loss/total", "observer/ppo/loss/total", "charts/kl"):
        assert [r[key] for r in rows_ckpt] == pytest.approx(
            [r[key] for r in rows_plain], rel=1e-4, abs=1e-6
        )
    for m in ("model_a", "model_b"):
        for a, b in zip(
            plain.learners[m].agent.trainable_parameters(),
            ckpt.learners[m].agent.trainable_parameters(),
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_compare_script_plots_cory_next_to_ppo(tmp_path, capsys):
    compare = load_script("scripts/compare.py")
    cory_dir, ppo_dir = tmp_path / "cory", tmp_path / "ppo"
    CoryTrainer(
        small_config(cory_dir, iterations=2), model=tiny_model(), tokenizer=tiny_tokenizer()
    ).train()
    SingleAgentTrainer(
        small_config(ppo_dir, iterations=2), model=tiny_model(), tokenizer=tiny_tokenizer()
    ).train()
    out = tmp_path / "compare"
    compare.cli(
        [str(cory_dir / "run"), str(ppo_dir / "run"), "--out", str(out)]
    )  # the README's command
    for name in ("reward.png", "kl.png", "reward_vs_kl.png"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    # both folders are called "run": the labels fall back to the paths, no run hides the other
    for model in ("model_a", "model_b"):
        assert f"{cory_dir / 'run'}/{model}: eval reward" in printed
    assert f"{ppo_dir / 'run'}/policy: eval reward" in printed
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        compare.cli([str(tmp_path / "nowhere")])


@pytest.mark.parametrize(
    "ablation",
    [dict(role_exchange=False), dict(knowledge_transfer=False), dict(reward_mode="independent")],
)
def test_ablation_switches(tmp_path, ablation):
    cfg = small_config(tmp_path, iterations=2, swap_period=1, eval_every=0, **ablation)
    trainer = CoryTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    rows = trainer.train()
    if "role_exchange" in ablation:
        assert trainer.roles.num_swaps == 0
    else:
        assert trainer.roles.num_swaps == 2
    if ablation.get("reward_mode") == "independent":
        assert rows[0]["charts/reward"] == pytest.approx(rows[0]["pioneer/score"], abs=1e-5)
    if "knowledge_transfer" in ablation:
        # the observer's prompt is the query alone: it never contains the pioneer's answer
        sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
        assert trainer.run.task.observer_prompt(sample["query"], "XYZ") == sample["query"]


@pytest.mark.slow
def test_run_cory_script_trains_the_real_default_model_for_one_iteration(tmp_path):
    run_cory = load_script("scripts/run_cory.py")
    out = tmp_path / "real"
    rows = run_cory.main(
        [
            "--iterations",
            "1",
            "--batch-size",
            "4",
            "--mini-batch-size",
            "4",
            "--eval-every",
            "1",
            "--eval-size",
            "4",
            "--output-dir",
            str(out),
            "--no-progress",
        ]
    )
    assert rows[0]["iteration"] == 0 and rows[-1]["iteration"] == 1
    assert rows[0]["model_a/kl"] == pytest.approx(
        0.0, abs=1e-3
    )  # first update: policy == reference
    iteration, state = load_checkpoint(out / "checkpoints" / "iter_000001")
    assert iteration == 1
    lora_b = state["trainer"]["learners"]["model_b"]["agent"]
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in _flatten(lora_b).items())
    assert (out / "plots" / "reward_vs_kl.png").is_file()


def _flatten(state, prefix=""):
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


def vowel_share(queries, responses):
    """A dense toy reward: the share of vowels in the answer (hand-checkable, in [0, 1])."""
    import numpy as np

    return np.array(
        [sum(c in "aeiou" for c in r) / max(len(r), 1) for r in responses], dtype=np.float32
    )


@pytest.mark.parametrize("trainer_cls", [SingleAgentTrainer, CoryTrainer])
def test_training_raises_a_dense_reward(tmp_path, trainer_cls):
    """End to end (env, rollout, KL-penalised PPO, role exchange): the reward climbs."""
    from cory_env.tasks import make_task

    task = make_task("sentiment").with_reward(vowel_share)
    cfg = small_config(
        tmp_path,
        iterations=14,
        batch_size=16,
        mini_batch_size=8,
        ppo_epochs=4,
        learning_rate=3e-2,
        init_kl_coef=0.0,
        max_new_tokens=6,
        min_new_tokens=6,
        eval_every=0,
        mode="full",
        swap_period=3,
    )
    rows = trainer_cls(cfg, model=tiny_model(), tokenizer=tiny_tokenizer(), task=task).train()
    models = trainer_cls.models
    first = sum(rows[0][f"{m}/score"] for m in models) / len(models)
    last = sum(r[f"{m}/score"] for r in rows[-3:] for m in models) / (3 * len(models))
    assert first < 0.2 and last > first + 0.3, (first, last)


def test_skipped_minibatches_are_a_metric_and_one_line_per_iteration(tmp_path, capsys):
    import warnings

    cfg = small_config(tmp_path, iterations=2, eval_every=0, ratio_threshold=0.5)  # ratio ~1 > 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no Python warning per skipped mini-batch
        rows = CoryTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    for row in rows:
        assert row["pioneer/ppo/skipped_minibatches"] == 4  # 2 epochs x 2 mini-batches, all skipped
        assert row["observer/ppo/skipped_minibatches"] == 4
    lines = [x for x in capsys.readouterr().out.splitlines() if "skipped mini-batches" in x]
    assert (
        len(lines) == 2
        and lines[0].startswith("iteration 0:")
        and lines[1].startswith("iteration 1:")
    )
    assert "pioneer/ppo/skipped_minibatches 4" in lines[0]


def test_collapse_diagnostics_by_hand_and_in_every_run(tmp_path):
    from agents.run.evaluate import collapse_stats

    stats = collapse_stats(["a good film", "a good film", "a bad one", " a good film "])
    assert stats["repeat_fraction"] == 0.75  # three answers repeat another one
    assert stats["distinct1"] == pytest.approx(5 / 12)  # a good film bad one / 12 words
    assert stats["distinct2"] == pytest.approx(4 / 8)  # a-good good-film a-bad bad-one / 8
    rows = CoryTrainer(
        small_config(tmp_path, iterations=1, eval_every=0),
        model=tiny_model(),
        tokenizer=tiny_tokenizer(),
    ).train()
    for seat in ("pioneer", "observer"):
        assert 0.0 <= rows[0][f"{seat}/repeat_fraction"] <= 1.0 and f"{seat}/distinct2" in rows[0]
