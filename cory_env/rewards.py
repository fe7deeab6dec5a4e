"""Reward functions (batch in, float32 array out) and reward modes.

A reward function is any callable ``(queries, responses) -> array`` of one float per
pair. Named ones are registered with :func:`register_reward` and built by
:func:`make_reward`, which also takes an import path to your own (``my_pkg.rewards:toxicity``,
``path/to/rewards.py:toxicity``); :func:`score` calls one and checks its output at the
boundary, so a faulty reward raises :class:`RewardError` instead of corrupting a training run. :func:`combine` turns the two per-role rewards into what
each role receives (``cooperative``: both get ``r(q,a1)+r(q,a2)``, the paper's setting).
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from cory_env.registry import Imported, Registry, is_import_path

REWARD_MODES = ("cooperative", "independent")

RewardFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]
"""A reward function, batch in and batch out, ``(queries, responses) -> float32 array of
shape (len(queries),)``."""


class RewardError(RuntimeError):
    """A reward function raised, or returned something other than finite floats."""


_REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward")


def register_reward(name: str, factory: Callable[..., RewardFn], *, replace: bool = False) -> None:
    """Make ``make_reward(name, **kwargs)`` (and a task's ``reward=name``) call
    ``factory(**kwargs)``, which returns a reward function; a name already registered is
    refused unless ``replace`` is true."""
    _REWARDS.register(name, factory, replace=replace)


def available_rewards() -> list[str]:
    """The names :func:`make_reward` accepts, sorted."""
    return _REWARDS.names()


def make_reward(spec: str | RewardFn, **kwargs: Any) -> RewardFn:
    """A reward function from a registered name (``vader``, ``hf-classifier``,
    ``answer-match``), an import path to a reward function (``module:function`` or
    ``path/to/file.py:function``: a :class:`cory_env.registry.Imported`, so that
    :func:`score` names it by that path), or a custom callable, returned as is."""
    if callable(spec):
        if kwargs:
            raise TypeError("keyword arguments are only accepted with a reward name")
        return spec
    if is_import_path(spec):
        if kwargs:
            raise TypeError(
                f"reward {spec!r} is a function, not a factory: it takes no options ({kwargs})"
            )
        return Imported(spec, "reward")
    return _REWARDS.get(spec)(**kwargs)


def _describe(out: Any) -> str:
    """What a reward returned, in a few words (for the messages of :func:`score`)."""
    if out is None or isinstance(out, (str, bytes, bool, int, float)):
        return repr(out) if len(repr(out)) < 40 else type(out).__name__
    if getattr(out, "shape", None) is not None:
        return f"a {type(out).__name__} of shape {tuple(out.shape)}"
    size = f" of {len(out)} items" if hasattr(out, "__len__") else ""
    return f"a {type(out).__name__}{size}"


def score(reward_fn: RewardFn, queries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """Call ``reward_fn`` and validate its output: a finite float32 array, one per response
    (shape ``(N,)``); any other output is a :class:`RewardError` that names the function,
    what it returned and the shape expected."""
    if len(queries) != len(responses):
        raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
    name = getattr(reward_fn, "__name__", type(reward_fn).__name__)
    n = len(responses)
    expected = f"a reward returns one finite float per response, shape ({n},)"
    try:
        out = reward_fn(list(queries), list(responses))
    except RewardError:
        raise
    except Exception as exc:  # re-raised with context, nothing swallowed
        raise RewardError(f"reward function {name!r} raised {type(exc).__name__}: {exc}") from exc
    try:
        arr = np.asarray(out if out is not None else "None", dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise RewardError(
            f"reward function {name!r} must return numbers, got {_describe(out)}: {expected}"
        ) from exc
    # (N,), or N values as a column or a row; a scalar for a batch of one
    if arr.size != n or arr.ndim > 2 or max(arr.shape, default=1) != n:
        raise RewardError(
            f"reward function {name!r} returned {_describe(out)} ({arr.size} values) "
            f"for {n} responses: {expected}"
        )
    arr = arr.reshape(-1)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise RewardError(
            f"reward function {name!r} returned a non-finite value ({arr[bad]}) at index {bad} "
            f"(response {str(responses[bad])[:60]!r}): {expected}"
        )
    return arr


def combine(
    r_pioneer: np.ndarray, r_observer: np.ndarray, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """What (pioneer, observer) receive under ``mode``, from their individual rewards."""
    if mode == "cooperative":
        total = np.asarray(r_pioneer, np.float32) + np.asarray(r_observer, np.float32)
        return total, total.copy()
    if mode == "independent":
        return np.asarray(r_pioneer, np.float32), np.asarray(r_observer, np.float32)
    raise ValueError(f"unknown reward_mode {mode!r}; expected one of {REWARD_MODES}")


def combine_all(own: np.ndarray, mode: str) -> np.ndarray:
    """What each of K roles receives, ``(K, B)``, from their individual rewards ``(K, B)``:
    cooperative, every role the sum of all K; independent, each its own."""
    own = np.asarray(own, np.float32)
    if mode == "cooperative":
        total = own[0].copy()
        for row in own[1:]:
            total = total + row  # in turn order: for K = 2 exactly r(q,a1) + r(q,a2)
        return np.broadcast_to(total, own.shape).copy()
    if mode == "independent":
        return own.copy()
    raise ValueError(f"unknown reward_mode {mode!r}; expected one of {REWARD_MODES}")


def check_mode(mode: str) -> str:
    """Validate a reward mode name at the boundary."""
    if mode not in REWARD_MODES:
        raise ValueError(f"unknown reward_mode {mode!r}; expected one of {REWARD_MODES}")
    return mode


# The named reward functions (vader, vader-gain, hf-classifier, answer-match) follow; each
# factory is registered at the end of this module.


# --------------------------------------------------------------------------- vader


@functools.cache
def _vader_analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_reward() -> RewardFn:
    """VADER's compound score (in [-1, 1]) of ``query + response``; offline, CPU-cheap.

    The analyzer is built once per process and shared.
    """
    analyzer = _vader_analyzer()

    def vader(queries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.array(
            [
                analyzer.polarity_scores(q + r)["compound"]
                for q, r in zip(queries, responses, strict=True)
            ],
            dtype=np.float32,
        )

    return vader


def vader_gain_reward() -> RewardFn:
    """VADER's compound score of ``query + response`` minus that of the query alone: the
    sentiment the response adds to the opening, in [-2, 2].

    For a fixed query the subtracted term is a constant, so the best response is the same
    as under :func:`vader_reward` and a mean over fixed queries moves by the same amount;
    what goes is the query's own sentiment ("This horror movie" scores -0.57 whatever
    follows), a share of the reward's variance over a batch of openings that a learner
    would otherwise have to explain away before it sees the response's effect.
    """
    analyzer = _vader_analyzer()

    def vader_gain(queries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.array(
            [
                analyzer.polarity_scores(q + r)["compound"]
                - analyzer.polarity_scores(q)["compound"]
                for q, r in zip(queries, responses, strict=True)
            ],
            dtype=np.float32,
        )

    return vader_gain


# --------------------------------------------------------------------------- hf-classifier


def _label_index(config: Any, label: str | int) -> int:
    """Index of ``label`` in a classifier's outputs, from ``id2label`` / ``label2id``."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    num = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    if isinstance(label, int) and not isinstance(label, bool):
        if 0 <= label < num:
            return label
        raise ValueError(f"label index {label} out of range for a {num}-label classifier")
    names = {**{v: k for k, v in id2label.items()}, **label2id}
    if label in names:
        return names[label]
    folded = {k.lower(): v for k, v in names.items()}
    if str(label).lower() in folded:
        return folded[str(label).lower()]
    raise ValueError(
        f"label {label!r} not found in the classifier's labels "
        f"(id2label: {id2label}, label2id: {label2id}); pass label= one of them or an index"
    )


def _load_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` as is, or loaded when it is a hub id / local folder."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(os.fspath(tokenizer))
    return tokenizer


def _load_classifier(name: str, tokenizer: Any, device: str | None) -> tuple[Any, Any]:
    """The classifier stored as ``name`` (hub id or folder) and its tokenizer (``name``'s
    own unless given), moved to ``device`` (CUDA when available by default)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        tokenizer = _load_tokenizer(name if tokenizer is None else tokenizer)
        model = AutoModelForSequenceClassification.from_pretrained(name)
    except Exception as exc:  # offline hub, missing folder, not a classifier
        raise RewardError(
            f"could not load the classifier {name!r} ({exc}); offline, pass a local "
            "folder or a loaded model as model=, or use reward='vader'"
        ) from exc
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model, tokenizer


def _classifier(model: Any, tokenizer: Any, device: str | None) -> tuple[Any, Any]:
    """The classifier and its tokenizer, from names or loaded objects, in eval mode."""
    if isinstance(model, (str, os.PathLike)):
        model, tokenizer = _load_classifier(os.fspath(model), tokenizer, device)
    else:
        if tokenizer is None:
            raise ValueError("hf-classifier: pass tokenizer= along with a loaded model")
        tokenizer = _load_tokenizer(tokenizer)
        if device is not None:
            model.to(device)
    model.eval()
    return model, tokenizer


def hf_classifier_reward(
    model: Any = "lvwerra/distilbert-imdb",
    tokenizer: Any = None,
    label: str | int = "POSITIVE",
    batch_size: int = 32,
    device: str | None = None,
    max_length: int = 512,
) -> RewardFn:
    """The raw logit of ``label`` from a text-classification model on ``query + response``
    (the paper's IMDB reward: ``lvwerra/distilbert-imdb``, label ``POSITIVE``).

    ``model`` is a hub id / local folder or a loaded ``*ForSequenceClassification``;
    ``tokenizer`` defaults to the model's own (required with a loaded model). Runs in
    batches of ``batch_size`` under ``torch.no_grad``; ``device`` defaults to CUDA when
    available for a model loaded here, and to the model's own device for a loaded one.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, tokenizer = _classifier(model, tokenizer, device)
    index = _label_index(model.config, label)
    accepted = set(inspect.signature(model.forward).parameters)
    can_pad = tokenizer.pad_token is not None
    step = batch_size if can_pad else 1  # without a pad token, one text at a time

    def hf_classifier(queries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        texts = [q + r for q, r in zip(queries, responses, strict=True)]
        dev = next(model.parameters()).device
        out = np.empty(len(texts), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(texts), step):
                enc = tokenizer(
                    texts[start : start + step],
                    padding=can_pad,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                inputs = {k: v.to(dev) for k, v in enc.items() if k in accepted}
                logits = model(**inputs).logits
                out[start : start + step] = logits[:, index].float().cpu().numpy()
        return out

    return hf_classifier


# --------------------------------------------------------------------------- answer-match

_NUMBER = r"(?:(?<![\w)\]])[-−])?[$€£¥]?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<!\d)\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_MARKERS = (
    re.compile(r"####\s*[:=]?[\s*]*(" + _NUMBER + ")"),
    re.compile(r"answer\s+is\s*[:=]?[\s*]*(" + _NUMBER + ")", re.IGNORECASE),
)


def _clean_number(text: str) -> str:
    return re.sub(r"[\s,$€£¥]", "", text).replace("−", "-")


def extract_answer(text: str | None) -> str | None:
    """The final numeric answer in ``text``, without commas or currency signs, else ``None``.

    An explicit ``#### X`` marker wins, then ``The answer is X``, then the last number:
    ``"... The answer is $1,234."`` -> ``"1234"``; ``"so -3 apples"`` -> ``"-3"``.
    """
    if not text:
        return None
    for marker in _MARKERS:
        found = marker.findall(text)
        if found:
            return _clean_number(found[-1])
    found = _NUMBER_RE.findall(text)
    return _clean_number(found[-1]) if found else None


def _to_decimal(value: str | float | int) -> Decimal | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    text = str(value).strip().rstrip(".")
    if not text:
        return None
    number: Decimal | None
    try:
        number = Decimal(_clean_number(text))
    except InvalidOperation:
        extracted = extract_answer(text)
        number = None if extracted is None else Decimal(extracted)
    return number if number is not None and number.is_finite() else None


def answers_equal(a: str | float | int | None, b: str | float | int | None) -> bool:
    """Whether two answers are the same number (``"18" == "18.00" == "$18"``, ``"1,234" ==
    "1234"``); non-numeric answers are compared as stripped, case-folded text."""
    if a is None or b is None:
        return False
    da, db = _to_decimal(a), _to_decimal(b)
    if da is not None and db is not None:
        return da == db
    return str(a).strip().casefold() == str(b).strip().casefold()


def answer_match_reward() -> RewardFn:
    """1.0 when the response's final number (:func:`extract_answer`) equals the gold answer
    carried by the query (``query.answer``), else 0.0."""

    def answer_match(queries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(responses), dtype=np.float32)
        for i, (q, r) in enumerate(zip(queries, responses, strict=True)):
            gold = getattr(q, "answer", None)
            if gold is None:
                raise ValueError(
                    f"answer-match needs a gold answer, but query {i} ({str(q)[:60]!r}) has "
                    "none; pass Query(text, answer=...) or a query from the task"
                )
            out[i] = float(answers_equal(extract_answer(r), gold))
        return out

    return answer_match


register_reward("vader", vader_reward)
register_reward("vader-gain", vader_gain_reward)
register_reward("hf-classifier", hf_classifier_reward)
register_reward("answer-match", answer_match_reward)
