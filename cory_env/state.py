"""The rules of a CORY episode, for B episodes in lockstep: pure numpy state, no Gym API.

:class:`Episodes` is shared by :class:`cory_env.env.CoryTextEnv` (B = 1) and
:class:`cory_env.vector.CoryTextVecEnv` (any B), so the two give the same texts, token ids,
rewards and infos for the same queries and actions by construction.

Per role the tokens live in one ``(B, L)`` buffer, ``L = max_prompt_tokens +
max_new_tokens``: the role's prompt, then its answer, then padding, all in the role's own
tokenizer's ids (``cfg.tokenizers[role]``); an observer's prompt is built from the earlier
answers' texts and encoded by its own tokenizer. A step writes one
token per active episode; texts are decoded only when a turn ends (and on active
episodes after each step when the task has stop strings). The checks on queries, turn
lengths and actions live in :mod:`cory_env.inputs` and are importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cory_env import rewards
from cory_env.config import EnvConfig, positive_int
from cory_env.inputs import check_token, check_tokens, draw_query, forced_query, turn_limits
from cory_env.seats import agent_names, seat_prefix
from cory_env.tasks.base import Query

__all__ = [
    "AGENTS",
    "FINISH",
    "OBSERVER",
    "PIONEER",
    "PIONEER_TURN",
    "Episodes",
    "agent_names",
    "check_token",
    "check_tokens",
    "draw_query",
    "forced_query",
    "role_index",
    "seat_prefix",
    "turn_limits",
]


def role_index(agents: Sequence[str], agent: Any) -> int:
    """The turn index of ``agent`` among ``agents``, or a ValueError naming the agents."""
    if not isinstance(agent, str) or agent not in agents:
        raise ValueError(f"unknown agent {agent!r}: this env's agents are {list(agents)}")
    return list(agents).index(agent)


AGENTS = agent_names(2)
"""The two-agent game's agents (the default ``possible_agents``); the trainers, schedules
and logs import the role names from here (``cory_env.PIONEER`` / ``cory_env.OBSERVER``)."""
PIONEER, OBSERVER = AGENTS
PIONEER_TURN = 0
"""Phases of an episode are the index of the role acting (``0`` the pioneer ... ``K - 1``
the last observer), then ``K``: done."""
FINISH = ("", "eos", "stop", "length")
"""Why a turn ended, by the code in infos' ``<role>_finish`` (code 0, not ended yet)."""
_EOS, _STOP, _LENGTH = 1, 2, 3


class Episodes:
    """B CORY episodes in lockstep: the pioneer's turn, then each observer's, then done."""

    def __init__(self, cfg: EnvConfig, num_envs: int) -> None:
        self.cfg = cfg
        self.num_envs = b = positive_int(num_envs, "num_envs")
        self.k = k = cfg.num_agents
        self.agents = agent_names(k)
        self.prefixes = tuple(seat_prefix(a) for a in self.agents)
        self.pads = np.array(cfg.pad_ids, np.int64)  # per role
        self.ids = np.empty((k, b, cfg.seq_len), np.int64)
        self.ids[:] = self.pads[:, None, None]
        self.prompt_len = np.zeros((k, b), np.int64)
        self.resp_len = np.zeros((k, b), np.int64)
        self.finish = np.zeros((k, b), np.int8)
        self.truncated = np.zeros((k, b), bool)
        self.active = np.zeros(b, bool)
        self.phase: int | None = None  # None until the first start(); k once done
        self.limits = np.full(k, cfg.max_new_tokens, np.int64)  # per role, this episode
        self.queries: list[Query] = []
        self.texts: list[list[str] | None] = [None] * k
        self.prompts: list[list[str]] = [[] for _ in range(k)]  # observers' prompt texts
        self.own_rewards = np.zeros((k, b), np.float32)  # r(q, a) of each role
        self.rewards = np.zeros((k, b), np.float32)  # what each role receives (reward_mode)
        self.info_arrays: dict[str, np.ndarray] = {}
        self._pos = np.arange(cfg.seq_len)

    @property
    def done(self) -> bool:
        """Every role has answered."""
        return self.phase == self.k

    @property
    def limit(self) -> int:
        """The acting role's turn length bound this episode."""
        return int(self.limits[self.last_role])

    @property
    def last_role(self) -> int:
        """The role whose observation is shown, the acting one or, once done, the last."""
        return min(self.phase or 0, self.k - 1)

    # -- episode start -------------------------------------------------------------------
    def start(self, queries: Sequence[Query], max_new_tokens: Any = None) -> None:
        """Begin B episodes; validates everything before changing any state."""
        cfg, b = self.cfg, self.num_envs
        if len(queries) != b:
            raise ValueError(f"expected {b} queries (one per env), got {len(queries)}")
        limits = turn_limits(cfg, max_new_tokens)
        prompts = [cfg.task.pioneer_prompt(q) for q in queries]
        encoded = cfg.tokenizers[PIONEER_TURN](prompts, add_special_tokens=True)["input_ids"]
        for i, (q, ids) in enumerate(zip(queries, encoded, strict=True)):
            where = f"query {i} " if b > 1 else "query "
            if not q.strip():
                raise ValueError(f"{where}is empty: a query needs at least one non-blank character")
            if len(ids) > cfg.max_prompt_tokens:
                raise ValueError(
                    f"{where}is too long: its prompt has {len(ids)} tokens, more than "
                    f"max_prompt_tokens={cfg.max_prompt_tokens} (shorten it or raise max_prompt_tokens)"
                )
        self.ids[:] = self.pads[:, None, None]
        for i, ids in enumerate(encoded):
            self.ids[PIONEER_TURN, i, : len(ids)] = ids
        self.prompt_len.fill(0)
        self.prompt_len[PIONEER_TURN] = [len(ids) for ids in encoded]
        self.resp_len.fill(0)
        self.finish.fill(0)
        self.truncated.fill(False)
        self.active.fill(True)
        self.phase, self.limits = PIONEER_TURN, limits
        self.queries = list(queries)
        self.texts = [None] * self.k
        self.prompts = [prompts] + [[] for _ in range(self.k - 1)]
        self.own_rewards.fill(0)
        self.rewards.fill(0)
        self._refresh_infos()

    # -- one token step ------------------------------------------------------------------
    def check_actions(self, actions: Any) -> np.ndarray:
        """The acting role's actions, range-checked against its own vocabulary."""
        r = self.last_role
        return check_tokens(actions, self.active, self.cfg.vocab_sizes[r], self.owner(r))

    def owner(self, role: int) -> str | None:
        """The agent to name in an out-of-range error: None when every seat shares one
        vocabulary."""
        return None if self.cfg.shared else self.agents[role]

    def step(self, actions: np.ndarray) -> None:
        """Append one token per active episode of the current role (already validated).

        Atomic: if ending the turn fails (e.g. the reward function raises), nothing
        changes and the same step can be retried.
        """
        if self.phase is None:
            raise RuntimeError("call reset() before step()")
        if self.done:
            raise RuntimeError("the episode is over (every role has answered): call reset()")
        r, cfg = self.phase, self.cfg
        eos_id = cfg.eos_ids[r]
        idx = np.flatnonzero(self.active)
        tok = actions[idx]
        pos = self.prompt_len[r, idx] + self.resp_len[r, idx]
        new_len = self.resp_len[r, idx] + 1
        self.ids[r, idx, pos] = tok  # beyond the current length: undone below on failure
        try:
            eos = tok == eos_id if eos_id is not None else np.zeros(idx.size, bool)
            stop = (
                self._stop_hits(r, idx, new_len) if cfg.stop_strings else np.zeros(idx.size, bool)
            )
            ended = eos | stop | (new_len >= self.limits[r])
            commit = None
            if ended.all():
                lens = self.resp_len[r].copy()
                lens[idx] = new_len
                commit = self._end_turn(r, lens) if r < self.k - 1 else self._end_episode(lens)
        except BaseException:
            self.ids[r, idx, pos] = self.pads[r]
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
        eos = self.cfg.eos_ids[role]
        seqs = [r[:-1] if len(r) and r[-1] == eos else r for r in self.responses(role, lens)]
        texts = self.cfg.tokenizers[role].batch_decode(
            [s.tolist() for s in seqs], skip_special_tokens=True
        )
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
        texts = self.cfg.tokenizers[role].batch_decode(
            [resp[i].tolist() for i in idx], skip_special_tokens=True
        )
        return np.array([any(s in t for s in self.cfg.stop_strings) for t in texts], bool)

    # -- turn ends: compute first, return a commit closure ------------------------------------
    def _end_turn(self, r: int, lens: np.ndarray) -> Callable[[], None]:
        """Role ``r`` (not the last) has answered: build the next observer's prompt from the
        query and every answer so far (the task's knowledge-transfer template), as text, then
        encode it with the next observer's own tokenizer."""
        cfg, nxt = self.cfg, r + 1
        answers = self.decode(r, lens)
        earlier = self._answered(r) + [answers]
        prompts = [
            cfg.task.chain_prompt(q, [a[i] for a in earlier]) for i, q in enumerate(self.queries)
        ]
        encoded = cfg.tokenizers[nxt](prompts, add_special_tokens=True)["input_ids"]
        keep = cfg.max_prompt_tokens

        def commit() -> None:
            for i, ids in enumerate(encoded):
                ids = ids[-keep:]
                self.ids[nxt, i, : len(ids)] = ids
                self.prompt_len[nxt, i] = len(ids)
            self.texts[r] = answers
            self.prompts[nxt] = prompts
            self.truncated[nxt] = [len(ids) > keep for ids in encoded]
            self.active.fill(True)
            self.phase = nxt

        return commit

    def _end_episode(self, lens: np.ndarray) -> Callable[[], None]:
        """The last role has answered: score every answer in one reward call and combine."""
        cfg, b, k = self.cfg, self.num_envs, self.k
        answers = self.decode(k - 1, lens)
        texts = [*self._answered(k - 1), answers]
        scores = rewards.score(
            cfg.task.reward_fn, self.queries * k, [t for role in texts for t in role]
        )
        own = scores.reshape(k, b)
        received = rewards.combine_all(own, cfg.reward_mode)

        def commit() -> None:
            self.texts[k - 1] = answers
            self.own_rewards[:] = own
            self.rewards[:] = received
            self.phase = k

        return commit

    def _answered(self, n: int) -> list[list[str]]:
        """The answer texts of roles ``0..n-1``, which have all ended their turns."""
        out: list[list[str]] = []
        for texts in self.texts[:n]:
            assert texts is not None, "a role's answers are read before its turn ended"
            out.append(texts)
        return out

    # -- observations and infos -------------------------------------------------------------
    def observation(self, role: int, rows: slice | int = slice(None)) -> dict[str, np.ndarray]:
        """``{"input_ids", "attention_mask"}`` of ``role``: fresh arrays, ``(B, L)`` or ``(L,)``."""
        n = self.prompt_len[role, rows] + self.resp_len[role, rows]
        mask = self._pos < np.expand_dims(n, -1)
        return {"input_ids": self.ids[role, rows].copy(), "attention_mask": mask.astype(np.int8)}

    def _refresh_infos(self) -> None:
        """Rebuilt at the start and at each turn end (not every step), as ``(B,)`` arrays of
        the same keys from the start on (defaults until a value exists): numbers only, and
        the texts too with the env's ``info_texts``. See the env's docstring for the schema."""
        b, phase = self.num_envs, self.phase
        assert phase is not None, "infos exist once an episode has started"
        arrays: dict[str, np.ndarray] = {
            "turn": np.full(b, phase, np.int64),
            "query_tokens": self.prompt_len[PIONEER_TURN].copy(),
        }
        for r, p in enumerate(self.prefixes):
            ended = phase > r
            if r > 0:
                arrays[f"{p}_prompt_tokens"] = (
                    self.prompt_len[r].copy() if phase >= r else np.zeros(b, np.int64)
                )
                arrays[f"{p}_prompt_truncated"] = self.truncated[r].copy()
            arrays[f"{p}_tokens"] = self.resp_len[r].copy() if ended else np.zeros(b, np.int64)
            arrays[f"{p}_finish"] = (
                self.finish[r].astype(np.int64) if ended else np.zeros(b, np.int64)
            )
            arrays[f"{p}_eos"] = (self.finish[r] == _EOS) if ended else np.zeros(b, bool)
            arrays[f"{p}_reward"] = (
                self.own_rewards[r].copy() if self.done else np.zeros(b, np.float32)
            )
        if self.cfg.info_texts:
            arrays["query"] = np.array([str(q) for q in self.queries], dtype=object)
            arrays["answer"] = np.array(
                ["" if q.answer is None else q.answer for q in self.queries], dtype=object
            )
            for r, p in enumerate(self.prefixes):
                if r > 0:
                    arrays[f"{p}_prompt"] = np.array(
                        self.prompts[r] if phase >= r else [""] * b, dtype=object
                    )
                arrays[f"{p}_text"] = np.array(
                    self.texts[r] if phase > r else [""] * b, dtype=object
                )
        self.info_arrays = arrays

    def info(self, i: int) -> dict[str, Any]:
        """Episode ``i``'s info: a fresh dict of plain Python numbers (and strings with
        ``info_texts``)."""
        return {
            k: v[i].item() if isinstance(v[i], np.generic) else v[i]
            for k, v in self.info_arrays.items()
        }

    @property
    def infos(self) -> list[dict[str, Any]]:
        """Every episode's info (fresh dicts)."""
        return [self.info(i) for i in range(self.num_envs)]

    def render(self, i: int) -> str:
        """Episode ``i`` as text: the query and every answer (so far)."""
        lines = [f"query: {str(self.queries[i])!r}"]
        for role, agent in enumerate(self.agents):
            if self.phase is not None and self.phase >= role:
                text = self.text(role)[i]
                lines.append(f"{agent} ({self.resp_len[role, i]} tokens): {text!r}")
        if self.done:
            lines.append(
                "rewards: "
                + ", ".join(
                    f"{agent} {self.rewards[r, i]:.4g} (own {self.own_rewards[r, i]:.4g})"
                    for r, agent in enumerate(self.agents)
                )
            )
        return "\n".join(lines)
