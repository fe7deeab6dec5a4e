"""stable-baselines3 PPO with the LM policy on the pioneer view (tiny model, a few steps)."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from helpers.tiny import tiny_model, tiny_tokenizer  # noqa: E402

from baselines.sb3_ppo import (  # noqa: E402
    LMActorCriticPolicy,
    evaluate_sb3_ppo,
    make_sb3_ppo,
    save_sb3_ppo,
    train_sb3_ppo,
)

SMALL = dict(
    task="sentiment",
    max_new_tokens=4,
    n_steps=8,
    batch_size=8,
    n_envs=2,
    n_epochs=1,
    learning_rate=1e-2,
)


def text_length(queries, responses):
    """A dense reward (the answer's length in characters / 10): the tiny model's random
    answers score 0 under `sentiment`'s VADER reward, and with the zero-initialised value
    head zero rewards give zero advantages, so nothing would train."""
    return np.array([len(r) / 10 for r in responses], np.float32)


DENSE = dict(SMALL, reward_fn=text_length)


def advanced_obs(algo, steps: int = 3) -> dict[str, np.ndarray]:
    """A batch of observations holding prompts of different lengths plus produced tokens."""
    venv = algo.get_env()
    venv.seed(3)
    obs = venv.reset()
    for _ in range(steps):
        obs, *_ = venv.step(np.array([5, 7]))
    return obs


def test_distribution_is_softmax_of_lm_logits_at_last_real_token():
    model, tok = tiny_model(), tiny_tokenizer()
    algo = make_sb3_ppo(model, tok, **SMALL)
    policy = algo.policy
    assert isinstance(policy, LMActorCriticPolicy)
    obs = advanced_obs(algo)
    lengths = obs["attention_mask"].sum(1)
    assert (lengths < obs["attention_mask"].shape[1]).all()  # right padding after the last token

    with torch.no_grad():
        expected, hidden = [], []
        for ids, n in zip(obs["input_ids"], lengths, strict=True):
            out = model(torch.as_tensor(ids[:n])[None], output_hidden_states=True)
            expected.append(torch.softmax(out.logits[0, -1], -1))
            hidden.append(out.hidden_states[-1][0, -1])
        expected = torch.stack(expected)
        as_int, _ = policy.obs_to_tensor(obs)  # what SB3 passes during the rollout
        as_float = {k: v.float() for k, v in as_int.items()}  # what its rollout buffer returns
        for o in (as_int, as_float):
            probs = policy.get_distribution(o).distribution.probs
            torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
        values = policy.predict_values(as_float)
        torch.testing.assert_close(
            values, policy.value_head(torch.stack(hidden)), atol=1e-5, rtol=1e-4
        )

        # forward / evaluate_actions agree with the distribution; the full-logits path too
        actions, v, logp = policy(as_int)
        torch.testing.assert_close(
            logp, expected[torch.arange(2), actions].log(), atol=1e-5, rtol=1e-4
        )
        v2, logp2, ent = policy.evaluate_actions(as_float, actions.float())
        torch.testing.assert_close(logp2, logp)
        torch.testing.assert_close(v2, v)
        assert ent.shape == (2,) and bool((ent > 0).all())
        assert policy._gather_logits  # logits_to_keep path taken by default
        policy._gather_logits = False
        torch.testing.assert_close(
            policy.get_distribution(as_float).distribution.probs, expected, atol=1e-5, rtol=1e-4
        )


def test_update_reproduces_the_rollout_log_probs_and_values():
    """Before any gradient step the PPO ratio is exactly 1: the observations of SB3's rollout
    buffer, re-batched and re-trimmed, give the rollout's log-probs and values."""
    model, tok = tiny_model(), tiny_tokenizer()
    algo = make_sb3_ppo(model, tok, **SMALL)
    _, callback = algo._setup_learn(16, None)
    callback.init_callback(algo)
    assert algo.collect_rollouts(algo.env, callback, algo.rollout_buffer, algo.n_steps)
    algo.policy.set_training_mode(True)  # as PPO.train() does
    data = next(algo.rollout_buffer.get(None))
    policy, actions = algo.policy, data.actions.long().flatten()
    rows_run: list[int] = []
    policy.lm.register_forward_pre_hook(
        lambda _m, _a, kw: rows_run.append(len(kw["input_ids"])), with_kwargs=True
    )
    for share in (True, False):
        policy.share_prefixes = share
        with torch.no_grad():
            values, logp, _ = policy.evaluate_actions(data.observations, actions)
        torch.testing.assert_close(logp, data.old_log_prob, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(values.flatten(), data.old_values, atol=1e-5, rtol=1e-4)
    # 16 observations = 2 envs x 8 steps, each episode 4 tokens: one forward per episode
    assert rows_run[-1] == 16 and rows_run[-2] <= 6


def test_predict_returns_valid_token_ids():
    model, tok = tiny_model(), tiny_tokenizer()
    algo = make_sb3_ppo(model, tok, **SMALL)
    obs = advanced_obs(algo, steps=1)
    actions, _ = algo.predict(obs)
    assert actions.shape == (2,) and actions.dtype.kind == "i"
    assert ((actions >= 0) & (actions < len(tok))).all()
    greedy, _ = algo.predict(obs, deterministic=True)
    with torch.no_grad():
        probs = algo.policy.get_distribution(algo.policy.obs_to_tensor(obs)[0]).distribution.probs
    np.testing.assert_array_equal(greedy, probs.argmax(-1).numpy())
    single = {k: v[0] for k, v in obs.items()}  # an unbatched observation
    action, _ = algo.predict(single)
    assert np.ndim(action) == 0 and 0 <= int(action) < len(tok)


def test_a_few_ppo_steps_change_lm_and_value_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3's default logger writes
    model, tok = tiny_model(), tiny_tokenizer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    algo, rows = train_sb3_ppo(model, tok, total_timesteps=32, **DENSE)
    assert list(tmp_path.iterdir()) == []  # no SB3-<time> folder left behind per learn()
    policy = algo.policy
    optimised = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in [*model.parameters(), *policy.value_head.parameters()]}
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2
    value_before = make_sb3_ppo(tiny_model(), tok, **SMALL).policy.value_head.weight
    assert not torch.equal(policy.value_head.weight.detach(), value_before.detach())
    assert [r["timesteps"] for r in rows] == [16.0, 32.0]
    assert all(np.isfinite(r["train/value_loss"]) for r in rows)
    assert sum(r["episodes"] for r in rows) >= 4 and np.isfinite(rows[-1]["ep_rew_mean"])


def test_lora_trains_only_the_adapter_and_value_head(tmp_path):
    model, tok = tiny_model(), tiny_tokenizer()
    algo = make_sb3_ppo(model, tok, lora_r=4, **DENSE)
    policy = algo.policy
    params = dict(policy.lm.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    n_opt = sum(len(g["params"]) for g in policy.optimizer.param_groups)
    assert n_opt == len(trainable) + 2  # + the value head's weight and bias
    before = {n: p.detach().clone() for n, p in params.items()}
    algo.learn(16)
    assert all(torch.equal(p, before[n]) for n, p in params.items() if n not in trainable)
    assert all(not torch.equal(p, before[n]) for n, p in params.items() if "lora_B" in n)

    episodes = evaluate_sb3_ppo(algo, n_episodes=3)
    assert len(episodes) == 3 and all(isinstance(e["text"], str) for e in episodes)
    assert all(1 <= e["tokens"] <= SMALL["max_new_tokens"] for e in episodes)
    out = save_sb3_ppo(algo, tmp_path / "policy", tok)
    assert (out / "model" / "adapter_config.json").exists() and (out / "value_head.pt").exists()


def test_lora_adapters_and_value_head_are_the_same_as_llm_agents():
    from agents.policy import LLMAgent

    def adapted(model) -> set[str]:
        """Names of the modules carrying a LoRA adapter, adapter name stripped."""
        return {
            n.split(".lora_A.")[0].removeprefix("base_model.model.")
            for n, _ in model.named_parameters()
            if ".lora_A." in n
        }

    tok = tiny_tokenizer()
    policy = make_sb3_ppo(tiny_model(), tok, lora_r=4, **SMALL).policy
    agent = LLMAgent.lora(tiny_model(), tok, r=4, alpha=8)
    ours, theirs = adapted(policy.lm), adapted(agent.model)
    assert ours == theirs
    # every linear layer of the decoder, not peft's attention-only (q/v) default
    assert any(n.endswith("mlp.down_proj") for n in ours) and any(
        n.endswith("self_attn.k_proj") for n in ours
    )
    assert not any(n.endswith("lm_head") for n in ours)
    for head in (policy.value_head, agent.value_head):  # zero-initialised, as LLMAgent's
        assert not head.weight.any() and not head.bias.any()
