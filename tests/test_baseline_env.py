"""The single-agent trainer plays the env's one-agent chain: the env pays the pioneer its
task score ``r(q, a1)``, the rollout draws the same random numbers as the pioneer's turn of
a two-seat env (so the baseline's trajectory is the one it had there), every episode runs
to its end, and evaluation plays a one-agent env too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.configs import small_config
from helpers.tasks import BANG, EOS, FILM, THE, film_reward, make_test_task
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.policy.agent import LLMAgent
from agents.run.episode_batch import play_chain
from agents.run.evaluate import evaluate_alone
from agents.run.rollout import rollout_alone
from baselines.ppo import SingleAgentTrainer
from cory_env import GenerationConfig
from cory_env.vector import CoryTextVecEnv

QUERIES = ["This movie was", "I loved this film", "The plot was"]


def text_length(queries, responses):
    """A dense toy reward: the answer's length in characters."""
    return np.array([len(r) for r in responses], np.float32)


@pytest.mark.parametrize("mode", ["cooperative", "independent"])
def test_a_one_agent_chain_pays_the_pioneer_its_task_score(mode):
    venv = CoryTextVecEnv(
        num_envs=3,
        task=make_test_task(),
        tokenizer=tiny_tokenizer(),
        num_agents=1,
        reward_mode=mode,
    )
    assert venv.possible_agents == ["pioneer_0"]
    venv.reset(options={"queries": QUERIES})
    # episode 0: " film film!"; 1: " the!"; 2: " the" (then EOS where the others still write)
    for tokens in ([FILM, THE, THE], [FILM, BANG, EOS], [BANG, EOS, 0], [EOS, 0, 0]):
        assert venv.agent_selection == "pioneer_0"
        venv.step(np.array(tokens))
    assert venv.agent_selection is None  # the episode ends with the pioneer's answer
    texts = venv.texts("pioneer_0")
    assert texts == [" film film!", " the!", " the"]
    expected = np.array([2.25, 0.25, 0.0], np.float32)  # 1 per "film", 0.25 per "!"
    np.testing.assert_array_equal(venv.rewards["pioneer_0"], expected)
    np.testing.assert_array_equal(venv.infos["pioneer_reward"], expected)
    np.testing.assert_array_equal(make_test_task().score(QUERIES, texts), expected)


def test_the_one_agent_rollout_draws_the_pioneer_turns_random_numbers():
    """One seat of a one-agent env, to the episode's end, against the pioneer's turn of a
    two-seat env: the same answers, the task's scores as the env's reward, the same
    generator state afterwards (so every later draw of a run is the same too)."""
    tok, task = tiny_tokenizer(), make_test_task(text_length)
    agent = LLMAgent.full_copy(tiny_model(), tok)
    generation = GenerationConfig(max_new_tokens=6, max_prompt_tokens=24)
    queries = [q for q in QUERIES for _ in range(2)]
    two = CoryTextVecEnv(num_envs=6, task=task, tokenizer=tok, max_new_tokens=6)
    one = CoryTextVecEnv(num_envs=6, task=task, tokenizer=tok, max_new_tokens=6, num_agents=1)
    g_two, g_one = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    alone = rollout_alone(two, agent, queries, generation, 4, g_two, task=task)
    batch = play_chain(one, [agent], queries, [generation], 4, g_one)
    (turns,) = batch.turns
    assert two.agent_selection == "observer_0" and one.agent_selection is None
    assert [r.tolist() for r in turns.responses] == [r.tolist() for r in alone.responses]
    assert [p.tolist() for p in turns.prompts] == [p.tolist() for p in alone.prompts]
    assert turns.texts == alone.texts
    np.testing.assert_array_equal(turns.scores, alone.scores)
    np.testing.assert_array_equal(turns.rewards, text_length(queries, turns.texts))
    assert len(set(turns.rewards.tolist())) > 1  # answers of different lengths
    assert torch.equal(g_one.get_state(), g_two.get_state())
    lengths = np.array([len(r) for r in turns.responses])
    ended_by_eos = np.array([r[-1] == EOS for r in turns.responses])
    np.testing.assert_array_equal(batch.truncated[0], (lengths == 4) & ~ended_by_eos)
    assert 0 < batch.truncated[0].sum() < len(queries)


def test_the_baseline_plays_every_episode_to_its_end(tmp_path):
    cfg = small_config(
        tmp_path, iterations=2, batch_size=3, mini_batch_size=3, eval_every=1, eval_size=1
    )
    trainer = SingleAgentTrainer(
        cfg, model=tiny_model(), tokenizer=tiny_tokenizer(), task=make_test_task()
    )
    run = trainer.run
    assert run.venv.possible_agents == ["pioneer_0"] and run.eval_venv.possible_agents == [
        "pioneer_0"
    ]
    metrics = trainer.step(0)
    assert run.venv.agent_selection is None  # nothing rolled out and abandoned
    texts = [s["pioneer"] for s in trainer.samples]
    scores = film_reward(None, texts)
    assert [s["pioneer_score"] for s in trainer.samples] == scores.tolist()
    assert metrics["charts/reward"] == pytest.approx(float(scores.mean()))
    assert metrics["policy/score"] == metrics["charts/reward"]
    stats, turns = evaluate_alone(
        trainer.learner.agent,
        run.eval_venv,
        run.eval_queries,
        run.generation,
        run.generation.max_new_tokens,
        seed=0,
        pad_id=run.pad_id,
    )
    assert run.eval_venv.agent_selection is None
    assert stats["reward"] == pytest.approx(float(film_reward(None, turns.texts).mean()))
