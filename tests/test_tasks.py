"""Tasks: imdb, gsm8k (local files, the shared data, the hub path), sentiment, arith."""

from __future__ import annotations

import csv
import json
import re
from fractions import Fraction

import numpy as np
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from cory_env import templates
from cory_env.rewards import score
from cory_env.tasks import Query, Task, available_tasks, make_task
from cory_env.tasks import arith as arith_mod
from cory_env.tasks import imdb as imdb_mod
from cory_env.tasks import sentiment as sentiment_mod
from cory_env.tasks.loading import DataUnavailableError, read_records

LONG = "x" * 200  # pads a review past the 200-character filter

REVIEWS = [
    f"A wonderful little production.<br /><br />The filming technique is {LONG}",
    f"Basically there's a family where a little boy thinks {LONG}",
    "Too short to keep.",
    f"Petter Mattei's Love in the Time of Money is a visually stunning film {LONG}",
]


def test_registry():
    assert {"imdb", "gsm8k", "sentiment", "arith"} <= set(available_tasks())


# ------------------------------------------------------------------ imdb


def _write(path, rows, column):
    ext = path.suffix
    if ext == ".csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[column, "sentiment"])
            w.writeheader()
            w.writerows({column: r, "sentiment": "positive"} for r in rows)
    elif ext == ".json":
        path.write_text(json.dumps([{column: r} for r in rows]))
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps({column: r}) + "\n" for r in rows))
    elif ext == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({column: rows}), path)
    return path


@pytest.mark.parametrize(
    ("name", "column"),
    [("r.csv", "review"), ("r.json", "text"), ("r.jsonl", "review"), ("r.parquet", "text")],
)
def test_imdb_local_formats(tmp_path, name, column):
    task = make_task("imdb", path=_write(tmp_path / name, REVIEWS, column), eval_fraction=0.0)
    assert task.name == "imdb" and len(task.train_queries) == 3  # the short review is dropped
    starts = [imdb_mod.clean_review(r) for r in REVIEWS]
    for q in task.train_queries:
        assert isinstance(q, Query) and q.answer is None
        assert 2 <= len(q.split()) <= 8 and "<br" not in q
        assert any(s.startswith(q) for s in starts)


def test_imdb_json_variants(tmp_path):
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps({"text": REVIEWS}))
    lines = tmp_path / "lines.json"
    lines.write_text("\n".join(json.dumps({"text": r}) for r in REVIEWS))
    assert read_records(columns) == read_records(lines) == [{"text": r} for r in REVIEWS]


def test_imdb_prompts_and_generation(tmp_path):
    task = make_task("imdb", path=_write(tmp_path / "r.csv", REVIEWS, "review"))
    assert task.pioneer_prompt("This film") == "This film"
    assert task.observer_prompt("This film", " was dull.") == (
        'I can make this sentence "This film was dull." more positive: This film'
    )
    g = task.generation
    assert (g.min_new_tokens, g.max_new_tokens, g.top_k, g.top_p, g.temperature) == (
        4,
        16,
        0,
        1.0,
        1.0,
    )
    assert g.max_prompt_tokens == imdb_mod.WORD_PROMPT_TOKENS


def test_imdb_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        make_task("imdb", path=tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="no 'text' or 'review' column"):
        make_task("imdb", path=_write(tmp_path / "r.csv", REVIEWS, "body"))
    (tmp_path / "r.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported data file extension"):
        make_task("imdb", path=tmp_path / "r.txt")
    with pytest.raises(ValueError, match="no review longer than 200"):
        make_task("imdb", path=_write(tmp_path / "s.jsonl", ["short"], "text"))


def _offline(*args, **kwargs):
    raise ConnectionError("no network")


@pytest.mark.parametrize("name", ["imdb", "gsm8k"])
def test_hub_unreachable_says_pass_path(monkeypatch, name):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", _offline)
    with pytest.raises(DataUnavailableError, match=r"no network.*pass path="):
        make_task(name)


def test_imdb_hub_path(monkeypatch):
    import datasets

    calls = []

    def fake(name, config=None, split=None):
        calls.append((name, config, split))
        return [{"text": r, "label": 1} for r in REVIEWS]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    task = make_task("imdb", eval_fraction=0.0)
    assert calls == [("stanfordnlp/imdb", None, "train")] and len(task.train_queries) == 3


def test_imdb_shared_data(shared_data):
    path = shared_data / "imdb" / "reviews_2000.csv"
    with path.open(newline="") as f:
        reviews = [r["review"] for r in csv.DictReader(f)]
    kept = [imdb_mod.clean_review(r) for r in reviews if len(imdb_mod.clean_review(r)) > 200]
    task = make_task("imdb", path=path, seed=3)
    queries = [*task.train_queries, *task.eval_queries]
    assert len(queries) == len(kept) and len(task.eval_queries) == round(0.1 * len(kept))
    lengths = [len(q.split()) for q in queries]
    assert min(lengths) == 2 and max(lengths) == 8  # every length of 2..8 is drawn
    assert sorted(queries) == sorted(
        " ".join(r.split()[: len(q.split())])
        for r, q in zip(kept, imdb_mod.review_openings(reviews, seed=3), strict=True)
    )
    again = make_task("imdb", path=path, seed=3)
    assert list(again.train_queries) == list(task.train_queries)
    other = make_task("imdb", path=path, seed=4)
    assert list(other.train_queries) != list(task.train_queries)
    assert len(make_task("imdb", path=path, limit=50, eval_fraction=0.2).train_queries) == 40


def test_imdb_tokenizer_cut(shared_data, tokenizer):
    task = make_task(
        "imdb", path=shared_data / "imdb" / "reviews_2000.csv", tokenizer=tokenizer, limit=200
    )
    assert task.generation.max_prompt_tokens == 64
    for q in task.train_queries:
        n = len(tokenizer.encode(q, add_special_tokens=False))
        assert 2 <= n <= 8 + 1  # decode/re-encode may shift a merge by one


def test_imdb_rewards(tmp_path, tokenizer):
    path = _write(tmp_path / "r.csv", REVIEWS, "review")
    task = make_task("imdb", path=path)
    want = SentimentIntensityAnalyzer().polarity_scores("I loved it")["compound"]
    assert score(task.reward_fn, ["I "], ["loved it"])[0] == pytest.approx(want, abs=1e-6)
    custom = make_task("imdb", path=path, reward=lambda q, r: np.ones(len(q)))
    assert custom.reward_fn(["a"], ["b"])[0] == 1.0
    with pytest.raises(ValueError, match="unknown reward"):
        make_task("imdb", path=path, reward="nope")


def test_imdb_hf_classifier_reward(tmp_path, tokenizer):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=16,
        hidden_dim=32,
        n_layers=1,
        n_heads=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    clf = DistilBertForSequenceClassification(cfg)
    task = make_task(
        "imdb",
        path=_write(tmp_path / "r.csv", REVIEWS, "review"),
        reward="hf-classifier",
        reward_model=clf,
        reward_kwargs={"tokenizer": tokenizer},
    )
    out = score(task.reward_fn, ["This film", "The plot"], [" is great", " is bad"])
    assert out.shape == (2,) and out[0] != out[1]


# ------------------------------------------------------------------ gsm8k


def test_gsm8k_shared_data(shared_data):
    path = shared_data / "gsm8k" / "train.jsonl"
    rows = [json.loads(line) for line in path.open()]
    task = make_task("gsm8k", path=path)
    assert len(task.train_queries) + len(task.eval_queries) == len(rows)
    assert len(task.eval_queries) == round(0.1 * len(rows))
    gold = {
        r["question"].strip(): r["answer"].split("####")[-1].strip().replace(",", "") for r in rows
    }
    for q in [*task.train_queries, *task.eval_queries]:
        assert q.answer == gold[str(q)]
    first = make_task("gsm8k", path=path, limit=1, eval_fraction=0.0).train_queries[0]
    assert first == rows[0]["question"] and first.answer == "72"


def test_gsm8k_prompts_and_generation(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "How many?", "answer": "2 + 2 = 4\n#### 4"}) + "\n")
    task = make_task("gsm8k", path=path, eval_fraction=0.0)
    assert task.pioneer_prompt("How many?") == templates.GSM8K_SHOT + "Question: How many?\nAnswer:"
    assert task.observer_prompt("How many?", " It is 4.") == (
        templates.GSM8K_SHOT + "Question: How many?\nReference:  It is 4.\nAnswer:"
    )
    assert task.pioneer_prompt("How many?").startswith(
        "Question: Natalia sold clips to 48 of her friends in April"
    )
    g = task.generation
    assert g.max_new_tokens == 256 and g.stop_strings == templates.GSM8K_STOP
    assert g.max_prompt_tokens >= 256 + 300
    assert (
        make_task("gsm8k", path=path, max_new_tokens=64).generation.max_prompt_tokens
        == g.max_prompt_tokens - 192
    )
    q = task.train_queries[0]
    assert score(task.reward_fn, [q, q], ["The answer is 4.", "The answer is 5."]).tolist() == [
        1.0,
        0.0,
    ]


def test_gsm8k_local_files(tmp_path):
    rows = [
        {"question": "Big?", "answer": "1000 + 234 = 1,234\n#### 1,234"},
        {"question": "Cold?", "answer": "#### -7"},
        {"question": "Half?", "answer": "#### 0.5"},
    ]
    _write_rows = {
        ".jsonl": lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows)),
        ".json": lambda p: p.write_text(json.dumps(rows)),
        ".csv": lambda p: p.write_text(
            "question,answer\n" + "".join(f'"{r["question"]}","{r["answer"]}"\n' for r in rows)
        ),
    }
    for ext, write in _write_rows.items():
        path = tmp_path / f"g{ext}"
        write(path)
        task = make_task("gsm8k", path=path, eval_path=path)
        assert [(str(q), q.answer) for q in task.train_queries] == [
            ("Big?", "1234"),
            ("Cold?", "-7"),
            ("Half?", "0.5"),
        ]
        assert list(task.eval_queries) == list(task.train_queries)


def test_gsm8k_errors(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "Q?", "solution": "4"}) + "\n")
    with pytest.raises(ValueError, match="no 'answer' column"):
        make_task("gsm8k", path=path)
    path.write_text(json.dumps({"question": "Q?", "answer": "no idea"}) + "\n")
    with pytest.raises(ValueError, match="row 0: no numeric answer"):
        make_task("gsm8k", path=path)
    with pytest.raises(FileNotFoundError):
        make_task("gsm8k", path=tmp_path / "none.jsonl")


def test_gsm8k_hub_path(monkeypatch):
    import datasets

    def fake(name, config=None, split=None):
        assert (name, config) == ("openai/gsm8k", "main")
        n = 5 if split == "train" else 2
        return [{"question": f"{split} {i}?", "answer": f"#### {i}"} for i in range(n)]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    task = make_task("gsm8k")
    assert [str(q) for q in task.train_queries] == [f"train {i}?" for i in range(5)]
    assert [q.answer for q in task.eval_queries] == ["0", "1"]
    assert len(make_task("gsm8k", limit=3).train_queries) == 3


# ------------------------------------------------------------------ sentiment


def test_sentiment_openings():
    openings = sentiment_mod.load_openings()
    assert len(openings) >= 300 and len(set(openings)) == len(openings)
    assert all(2 <= len(o.split()) <= 8 and o == o.strip() for o in openings)
    sia = SentimentIntensityAnalyzer()
    compound = [sia.polarity_scores(o)["compound"] for o in openings]
    assert sum(c > 0.05 for c in compound) >= 30 and sum(c < -0.05 for c in compound) >= 30


def test_sentiment_task():
    task = make_task("sentiment")
    openings = sentiment_mod.load_openings()
    train, evals = list(task.train_queries), list(task.eval_queries)
    assert len(evals) == round(0.1 * len(openings)) and not set(train) & set(evals)
    assert sorted(train + evals) == sorted(openings)
    assert list(make_task("sentiment").eval_queries) == evals  # deterministic
    assert list(make_task("sentiment", seed=1).eval_queries) != evals
    assert task.pioneer_template == templates.IMDB_PIONEER
    assert task.observer_template == templates.IMDB_OBSERVER
    g = task.generation
    assert (g.min_new_tokens, g.max_new_tokens, g.top_k, g.top_p) == (4, 8, 0, 1.0)
    r = score(task.reward_fn, ["This movie was", "This movie was"], [" wonderful!", " terrible."])
    assert r[0] > 0.5 and r[1] < -0.3
    # the default reward is vader-gain: the opening's own sentiment is taken out
    sia = SentimentIntensityAnalyzer()
    q, a = "What a waste of", " a great evening, I loved it"
    (gain,) = score(task.reward_fn, [q], [a])
    assert gain == pytest.approx(
        sia.polarity_scores(q + a)["compound"] - sia.polarity_scores(q)["compound"], abs=1e-6
    )
    (plain,) = score(make_task("sentiment", reward="vader").reward_fn, [q], [a])
    assert plain == pytest.approx(sia.polarity_scores(q + a)["compound"], abs=1e-6)
    assert len(make_task("sentiment", limit=20, eval_fraction=0.0).train_queries) == 20


# ------------------------------------------------------------------ arith

_N = r"(\d+)"
SOLVERS = {  # an independent reading of each template: regex over the question, then arithmetic
    "shop1": (rf"buys {_N} .* cost \${_N} each", lambda n, p: n * p),
    "share1": (rf"has {_N} .* among {_N} friends", lambda t, k: t / k),
    "age1": (rf"is {_N} years old\. .* is {_N} years older", lambda a, d: a + d),
    "rate1": (rf"travels {_N} miles per hour.* in {_N} hours", lambda s, h: s * h),
    "give1": (rf"had {_N} .* gave away {_N}", lambda a, b: a - b),
    "change2": (
        rf"buys {_N} .* at \${_N} each and pays with a \${_N} bill",
        lambda n, p, b: b - n * p,
    ),
    "age2": (
        rf"is {_N} years old\. .* twice as old .* is {_N} years younger",
        lambda a, d: 2 * a - d,
    ),
    "read2": (
        rf"reads {_N} pages a day for {_N} days, then reads {_N} more",
        lambda p, d, e: p * d + e,
    ),
    "bake2": (
        rf"bakes {_N} trays of {_N} cookies .* among {_N} friends",
        lambda t, c, k: t * c / k,
    ),
    "save2": (
        rf"saves \${_N} every week for {_N} weeks, then spends \${_N}",
        lambda s, w, c: s * w - c,
    ),
    "shop3": (
        rf"buys {_N} notebooks at \${_N} each and {_N} pens at \${_N} each",
        lambda a, p, b, q: a * p + b * q,
    ),
    "farm3": (
        rf"has {_N} chickens and buys {_N} more\. .* then {_N} chicks",
        lambda a, b, h: (a + b) / 2 + h,
    ),
    "factory3": (
        rf"makes {_N} toys an hour and works {_N} hours .* Each day {_N} .* in {_N} days",
        lambda r, h, b, d: (r * h - b) * d,
    ),
    "age3": (
        rf"is {_N} years old\. .* is {_N} times as old .* is {_N} years younger .* in {_N} years",
        lambda a, t, d, y: a * t - d + y,
    ),
    "share3": (
        rf"has {_N} apples and picks {_N} more\. .* eats {_N} .* among {_N} friends",
        lambda a, p, e, k: (a + p - e) / k,
    ),
}


def test_arith_answers_verified_independently():
    problems = arith_mod.generate_problems(1500, seed=7)
    assert {p.kind for p in problems} == set(SOLVERS)
    for p in problems:
        pattern, solve = SOLVERS[p.kind]
        m = re.search(pattern, p.question)
        assert m, p.question
        nums = [int(x) for x in m.groups()]
        # exact rational arithmetic: a division that is not whole cannot equal the int answer
        assert solve(*map(Fraction, nums)) == p.answer >= 0, p.question
        assert p.kind.endswith(str(p.steps))


def test_arith_task():
    task = make_task("arith", num_train=300, num_eval=50, seed=3)
    train, evals = list(task.train_queries), list(task.eval_queries)
    assert len(train) == 300 and len(evals) == 50
    assert len(set(train) | set(evals)) == 350  # distinct, train and eval disjoint
    assert [
        (str(q), q.answer)
        for q in make_task("arith", num_train=300, num_eval=50, seed=3).train_queries
    ] == [(str(q), q.answer) for q in train]
    assert list(make_task("arith", num_train=300, num_eval=50, seed=4).train_queries) != train
    assert task.pioneer_template == templates.GSM8K_PIONEER
    assert task.observer_template == templates.GSM8K_OBSERVER
    assert task.generation.stop_strings == templates.GSM8K_STOP
    responses = [f"So it is {int(q.answer) + 1} first. The answer is {q.answer}." for q in evals]
    assert score(task.reward_fn, evals, responses).tolist() == [1.0] * 50
    assert score(task.reward_fn, evals, ["The answer is -1."] * 50).tolist() == [0.0] * 50


def test_arith_steps():
    one = arith_mod.generate_problems(200, seed=0, max_steps=1)
    assert {p.steps for p in one} == {1}
    three = arith_mod.generate_problems(600, seed=0)
    assert {p.steps for p in three} == {1, 2, 3}
    with pytest.raises(ValueError, match="max_steps"):
        make_task("arith", max_steps=4)


SINGLE_DIGIT_SOLVERS = {
    "add1d": (rf"has {_N} \w+ and gets {_N} more\.", lambda a, b: a + b),
    "sub1d": (rf"has {_N} \w+ and gives away {_N}\.", lambda a, b: a - b),
    "shop1d": (rf"buys {_N} [\w ]+ that cost \${_N} each", lambda n, p: n * p),
    "age1d": (rf"is {_N} years old\. .* is {_N} years older", lambda a, d: a + d),
}


def test_arith_single_digit_operands_and_short_answers():
    problems = arith_mod.generate_problems(400, seed=1, max_steps=1, single_digit=True)
    assert {p.kind for p in problems} == set(SINGLE_DIGIT_SOLVERS)
    for p in problems:
        pattern, solve = SINGLE_DIGIT_SOLVERS[p.kind]
        nums = [int(x) for x in re.search(pattern, p.question).groups()]
        assert all(1 <= n <= 9 for n in nums) and solve(*nums) == p.answer >= 0, p.question
        assert p.steps == 1
    with pytest.raises(ValueError, match="single_digit problems take one operation"):
        make_task("arith", single_digit=True)  # max_steps defaults to 3
    task = make_task(
        "arith", num_train=50, num_eval=10, max_steps=1, single_digit=True, short_answers=True
    )
    assert task.pioneer_template == templates.SHORT_PIONEER and "Reference: {a1}" in (
        task.observer_template
    )
    assert task.generation.max_new_tokens == 32
    assert task.generation.stop_strings == templates.GSM8K_STOP
    # the example's own answer is one the reward accepts
    example = templates.SHORT_SHOT.split("Answer:")[1].strip()
    q = type(task.train_queries[0])("How many?", answer="7")
    assert score(task.reward_fn, [q], [example]).tolist() == [1.0]
    assert make_task("arith", num_train=5, num_eval=1).generation.max_new_tokens == 96


def test_task_objects_pass_through():
    task = make_task("arith", num_train=5, num_eval=1)
    assert isinstance(task, Task) and make_task(task) is task
    assert task.lookup(str(task.train_queries[0])).answer == task.train_queries[0].answer


def test_task_options_reach_the_tasks_factory_and_bad_ones_are_refused():
    from agents.run.config import TrainConfig
    from agents.run.setup import task_data
    from agents.run.validate import task_options

    assert task_options("max_steps=1, num_eval=20,flag=true,name=x,rate=0.5") == {
        "max_steps": 1,
        "num_eval": 20,
        "flag": True,
        "name": "x",
        "rate": 0.5,
    }
    task = task_data(TrainConfig(task="arith", task_options="max_steps=1,num_eval=20"))
    expected = arith_mod.arith_task(max_steps=1, num_eval=20)
    assert (
        list(task.queries("eval")) == list(expected.queries("eval"))
        and len(expected.queries("eval")) == 20
    )
    with pytest.raises(ValueError, match="key=value"):
        TrainConfig(task="arith", task_options="max_steps")
    with pytest.raises(ValueError, match=r"does not take these options \['bogus'\]"):
        task_data(TrainConfig(task="arith", task_options="bogus=1"))


def _cory_env_imports() -> dict[str, set[str]]:
    """Each module of ``cory_env`` with the ``cory_env`` modules it imports (lazy imports in
    functions included; ``from cory_env import templates`` names the module ``templates``)."""
    import ast
    from pathlib import Path

    import cory_env

    root = Path(cory_env.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                edges |= subs or {node.module}
        graph[name] = edges - {name}
    return graph


def test_cory_env_modules_import_each_other_without_a_circle():
    graph = _cory_env_imports()
    assert "cory_env.tasks.base" in graph["cory_env.tasks.imdb"]
    assert "cory_env.rewards" in graph["cory_env.tasks.base"]  # tasks use rewards ...
    assert not any(
        m.startswith("cory_env.tasks") for m in graph["cory_env.rewards"]
    )  # ... not back
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in sorted(graph[name]):
                visit(dep, (*path, name))
            done.add(name)

    for name in sorted(graph):
        visit(name, ())
