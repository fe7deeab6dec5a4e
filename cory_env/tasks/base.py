"""The task object: where queries come from, how prompts are built, how answers are scored.

A task is data, not a subclass hierarchy: a :class:`Task` holds its train/eval queries,
the pioneer prompt template, the observer's knowledge-transfer template, its reward
function and its generation defaults. Tasks are looked up by name through
:func:`make_task`, or by the import path of a factory (``my_pkg.tasks:make``,
``path/to/tasks.py:make``); a new task is one :func:`register_task` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cory_env.registry import PluginError, Registry, is_import_path, load_object
from cory_env.rewards import RewardError, RewardFn, available_rewards, score


class Query(str):
    """A query text that may carry its gold answer as ``query.answer``.

    It *is* a ``str`` (so templates, tokenizers and user reward functions treat it as
    text); reward functions that need the reference answer (``answer-match``) read
    ``getattr(query, "answer", None)``.
    """

    answer: str | None

    def __new__(cls, text: str, answer: str | None = None) -> Query:
        obj = super().__new__(cls, text)
        obj.answer = None if answer is None else str(answer)
        return obj

    def __reduce__(self) -> tuple[type[Query], tuple[str, str | None], dict[str, Any]]:
        """Pickling / deepcopy: rebuilt from the text and the answer, then its attributes."""
        return (type(self), (str(self), self.answer), self.__dict__)

    def __repr__(self) -> str:
        return f"Query({str(self)!r}, answer={self.answer!r})"


class MissingReward:
    """The reward of a task that has none of its own (``prompts``): it refuses to score,
    saying how to give one; :attr:`Task.has_reward` is false on it."""

    def __init__(self, task: str) -> None:
        self.task, self.__name__ = task, "missing"

    @property
    def message(self) -> str:
        return (
            f"task {self.task!r} has no reward of its own: pass --reward NAME "
            f"({', '.join(available_rewards())}) or --reward module:function "
            "(reward=... in Python)"
        )

    def __call__(self, queries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        raise RewardError(self.message)


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling defaults of a task (the paper's settings unless said otherwise)."""

    max_new_tokens: int = 16
    """Upper bound of new tokens per turn (the env's ``max_new_tokens`` default)."""
    min_new_tokens: int | None = None
    """If set, the per-batch length is sampled uniformly in ``[min_new_tokens, max_new_tokens]``
    (IMDB: 4-16, as TRL's ``LengthSampler``); ``None`` means always ``max_new_tokens``."""
    temperature: float = 1.0
    top_k: int = 0
    """0 disables top-k (the paper samples from the full distribution)."""
    top_p: float = 1.0
    stop_strings: tuple[str, ...] = ()
    """A turn also ends when the decoded answer contains one of these (e.g. ``"\\nQuestion:"``)."""
    max_prompt_tokens: int = 64
    """Room for the longest prompt (the observer's, which embeds the pioneer's answer)."""


@dataclass
class Task:
    """A CORY task: queries, the two prompt templates, the reward and generation defaults.

    Templates are ``str.format`` strings over ``{q}`` (the query) and, for the observer,
    ``{a1}`` (the pioneer's answer; an observer template without it is the
    no-knowledge-transfer ablation, see :meth:`without_knowledge_transfer`).
    """

    name: str
    train_queries: Sequence[Query]
    eval_queries: Sequence[Query]
    reward_fn: RewardFn
    pioneer_template: str = "{q}"
    observer_template: str = "{q}{a1}"
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    description: str = ""
    chain_template: str | None = None
    """The prompt of an observer that reads two or more earlier answers (chains of K > 2):
    ``str.format`` over ``{q}`` and ``{answers}``, the earlier answers each formatted with
    :attr:`chain_answer` and joined by :attr:`chain_separator`. None: the observer template
    with ``{a1}`` holding the joined answers. One earlier answer always uses the observer
    template, so two-agent prompts keep their exact text."""
    chain_answer: str = "{a}"
    """One earlier answer as a chain prompt shows it, a ``str.format`` string over ``{q}``,
    ``{i}`` (1-based turn) and ``{a}``."""
    chain_separator: str = "\n"
    """What joins the earlier answers of a chain prompt."""

    def __post_init__(self) -> None:
        if not self.train_queries:
            raise ValueError(f"task {self.name!r} has no training queries")
        if "{q}" not in self.pioneer_template:
            raise ValueError(f"task {self.name!r}: pioneer_template must contain '{{q}}'")
        if "{q}" not in self.observer_template:
            raise ValueError(f"task {self.name!r}: observer_template must contain '{{q}}'")
        if not callable(self.reward_fn):
            raise TypeError(f"task {self.name!r}: reward_fn must be callable")

    def queries(self, split: str = "train") -> Sequence[Query]:
        """The query pool of ``split`` (``"train"`` or ``"eval"``)."""
        if split == "train":
            return self.train_queries
        if split == "eval":
            return self.eval_queries or self.train_queries
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'eval'")

    def pioneer_prompt(self, query: str) -> str:
        """The prompt the pioneer (and any model evaluated alone) answers."""
        return self.pioneer_template.format(q=query)

    def observer_prompt(self, query: str, pioneer_answer: str) -> str:
        """The knowledge-transfer prompt: the query plus the pioneer's answer."""
        return self.observer_template.format(q=query, a1=pioneer_answer)

    def chain_prompt(self, query: str, answers: Sequence[str]) -> str:
        """The prompt of the observer that answers after ``answers`` (every earlier answer of
        the episode, in turn order): :meth:`observer_prompt` for one, the chain template for
        more."""
        if len(answers) == 1:
            return self.observer_prompt(query, answers[0])
        if not answers:
            raise ValueError("an observer's prompt needs at least one earlier answer")
        joined = self.chain_separator.join(
            self.chain_answer.format(q=query, i=i, a=a) for i, a in enumerate(answers, start=1)
        )
        if self.chain_template is None:
            return self.observer_template.format(q=query, a1=joined)
        return self.chain_template.format(q=query, answers=joined)

    def without_knowledge_transfer(self) -> Task:
        """The ablation where every observer sees only the query (its prompt is the pioneer's)."""
        return replace(
            self, observer_template=self.pioneer_template, chain_template=self.pioneer_template
        )

    @property
    def has_reward(self) -> bool:
        """False for a task built without a reward of its own (a :class:`MissingReward`:
        the ``prompts`` task without ``reward=``), which needs :meth:`with_reward`."""
        return not isinstance(self.reward_fn, MissingReward)

    def with_reward(self, reward_fn: RewardFn) -> Task:
        """The same task with another reward function (the env's ``reward_fn=`` override)."""
        return replace(self, reward_fn=reward_fn)

    def score(self, queries: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """The task reward of each answer to its query, ``(N,)`` float32, validated (what the
        env gives a role for its own answer; used for a model answering alone)."""
        return score(self.reward_fn, [self.lookup(q) for q in queries], list(answers))

    def lookup(self, text: str) -> Query:
        """The known :class:`Query` for ``text`` (with its gold answer), else a bare one."""
        if isinstance(text, Query) and text.answer is not None:
            return text
        index = self.__dict__.get("_index")
        if index is None:
            index = {str(q): q for q in (*self.train_queries, *self.eval_queries)}
            self.__dict__["_index"] = index
        return index.get(str(text), Query(str(text)))


_TASKS: Registry[Callable[..., Task]] = Registry("task")


def register_task(name: str, factory: Callable[..., Task], *, replace: bool = False) -> None:
    """Make ``make_task(name, **kwargs)`` call ``factory(**kwargs)``, which returns a
    :class:`Task`. Each module of :mod:`cory_env.tasks` registers its task on import; a
    name already registered is refused unless ``replace`` is true, so a plug-in task
    cannot shadow a built-in one by accident."""
    _TASKS.register(name, factory, replace=replace)


def available_tasks() -> list[str]:
    """The names :func:`make_task` accepts, sorted."""
    return _TASKS.names()


def make_task(task: str | Task, **kwargs: Any) -> Task:
    """A task from its registered name or the import path of a factory (``module:factory``
    or ``path/to/file.py:factory``, :func:`cory_env.registry.load_object`), called with
    the keyword arguments, or a :class:`Task` as is. A factory that returns anything but
    a :class:`Task` is refused, naming it."""
    if isinstance(task, Task):
        if kwargs:
            raise TypeError("keyword arguments are only accepted with a task name, not a Task")
        return task
    if not isinstance(task, str):
        raise TypeError(f"task must be a name or a Task, got {type(task).__name__}")
    if not is_import_path(task):
        return _TASKS.get(task)(**kwargs)
    built = load_object(task, "task")(**kwargs)
    if not isinstance(built, Task):
        raise PluginError(
            f"task {task!r} returned a {type(built).__name__}, not a cory_env.tasks.Task"
        )
    return built
