"""The grouped CLI and its config files: every field in one flag group, ``--help`` drawn in
those groups, ``--config FILE`` (YAML or JSON) under the flags, the presets as YAML files, and a
run's saved ``config.json`` read back as the same config."""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace

import pytest

from agents.run.cli import parse
from agents.run.config import FLAG_GROUPS, PRESET_DIR, PRESETS, TrainConfig, to_dict
from agents.run.run_log import RunLog


def usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse("", argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def save_as_the_run_does(config: TrainConfig, folder) -> str:
    log = RunLog(folder, tensorboard=False)
    log.write_config({**to_dict(config), "num_processes": 1})
    log.close()
    return str(folder / "config.json")


def test_every_field_is_in_exactly_one_flag_group():
    grouped = [name for names in FLAG_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(f.name for f in fields(TrainConfig))
    assert len(grouped) == len(set(grouped))
    assert list(FLAG_GROUPS)[:5] == ["model", "task and reward", "generation", "learner", "GRPO"]


def test_help_shows_every_flag_in_its_group_in_order(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse("", ["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    heads = [
        re.search(rf"(?m)^\W*{re.escape(title)} options\W*$", text).start() for title in FLAG_GROUPS
    ]
    assert heads == sorted(heads)
    ends = [*heads[1:], len(text)]
    for (title, names), start, end in zip(FLAG_GROUPS.items(), heads, ends, strict=True):
        section = text[start:end]
        for name in names:
            assert re.search(rf"--{name.replace('_', '-')}\b", section), (title, name)
    assert "--config" in text[heads[list(FLAG_GROUPS).index("run and logging")] :]
    assert "--rloo-k INT, --group-size INT" in text


def test_a_preset_is_shown_as_the_defaults(capsys):
    with pytest.raises(SystemExit):
        parse("", ["--preset", "imdb-gpt2-large", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: gpt2-large)" in text and "(default: 1.41e-05)" in text


def test_the_presets_are_the_papers_settings_from_yaml_files():
    assert sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) == sorted(PRESETS)
    assert PRESETS["imdb-gpt2-large"] == dict(
        model="gpt2-large",
        task="imdb",
        reward="hf-classifier",
        reward_model="lvwerra/distilbert-imdb",
        iterations=100,
        batch_size=256,
        mini_batch_size=256,
        ppo_epochs=4,
        learning_rate=1.41e-5,
        init_kl_coef=0.3,
        adap_kl_ctrl=True,
        gamma=1.0,
        lam=0.95,
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        min_new_tokens=4,
        max_new_tokens=16,
        swap_period=5,
        mode="full",
        device="cuda",
        dtype="bf16",
        eval_every=5,
        eval_size=256,
    )
    assert PRESETS["gsm8k-llama2"] == dict(
        model="meta-llama/Llama-2-7b-chat-hf",
        task="gsm8k",
        iterations=100,
        batch_size=32,
        mini_batch_size=2,
        gradient_accumulation_steps=16,
        ppo_epochs=4,
        learning_rate=1e-4,
        init_kl_coef=0.01,
        adap_kl_ctrl=False,
        gamma=1.0,
        lam=0.95,
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        max_new_tokens=256,
        swap_period=5,
        mode="lora",
        load_in_4bit=True,
        device="cuda",
        dtype="bf16",
        eval_every=5,
        eval_size=128,
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--preset", "imdb-gpt2-large", "--batch-size", "8", "--mini-batch-size", "8"],
        [
            "--learner",
            "grpo",
            "--group-size",
            "3",
            "--num-agents",
            "3",
            "--seat-temperature",
            "0.5",
            "1",
            "0.7",
            "--seat-max-new-tokens",
            "4",
            "8",
            "8",
            "--log-with",
            "tensorboard",
            "wandb",
            "--learning-rate",
            "3e-4",
            "--target-kl",
            "0.1",
            "--task-options",
            "max_steps=1",
            "--whiten-rewards",
            "--output-dir",
            "somewhere",
        ],
    ],
)
def test_a_runs_saved_config_is_a_config_file_of_the_same_config(tmp_path, argv):
    config = parse("", argv)
    path = save_as_the_run_does(config, tmp_path / "run")
    assert parse("", ["--config", path]) == config


def test_flags_override_the_file_and_the_file_the_preset(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(
        "preset: imdb-gpt2-large\niterations: 3\nlearning_rate: 3e-4  # text to YAML\n"
        "batch_size: 8\nmini_batch_size: 8\nlog_with: [tensorboard, wandb]\n"
    )
    cfg = parse("", ["--config", str(path), "--iterations", "5"])
    assert cfg == replace(
        TrainConfig(**PRESETS["imdb-gpt2-large"], preset="imdb-gpt2-large"),
        iterations=5,
        learning_rate=3e-4,
        batch_size=8,
        mini_batch_size=8,
        log_with=("tensorboard", "wandb"),
    )
    other = parse("", ["--config", str(path), "--preset", "none"])
    assert (
        other.model == "smollm2-135m-instruct" and other.iterations == 3 and other.preset == "none"
    )


def test_a_json_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"iterations": 2, "gamma": 1, "seat_top_k": None}))
    assert parse("", ["--config", str(path)]) == TrainConfig(iterations=2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("iterations: 2\nbogus: 1\n", "unknown key 'bogus'"),
        ("iterations: ten\n", "iterations must be an integer, got 'ten'"),
        ("iterations: 0\n", "iterations must be an integer >= 1, got 0"),
        ("mode: half\n", "mode must be one of 'lora', 'full', got 'half'"),
        ("progress: 1\n", "progress must be true or false, got 1"),
        (
            "log_with: [tensorboard, mlflow]\n",
            "log_with must be a list of (one of 'tensorboard', 'wandb')",
        ),
        ("- iterations\n", "a settings file holds one mapping of setting: value, got list"),
        ("iterations: [\n", "not valid YAML (line"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = usage_error(capsys, ["--config", str(path)])
    assert line.startswith(f"usage error: {path}: ") and message in line


def test_a_missing_config_file_and_an_unknown_preset_in_one(tmp_path, capsys):
    assert "cannot read the settings file" in usage_error(
        capsys, ["--config", str(tmp_path / "no.yaml")]
    )
    path = tmp_path / "p.yaml"
    path.write_text("preset: gpt5\n")
    assert f"{path}: unknown preset 'gpt5'" in usage_error(capsys, ["--config", str(path)])


def test_resume_takes_the_saved_config_as_the_defaults(tmp_path):
    saved = TrainConfig(iterations=4, seed=9, learning_rate=0.01, output_dir=str(tmp_path / "run"))
    save_as_the_run_does(saved, tmp_path / "run")
    parsed = parse("", ["--resume", "--output-dir", saved.output_dir, "--learning-rate", "0.002"])
    assert parsed == replace(saved, resume=True, learning_rate=0.002)
