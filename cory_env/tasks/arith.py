"""Task ``arith``: GSM8K-style word problems generated offline from seeded templates.

Each problem takes 1 to ``max_steps`` (at most 3) arithmetic operations and has an exact,
non-negative integer answer; several templates per step count (shopping, sharing, rates,
ages, saving...). Same prompt format and ``answer-match`` reward as ``gsm8k``, so it is a
cheap, dependency-free stand-in for it. Deterministic for a seed; train and eval
questions are distinct.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass

from cory_env import templates
from cory_env.rewards import make_reward
from cory_env.tasks.base import GenerationConfig, Query, Task, register_task

NAMES = (
    "Ava",
    "Ben",
    "Carla",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Imani",
    "Jonas",
    "Keiko",
    "Liam",
    "Maya",
    "Nico",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
)
ITEMS = ("notebooks", "pencils", "apples", "tickets", "sandwiches", "toy cars", "mugs", "plants")
THINGS = ("marbles", "stickers", "cards", "shells", "stamps", "beads")
MAX_STEPS = 3

GENERATION = GenerationConfig(
    max_new_tokens=96,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    stop_strings=templates.GSM8K_STOP,
    max_prompt_tokens=288,
)
"""Short problems need short answers, so up to 96 new tokens; 288 prompt tokens hold the
1-shot example (~90), a question (< 70) and a 96-token reference answer."""
SHORT_GENERATION = dataclasses.replace(GENERATION, max_new_tokens=32, max_prompt_tokens=160)
"""``short_answers``: a one-line example answers in ~12 tokens, so 32 new tokens; 160 prompt
tokens hold the example (~40), a question (< 40) and a 32-token reference answer."""


@dataclass(frozen=True)
class Problem:
    """A generated problem: ``kind`` names its template, ``steps`` its operation count."""

    question: str
    answer: int
    kind: str
    steps: int


Template = Callable[[random.Random], tuple[str, int]]


def _two_names(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(NAMES, 2)
    return a, b


# ---------------------------------------------------------------- one operation


def shop1(rng: random.Random) -> tuple[str, int]:
    name, item, n, p = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, 9), rng.randint(2, 15)
    return f"{name} buys {n} {item} that cost ${p} each. How many dollars does {name} spend?", n * p


def share1(rng: random.Random) -> tuple[str, int]:
    name, thing, each, k = (
        rng.choice(NAMES),
        rng.choice(THINGS),
        rng.randint(2, 12),
        rng.randint(2, 8),
    )
    return (
        f"{name} has {each * k} {thing} and shares them equally among {k} friends. "
        f"How many {thing} does each friend get?",
        each,
    )


def age1(rng: random.Random) -> tuple[str, int]:
    a, b = _two_names(rng)
    age, d = rng.randint(5, 40), rng.randint(2, 30)
    return f"{a} is {age} years old. {b} is {d} years older than {a}. How old is {b}?", age + d


def rate1(rng: random.Random) -> tuple[str, int]:
    speed, hours = rng.randint(20, 70), rng.randint(2, 6)
    return (
        f"A train travels {speed} miles per hour. How many miles does it travel in {hours} hours?",
        speed * hours,
    )


def give1(rng: random.Random) -> tuple[str, int]:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    have, give = rng.randint(20, 90), rng.randint(1, 19)
    return (
        f"{name} had {have} {thing} and gave away {give} of them. "
        f"How many {thing} does {name} have left?",
        have - give,
    )


# ---------------------------------------------------------------- two operations


def change2(rng: random.Random) -> tuple[str, int]:
    name, item, n, p = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, 6), rng.randint(2, 9)
    bill = next(b for b in (20, 50, 100) if b >= n * p)
    return (
        f"{name} buys {n} {item} at ${p} each and pays with a ${bill} bill. "
        f"How much change, in dollars, does {name} get?",
        bill - n * p,
    )


def age2(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.sample(NAMES, 3)
    age, d = rng.randint(5, 30), rng.randint(2, 9)
    return (
        f"{a} is {age} years old. {b} is twice as old as {a}. {c} is {d} years younger than "
        f"{b}. How old is {c}?",
        2 * age - d,
    )


def read2(rng: random.Random) -> tuple[str, int]:
    name, per_day, days, extra = (
        rng.choice(NAMES),
        rng.randint(5, 40),
        rng.randint(2, 7),
        rng.randint(3, 60),
    )
    return (
        f"{name} reads {per_day} pages a day for {days} days, then reads {extra} more pages on "
        f"the weekend. How many pages does {name} read in total?",
        per_day * days + extra,
    )


def bake2(rng: random.Random) -> tuple[str, int]:
    name, trays, per_tray = rng.choice(NAMES), rng.randint(2, 5), rng.randint(2, 12)
    total = trays * per_tray
    k = rng.choice([d for d in range(2, 9) if total % d == 0])  # trays itself always divides
    return (
        f"{name} bakes {trays} trays of {per_tray} cookies and shares them equally among {k} "
        f"friends. How many cookies does each friend get?",
        total // k,
    )


def save2(rng: random.Random) -> tuple[str, int]:
    name, weekly, weeks = rng.choice(NAMES), rng.randint(5, 25), rng.randint(3, 10)
    cost = rng.randint(1, weekly * weeks)
    return (
        f"{name} saves ${weekly} every week for {weeks} weeks, then spends ${cost} on a "
        f"bicycle. How many dollars does {name} have left?",
        weekly * weeks - cost,
    )


# ---------------------------------------------------------------- three operations


def shop3(rng: random.Random) -> tuple[str, int]:
    name = rng.choice(NAMES)
    a, p, b, q = rng.randint(2, 6), rng.randint(2, 9), rng.randint(2, 8), rng.randint(1, 5)
    return (
        f"{name} buys {a} notebooks at ${p} each and {b} pens at ${q} each. "
        f"How many dollars does {name} spend in total?",
        a * p + b * q,
    )


def farm3(rng: random.Random) -> tuple[str, int]:
    have, bought, hatched = rng.randint(10, 60), rng.randint(2, 40), rng.randint(1, 15)
    bought += (have + bought) % 2  # an even flock, so half of it is whole
    return (
        f"A farmer has {have} chickens and buys {bought} more. He sells half of all his "
        f"chickens, and then {hatched} chicks hatch. How many chickens does he have now?",
        (have + bought) // 2 + hatched,
    )


def factory3(rng: random.Random) -> tuple[str, int]:
    rate, hours, days = rng.randint(5, 30), rng.randint(4, 10), rng.randint(2, 6)
    bad = rng.randint(2, rate)
    return (
        f"A workshop makes {rate} toys an hour and works {hours} hours a day. Each day {bad} "
        f"of the toys are faulty and thrown away. How many good toys does it make in {days} days?",
        (rate * hours - bad) * days,
    )


def age3(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.sample(NAMES, 3)
    age, times, d, years = (
        rng.randint(3, 15),
        rng.randint(2, 4),
        rng.randint(2, 5),
        rng.randint(2, 20),
    )
    return (
        f"{a} is {age} years old. {b} is {times} times as old as {a}. {c} is {d} years younger "
        f"than {b}. How old will {c} be in {years} years?",
        times * age - d + years,
    )


def share3(rng: random.Random) -> tuple[str, int]:
    name, k, each = rng.choice(NAMES), rng.randint(2, 6), rng.randint(2, 12)
    ate = rng.randint(1, 9)
    have = rng.randint(ate, ate + k * each - 1)
    picked = k * each + ate - have
    return (
        f"{name} has {have} apples and picks {picked} more. {name} eats {ate} of them and "
        f"shares the rest equally among {k} friends. How many apples does each friend get?",
        each,
    )


# ------------------------------------------------- one operation, single-digit operands


def add1d(rng: random.Random) -> tuple[str, int]:
    name, thing, a, b = rng.choice(NAMES), rng.choice(THINGS), rng.randint(1, 9), rng.randint(1, 9)
    return (
        f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?",
        a + b,
    )


def sub1d(rng: random.Random) -> tuple[str, int]:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a = rng.randint(2, 9)
    b = rng.randint(1, a - 1)
    return (
        f"{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have left?",
        a - b,
    )


def mul1d(rng: random.Random) -> tuple[str, int]:
    name, item, n, p = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, 9), rng.randint(2, 9)
    return f"{name} buys {n} {item} that cost ${p} each. How many dollars does {name} spend?", n * p


def age1d(rng: random.Random) -> tuple[str, int]:
    a, b = _two_names(rng)
    age, d = rng.randint(2, 9), rng.randint(1, 9)
    return f"{a} is {age} years old. {b} is {d} years older than {a}. How old is {b}?", age + d


SINGLE_DIGIT: dict[str, Template] = {"add": add1d, "sub": sub1d, "shop": mul1d, "age": age1d}
"""One-operation templates whose operands are single digits (``single_digit=true``)."""


TEMPLATES: dict[int, dict[str, Template]] = {
    1: {"shop": shop1, "share": share1, "age": age1, "rate": rate1, "give": give1},
    2: {"change": change2, "age": age2, "read": read2, "bake": bake2, "save": save2},
    3: {"shop": shop3, "farm": farm3, "factory": factory3, "age": age3, "share": share3},
}


def generate_problem(rng: random.Random, steps: int, single_digit: bool = False) -> Problem:
    """One problem of ``steps`` operations from a template drawn with ``rng``; with
    ``single_digit``, a one-operation problem on single-digit operands."""
    if steps not in TEMPLATES:
        raise ValueError(f"steps must be in 1..{MAX_STEPS}, got {steps}")
    if single_digit and steps != 1:
        raise ValueError(f"single_digit problems take one operation, got steps={steps}")
    table = SINGLE_DIGIT if single_digit else TEMPLATES[steps]
    kind = rng.choice(sorted(table))
    question, answer = table[kind](rng)
    return Problem(question, answer, f"{kind}{steps}" + ("d" if single_digit else ""), steps)


def generate_problems(
    n: int, seed: int = 0, max_steps: int = MAX_STEPS, single_digit: bool = False
) -> list[Problem]:
    """``n`` distinct problems, the step count uniform in ``1..max_steps``."""
    if not 1 <= max_steps <= MAX_STEPS:
        raise ValueError(f"max_steps must be in 1..{MAX_STEPS}, got {max_steps}")
    if single_digit and max_steps != 1:
        raise ValueError(
            f"single_digit problems take one operation: set max_steps=1, got {max_steps}"
        )
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Problem] = []
    for _ in range(100 * n + 100):
        if len(out) == n:
            return out
        problem = generate_problem(rng, rng.randint(1, max_steps), single_digit)
        if problem.question not in seen:
            seen.add(problem.question)
            out.append(problem)
    raise ValueError(f"could not generate {n} distinct problems with max_steps={max_steps}")


def arith_task(
    num_train: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    max_steps: int = 3,
    single_digit: bool = False,
    short_answers: bool = False,
) -> Task:
    """The arith task: ``num_train`` + ``num_eval`` distinct generated problems (seeded);
    ``single_digit`` (with ``max_steps=1``): one operation on single-digit operands;
    ``short_answers``: a one-line worked example in the prompt and up to 32 new tokens."""
    if num_train < 1 or num_eval < 0:
        raise ValueError(f"need num_train >= 1 and num_eval >= 0, got {num_train}, {num_eval}")
    problems = generate_problems(num_train + num_eval, seed, max_steps, single_digit)
    queries = [Query(p.question, answer=str(p.answer)) for p in problems]
    pioneer, observer, chain = (
        (templates.SHORT_PIONEER, templates.SHORT_OBSERVER, templates.SHORT_CHAIN)
        if short_answers
        else (templates.GSM8K_PIONEER, templates.GSM8K_OBSERVER, templates.GSM8K_CHAIN)
    )
    operands = "single-digit operands" if single_digit else f"1-{max_steps} step"
    return Task(
        name="arith",
        train_queries=queries[:num_train],
        eval_queries=queries[num_train:],
        reward_fn=make_reward("answer-match"),
        pioneer_template=pioneer,
        observer_template=observer,
        chain_template=chain,
        chain_answer=templates.GSM8K_CHAIN_ANSWER,
        generation=SHORT_GENERATION if short_answers else GENERATION,
        description=f"Generated word problems ({operands}"
        + (", short answers" if short_answers else "")
        + "); reward: exact answer.",
    )


register_task("arith", arith_task)
