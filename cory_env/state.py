"""The rules of a CORY episode, for B episodes in lockstep: pure numpy state, no Gym API.

:class:`Episodes` is shared by :class:`cory_env.env.CoryTextEnv` (B = 1) and
:class:`cory_env.vector.CoryTextVecEnv` (any B), so the two give the same texts, token ids,
rewards and infos for the same queries and actions by construction.

Per role the tokens live in one ``(B, L)`` buffer, ``L = max_prompt_tokens +
max_new_tokens``: the role's prompt, then its answer, then padding. A step writes one
token per active episode; texts are decoded only when a turn ends (and on active
episodes after each step when the task has stop strings).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cory_env import rewards
from cory_env.config import EnvConfig, positive_int
from cory_env.tasks.base import Query, Task

AGENTS = ("pioneer_0", "observer_0")
"""The env's agents, its ``possible_agents``: roles (seats), not models. Defined here, once;
the trainers, schedules and logs import them (``cory_env.PIONEER`` / ``cory_env.OBSERVER``)."""
PIONEER, OBSERVER = AGENTS
PIONEER_TURN, OBSERVER_TURN, DONE = 0, 1, 2
"""Phases of an episode: the index in :data:`AGENTS` of the role acting, then ``DONE``."""
FINISH = ("", "eos", "stop", "length")  # why a turn ended, by code
_EOS, _STOP, _LENGTH = 1, 2, 3


def draw_query(task: Task, split: str, rng: np.random.Generator) -> Query:
    """One query of ``split``, drawn uniformly with ``rng``."""
    pool = task.queries(split)
    return task.lookup(pool[int(rng.integers(len(pool)))])


def forced_query(task: Task, text: Any, answer: Any = None) -> Query:
    """The query given in reset options, with its gold answer (given, or looked up)."""
    if not isinstance(text, str):
        raise TypeError(f"a query must be a str, got {type(text).__name__}")
    return Query(text, answer) if answer is not None else task.lookup(text)


def turn_limit(cfg: EnvConfig, value: Any) -> int:
    """This episode's ``max_new_tokens`` (reset option), within the env's bound."""
    if value is None:
        return cfg.max_new_tokens
    n = positive_int(value, "options['max_new_tokens']")
    if n > cfg.max_new_tokens:
        raise ValueError(
            f"options['max_new_tokens']={n} exceeds the env's max_new_tokens={cfg.max_new_tokens} "
            "(the observation length is fixed at construction)"
        )
    return n


def check_token(action: Any, vocab_size: int) -> int:
    """One action as a token id, or a clear TypeError / ValueError."""
    if isinstance(action, np.ndarray) and action.size == 1:
        action = action.reshape(())
    if isinstance(action, (bool, np.bool_)) or action is None:
        raise TypeError(f"action must be an integer token id in [0, {vocab_size}), got {action!r}")
    try:
        token = operator.index(action)
    except TypeError:
        raise TypeError(
            f"action must be an integer token id in [0, {vocab_size}), "
            f"got {type(action).__name__} {action!r}"
        ) from None
    if not 0 <= token < vocab_size:
        raise ValueError(f"action {token} is out of range: token ids are in [0, {vocab_size})")
    return token


def check_tokens(actions: Any, active: np.ndarray, vocab_size: int) -> np.ndarray:
    """A (B,) int64 array of actions; only the entries of active episodes are range-checked."""
    arr = np.asarray(actions)
    if arr.shape != active.shape:
        raise ValueError(f"expected {active.size} actions (one per env), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"actions must be integer token ids in [0, {vocab_size}), got dtype {arr.dtype}"
        )
    live = arr[active]
    if live.size and (live.min() < 0 or live.max() >= vocab_size):
        i = int(np.flatnonzero(active & ((arr < 0) | (arr >= vocab_size)))[0])
        raise ValueError(
            f"action {arr[i]} of env {i} is out of range: token ids are in [0, {vocab_size})"
        )
    return arr.astype(np.int64, copy=False)


class Episodes:
    """B CORY episodes in lockstep: the pioneer phase, then the observer phase, then done."""

    def __init__(self, cfg: EnvConfig, num_envs: int) -> None:
        self.cfg = cfg
        self.num_envs = b = positive_int(num_envs, "num_envs")
        self.ids = np.full((2, b, cfg.seq_len), cfg.pad_token_id, np.int64)
        self.prompt_len = np.zeros((2, b), np.int64)
        self.resp_len = np.zeros((2, b), np.int64)
        self.finish = np.zeros((2, b), np.int8)
        self.active = np.zeros(b, bool)
        self.phase: int | None = None  # None until the first start()
        self.limit = cfg.max_new_tokens
        self.queries: list[Query] = []
        self.texts: list[list[str] | None] = [None, None]
        self.observer_prompts: list[str] = []
        self.truncated: list[bool] = []
        self.own_rewards = np.zeros((2, b), np.float32)  # r(q, a) of each role
        self.rewards = np.zeros((2, b), np.float32)  # what each role receives (reward_mode)
        self.infos: list[dict[str, Any]] = []
        self._pos = np.arange(cfg.seq_len)

    # -- episode start -------------------------------------------------------------------
    def start(self, queries: Sequence[Query], max_new_tokens: int | None = None) -> None:
        """Begin B episodes; validates everything before changing any state."""
        cfg, b = self.cfg, self.num_envs
        if len(queries) != b:
            raise ValueError(f"expected {b} queries (one per env), got {len(queries)}")
        limit = turn_limit(cfg, max_new_tokens)
        prompts = [cfg.task.pioneer_prompt(q) for q in queries]
        encoded = cfg.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        for i, (q, ids) in enumerate(zip(queries, encoded, strict=True)):
            where = f"query {i} " if b > 1 else "query "
            if not q.strip():
                raise ValueError(f"{where}is empty: a query needs at least one non-blank character")
            if len(ids) > cfg.max_prompt_tokens:
                raise ValueError(
                    f"{where}is too long: its prompt has {len(ids)} tokens, more than "
                    f"max_prompt_tokens={cfg.max_prompt_tokens} (shorten it or raise max_prompt_tokens)"
                )
        self.ids.fill(cfg.pad_token_id)
        for i, ids in enumerate(encoded):
            self.ids[PIONEER_TURN, i, : len(ids)] = ids
        self.prompt_len[PIONEER_TURN] = [len(ids) for ids in encoded]
        self.prompt_len[OBSERVER_TURN] = 0
        self.resp_len.fill(0)
        self.finish.fill(0)
        self.active.fill(True)
        self.phase, self.limit = PIONEER_TURN, limit
        self.queries = list(queries)
        self.texts = [None, None]
        self.observer_prompts, self.truncated = [], []
        self.own_rewards.fill(0)
        self.rewards.fill(0)
        self._refresh_infos()

    # -- one token step ------------------------------------------------------------------
    def check_actions(self, actions: Any) -> np.ndarray:
        return check_tokens(actions, self.active, self.cfg.vocab_size)

    def step(self, actions: np.ndarray) -> None:
        """Append one token per active episode of the current role (already validated).

        Atomic: if ending the phase fails (e.g. the reward function raises), nothing
        changes and the same step can be retried.
        """
        if self.phase is None:
            raise RuntimeError("call reset() before step()")
        if self.phase == DONE:
            raise RuntimeError("the episode is over (both roles have answered): call reset()")
        r, cfg = self.phase, self.cfg
        idx = np.flatnonzero(self.active)
        tok = actions[idx]
        pos = self.prompt_len[r, idx] + self.resp_len[r, idx]
        new_len = self.resp_len[r, idx] + 1
        self.ids[r, idx, pos] = tok  # beyond the current length: undone below on failure
        try:
            eos = tok == cfg.eos_token_id if cfg.eos_token_id is not None else np.zeros(idx.size, bool)
            stop = self._stop_hits(r, idx, new_len) if cfg.stop_strings else np.zeros(idx.size, bool)
            ended = eos | stop | (new_len >= self.limit)
            commit = None
            if ended.all():
                lens = self.resp_len[r].copy()
                lens[idx] = new_len
                commit = self._end_pioneer(lens) if r == PIONEER_TURN else self._end_observer(lens)
        except BaseException:
            self.ids[r, idx, pos] = cfg.pad_token_id
            raise
        self.resp_len[r, idx] = new_len
        done = idx[ended]
        self.finish[r, done] = np.where(eos[ended], _EOS, np.where(stop[ended], _STOP, _LENGTH))
        self.active[done] = False
        if commit is not None:
            commit()
            self._refresh_infos()

    # -- texts -----------------------------------------------------------------------------
    def responses(self, role: int, lens: np.ndarray | None = None) -> list[np.ndarray]:
        """Each episode's answer token ids for ``role`` (EOS included), as views."""
        lens = self.resp_len[role] if lens is None else lens
        starts = self.prompt_len[role]
        return [self.ids[role, i, starts[i] : starts[i] + lens[i]] for i in range(self.num_envs)]

    def decode(self, role: int, lens: np.ndarray | None = None) -> list[str]:
        """The answers as text: special tokens skipped, cut at the first stop string."""
        eos = self.cfg.eos_token_id
        seqs = [r[:-1] if len(r) and r[-1] == eos else r for r in self.responses(role, lens)]
        texts = self.cfg.tokenizer.batch_decode([s.tolist() for s in seqs], skip_special_tokens=True)
        return [self._cut(t) for t in texts]

    def text(self, role: int) -> list[str]:
        """Final answers of a finished turn, else the answers so far."""
        cached = self.texts[role]
        return list(cached) if cached is not None else self.decode(role)

    def _cut(self, text: str) -> str:
        hits = [k for k in (text.find(s) for s in self.cfg.stop_strings) if k >= 0]
        return text[: min(hits)] if hits else text

    def _stop_hits(self, role: int, idx: np.ndarray, new_len: np.ndarray) -> np.ndarray:
        lens = self.resp_len[role].copy()
        lens[idx] = new_len
        resp = self.responses(role, lens)
        texts = self.cfg.tokenizer.batch_decode([resp[i].tolist() for i in idx], skip_special_tokens=True)
        return np.array([any(s in t for s in self.cfg.stop_strings) for t in texts], bool)

    # -- phase ends: compute first, return a commit closure ------------------------------------
    def _end_pioneer(self, lens: np.ndarray) -> Callable[[], None]:
        cfg = self.cfg
        answers = self.decode(PIONEER_TURN, lens)
        prompts = [cfg.task.observer_prompt(q, a) for q, a in zip(self.queries, answers, strict=True)]
        encoded = cfg.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        keep = cfg.max_prompt_tokens

        def commit() -> None:
            for i, ids in enumerate(encoded):
                ids = ids[-keep:]
                self.ids[OBSERVER_TURN, i, : len(ids)] = ids
                self.prompt_len[OBSERVER_TURN, i] = len(ids)
            self.texts[PIONEER_TURN] = answers
            self.observer_prompts = prompts
            self.truncated = [len(ids) > keep for ids in encoded]
            self.active.fill(True)
            self.phase = OBSERVER_TURN

        return commit

    def _end_observer(self, lens: np.ndarray) -> Callable[[], None]:
        cfg, b = self.cfg, self.num_envs
        answers = self.decode(OBSERVER_TURN, lens)
        scores = rewards.score(
            cfg.task.reward_fn, self.queries + self.queries, self.texts[PIONEER_TURN] + answers
        )
        received = rewards.combine(scores[:b], scores[b:], cfg.reward_mode)

        def commit() -> None:
            self.texts[OBSERVER_TURN] = answers
            self.own_rewards[:] = (scores[:b], scores[b:])
            self.rewards[:] = received
            self.phase = DONE

        return commit

    # -- observations and infos -------------------------------------------------------------
    def observation(self, role: int, rows: slice | int = slice(None)) -> dict[str, np.ndarray]:
        """``{"input_ids", "attention_mask"}`` of ``role``: fresh arrays, ``(B, L)`` or ``(L,)``."""
        n = self.prompt_len[role, rows] + self.resp_len[role, rows]
        mask = self._pos < np.expand_dims(n, -1)
        return {"input_ids": self.ids[role, rows].copy(), "attention_mask": mask.astype(np.int8)}

    def _refresh_infos(self) -> None:
        """Rebuilt at the start and at each phase end (not every step): new dicts each time."""
        infos = []
        for i, q in enumerate(self.queries):
            info: dict[str, Any] = {"query": str(q), "answer": q.answer}
            if self.phase in (OBSERVER_TURN, DONE):
                info.update(
                    pioneer_text=self.texts[PIONEER_TURN][i],
                    pioneer_tokens=int(self.resp_len[PIONEER_TURN, i]),
                    pioneer_finish=FINISH[self.finish[PIONEER_TURN, i]],
                    observer_prompt=self.observer_prompts[i],
                    observer_prompt_truncated=self.truncated[i],
                )
            if self.phase == DONE:
                info.update(
                    observer_text=self.texts[OBSERVER_TURN][i],
                    observer_tokens=int(self.resp_len[OBSERVER_TURN, i]),
                    observer_finish=FINISH[self.finish[OBSERVER_TURN, i]],
                    pioneer_reward=float(self.own_rewards[PIONEER_TURN, i]),
                    observer_reward=float(self.own_rewards[OBSERVER_TURN, i]),
                )
            infos.append(info)
        self.infos = infos

    def render(self, i: int) -> str:
        """Episode ``i`` as text: the query and both answers (so far)."""
        lines = [f"query: {str(self.queries[i])!r}"]
        for role, agent in enumerate(AGENTS):
            if self.phase is not None and self.phase >= role:
                text = self.text(role)[i]
                lines.append(f"{agent} ({self.resp_len[role, i]} tokens): {text!r}")
        if self.phase == DONE:
            lines.append(
                "rewards: "
                + ", ".join(
                    f"{agent} {self.rewards[r, i]:.4g} (own {self.own_rewards[r, i]:.4g})"
                    for r, agent in enumerate(AGENTS)
                )
            )
        return "\n".join(lines)
