"""CORY with models of different tokenizers: each model samples, is scored and evaluated in
its own ids, role exchange moves each model with its tokenizer, LoRA and full modes train
every model, a resumed run equals the uninterrupted one, and ``--models A,B`` trains a
mixed pair from folders."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers.configs import small_config
from helpers.scripts import load_script
from helpers.tiny import other_tokenizer, tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.policy.tokenizers import per_model_tokenizers, tokenizer_differences
from agents.run import setup

TIMING = ("charts/rollout_s", "charts/iteration_s")


def pair() -> tuple[list, list]:
    """Two tiny models over two different vocabularies (320 and 290 tokens)."""
    a, b = tiny_tokenizer(), other_tokenizer()
    return [tiny_model(0, tokenizer=a), tiny_model(1, tokenizer=b)], [a, b]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def params(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.agent.trainable_parameters()]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_a_mixed_pair_trains_every_model_each_in_its_own_ids(tmp_path, mode):
    models, toks = pair()
    config = small_config(tmp_path, mode=mode, iterations=2, swap_period=1, eval_every=2)
    trainer = CoryTrainer(config, model=models, tokenizer=toks)
    a, b = (trainer.learners[m].agent for m in ("model_a", "model_b"))
    assert a.tokenizer is toks[0] and b.tokenizer is toks[1]
    before = {m: params(lr) for m, lr in trainer.learners.items()}
    rows = trainer.train()
    for m, lr in trainer.learners.items():
        assert any(
            not torch.equal(x, y) for x, y in zip(before[m], lr.agent.trainable_parameters())
        )
    assert {"eval/model_a/reward", "eval/model_b/reward"} <= rows[-1].keys()
    # iteration 0 seated a then b, iteration 1 (after the swap) b then a: both seatings built
    seatings = {tuple(len(t) for t in v.tokenizers.values()) for v in trainer.run._venvs.values()}
    assert seatings == {(320, 290), (290, 320)}
    evals = {len(v.tokenizer) for v in trainer.run._eval_venvs.values()}
    assert evals == {320, 290}  # each model evaluated alone in its own vocabulary


def test_after_a_swap_the_pioneer_seat_acts_in_the_other_vocabulary(tmp_path):
    models, toks = pair()
    config = small_config(tmp_path, iterations=2, swap_period=1, eval_every=0)
    trainer = CoryTrainer(config, model=models, tokenizer=toks)
    seen = []
    play = trainer.roll_out

    def spy(seated, *args, **kw):
        out = play(seated, *args, **kw)
        venv = trainer.run.venv_for([lr.agent.tokenizer for lr in seated])
        n = venv.single_action_spaces["pioneer_0"].n
        episodes, _ = out
        seen.append((n, episodes.queries[0], episodes.turns[0].prompts[0].tolist()))
        return out

    trainer.roll_out = spy
    trainer.train()
    assert [n for n, _, _ in seen] == [320, 290]  # model_a, then model_b in the pioneer seat
    for (_, query, prompt), tok in zip(seen, toks, strict=True):
        text = trainer.run.task.pioneer_prompt(query)
        assert prompt == tok(text, add_special_tokens=True)["input_ids"]  # in that model's ids


def test_a_resumed_mixed_run_equals_the_uninterrupted_one(tmp_path):
    config = small_config(tmp_path / "a", iterations=4, swap_period=1, checkpoint_every=1)
    models, toks = pair()
    full = CoryTrainer(config, model=models, tokenizer=toks).train()
    config_b = dataclasses.replace(config, output_dir=str(tmp_path / "b" / "run"))
    models, toks = pair()
    CoryTrainer(config_b, model=models, tokenizer=toks).train(stop_after=2)
    models, toks = pair()
    resumed = CoryTrainer(
        dataclasses.replace(config_b, resume=True), model=models, tokenizer=toks
    ).train()
    assert without_timing(resumed) == without_timing(full)


def test_matching_tokenizers_share_one_object_and_a_mixed_pair_keeps_both():
    t, copy_of_t, other = tiny_tokenizer(), tiny_tokenizer.__wrapped__(), other_tokenizer()
    assert copy_of_t is not t and not tokenizer_differences(t, copy_of_t)
    shared = per_model_tokenizers([("a", t), ("b", copy_of_t), ("c", other)])
    assert shared[0] is t and shared[1] is t and shared[2] is other
    assert tokenizer_differences(t, other)[0] == "vocabulary size 320 vs 290"


def test_a_tokenizer_that_cannot_end_a_turn_is_refused_before_any_weights_load(
    tmp_path, monkeypatch
):
    for name, tok in (("a", tiny_tokenizer()), ("b", other_tokenizer())):
        tiny_model(tokenizer=tok).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    monkeypatch.setattr(setup, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))

    class NoEnd:
        eos_token_id = pad_token_id = None

    real = setup.load_tokenizer
    monkeypatch.setattr(
        setup, "load_tokenizer", lambda n: NoEnd() if str(n).endswith("b") else real(n)
    )
    config = small_config(tmp_path, models=f"{tmp_path / 'a'},{tmp_path / 'b'}")
    with pytest.raises(ValueError, match=r"tokenizer of '.*b' has neither an EOS nor a pad"):
        CoryTrainer(config)


def test_run_cory_trains_a_mixed_pair_from_model_folders(tmp_path):
    for name, (model, tok) in zip("ab", zip(*pair(), strict=True), strict=True):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    script = load_script("scripts/run_cory.py")
    rows = script.main(
        [
            *("--models", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--task", "sentiment"),
            *("--iterations", "2", "--batch-size", "4", "--mini-batch-size", "2"),
            *("--max-new-tokens", "4", "--min-new-tokens", "2", "--swap-period", "1"),
            *("--eval-every", "2", "--eval-size", "4", "--lora-r", "4", "--lora-alpha", "8"),
            *("--output-dir", str(tmp_path / "run"), "--no-progress", "--dtype", "fp32"),
        ]
    )
    assert len([r for r in rows if "charts/reward" in r]) == 2
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    for name, size in (("model_a", 320), ("model_b", 290)):
        exported = tmp_path / "run" / "models" / name
        from transformers import AutoTokenizer

        assert len(AutoTokenizer.from_pretrained(exported)) == size  # its own tokenizer
