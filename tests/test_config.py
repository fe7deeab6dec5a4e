"""The run configuration and its CLI: validation, presets, explicit flags over presets."""

from __future__ import annotations

import pytest

from agents.run.cli import parse
from agents.run.config import PRESETS, TrainConfig, preset_config


def test_defaults_are_the_cpu_run():
    cfg = parse("", [])
    assert (cfg.model, cfg.task, cfg.mode, cfg.device) == (
        "smollm2-135m-instruct",
        "sentiment",
        "lora",
        "cpu",
    )


def test_preset_supplies_defaults_and_explicit_flags_win():
    cfg = parse(
        "",
        [
            "--preset",
            "imdb-gpt2-large",
            "--batch-size",
            "8",
            "--mini-batch-size",
            "8",
            "--seed",
            "3",
        ],
    )
    assert cfg.model == "gpt2-large" and cfg.reward_model == "lvwerra/distilbert-imdb"
    assert cfg.init_kl_coef == 0.3 and cfg.learning_rate == 1.41e-5 and cfg.ppo_epochs == 4
    assert cfg.batch_size == 8 and cfg.seed == 3
    with pytest.raises(ValueError, match="mini_batch_size"):  # the preset's 256 > a batch of 8
        preset_config("imdb-gpt2-large", batch_size=8)
    gsm = parse("", ["--preset=gsm8k-llama2"])
    assert gsm.gradient_accumulation_steps == 16 and gsm.mini_batch_size == 2
    assert gsm.init_kl_coef == 0.01 and not gsm.adap_kl_ctrl


def test_flags_parse_with_dashes_and_negations():
    cfg = parse(
        "",
        [
            "--iterations",
            "3",
            "--no-role-exchange",
            "--no-knowledge-transfer",
            "--reward-mode",
            "independent",
            "--output-dir",
            "x",
            "--resume",
        ],
    )
    assert cfg.iterations == 3 and not cfg.role_exchange and not cfg.knowledge_transfer
    assert cfg.reward_mode == "independent" and cfg.output_dir == "x" and cfg.resume


@pytest.mark.parametrize(
    "field,value",
    [
        ("iterations", 0),
        ("batch_size", -1),
        ("learning_rate", 0.0),
        ("swap_period", 0),
        ("eval_every", -2),
    ],
)
def test_bad_values_are_rejected_with_the_field_name(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("gpt5")
    assert set(PRESETS) == {"imdb-gpt2-large", "gsm8k-llama2"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("kl_penalty", "bogus"), ("dual_clip", 0.5), ("kl_estimator", "k9"), ("cliprange_high", -1.0)],
)
def test_a_config_the_learners_config_would_refuse_is_refused_when_built(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_the_rules_do_not_import_the_config_they_guard():
    import ast
    import inspect

    from agents.run import learner_config, validate

    for module in (validate, learner_config):
        imported = {
            node.module
            for node in ast.walk(ast.parse(inspect.getsource(module)))
            if isinstance(node, ast.ImportFrom)
        }
        assert "agents.run.config" not in imported, module.__name__
