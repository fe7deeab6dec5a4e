"""Concrete rewards: vader, hf-classifier, answer-match, extract_answer, answers_equal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from cory_env import rewards
from cory_env.rewards import (
    RewardError,
    answers_equal,
    available_rewards,
    extract_answer,
    make_reward,
    score,
)
from cory_env.tasks import Query


def test_registered_names():
    assert {"vader", "vader-gain", "hf-classifier", "answer-match"} <= set(available_rewards())


# ------------------------------------------------------------------ vader


def test_vader_equals_vadersentiment_on_query_plus_response():
    queries = ["This movie was", "I hated", "The plot"]
    responses = [" wonderful and moving.", " every minute of it.", " is set in Paris."]
    got = score(make_reward("vader"), queries, responses)
    sia = SentimentIntensityAnalyzer()
    want = [sia.polarity_scores(q + r)["compound"] for q, r in zip(queries, responses, strict=True)]
    assert got.dtype == np.float32 and got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_vader_signs_and_cache():
    fn = make_reward("vader")
    pos, neg, neutral = fn(
        ["This film"] * 3,
        [" is great, I loved it!", " is awful and boring.", " is 90 minutes long"],
    )
    assert pos > 0.5 and neg < -0.5 and neutral == 0.0
    assert make_reward("vader") is not fn  # a new function each time...
    assert rewards._vader_analyzer() is rewards._vader_analyzer()  # ...over one cached analyzer


def test_vader_gain_removes_the_query_own_sentiment():
    queries = ["This horror movie", "What a waste of", "The plot"]
    responses = [" was wonderful.", " time and money.", " is set in Paris."]
    got = score(make_reward("vader-gain"), queries, responses)
    sia = SentimentIntensityAnalyzer()
    want = [
        sia.polarity_scores(q + r)["compound"] - sia.polarity_scores(q)["compound"]
        for q, r in zip(queries, responses, strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert sia.polarity_scores("This horror movie")["compound"] < -0.5  # the opening alone
    assert got[0] > 0.5  # a positive answer gains even after a negative opening
    assert got[2] == 0.0  # a neutral answer after a neutral opening adds nothing
    # same queries: the gain and the plain score differ by a per-query constant
    other = [" was awful.", " a lovely afternoon.", " is great."]
    plain, gain = make_reward("vader"), make_reward("vader-gain")
    np.testing.assert_allclose(
        plain(queries, other) - gain(queries, other),
        plain(queries, responses) - gain(queries, responses),
        atol=1e-6,
    )


# ------------------------------------------------------------------ hf-classifier


@pytest.fixture(scope="module")
def classifier(tokenizer):
    torch.manual_seed(0)
    cfg = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=4,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    return DistilBertForSequenceClassification(cfg).eval()


def _logits_by_hand(model, tokenizer, texts):
    out = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer.encode(text)])
            out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0])
    return torch.stack(out).numpy()


QUERIES = ["This movie was", "I loved this film", "The plot"]
RESPONSES = [
    " great and the acting was wonderful.",
    ",",
    " was boring and the ending was terrible.",
]


def test_hf_classifier_returns_raw_label_logit(classifier, tokenizer):
    fn = make_reward("hf-classifier", model=classifier, tokenizer=tokenizer, batch_size=2)
    got = score(fn, QUERIES, RESPONSES)  # 3 texts in batches of 2, padded
    texts = [q + r for q, r in zip(QUERIES, RESPONSES, strict=True)]
    logits = _logits_by_hand(classifier, tokenizer, texts)
    np.testing.assert_allclose(got, logits[:, 1], atol=1e-5)
    neg = make_reward("hf-classifier", model=classifier, tokenizer=tokenizer, label="negative")
    np.testing.assert_allclose(neg(QUERIES, RESPONSES), logits[:, 0], atol=1e-5)
    by_index = make_reward("hf-classifier", model=classifier, tokenizer=tokenizer, label=1)
    np.testing.assert_allclose(by_index(QUERIES, RESPONSES), logits[:, 1], atol=1e-5)


def test_hf_classifier_from_a_saved_folder(classifier, tokenizer, tmp_path):
    classifier.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    fn = make_reward("hf-classifier", model=str(tmp_path), device="cpu")
    want = make_reward("hf-classifier", model=classifier, tokenizer=tokenizer)(QUERIES, RESPONSES)
    np.testing.assert_allclose(fn(QUERIES, RESPONSES), want, atol=1e-5)


def test_hf_classifier_errors(classifier, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="label 'HAPPY' not found"):
        make_reward("hf-classifier", model=classifier, tokenizer=tokenizer, label="HAPPY")
    with pytest.raises(ValueError, match="out of range"):
        make_reward("hf-classifier", model=classifier, tokenizer=tokenizer, label=2)
    with pytest.raises(ValueError, match="tokenizer="):
        make_reward("hf-classifier", model=classifier)
    with pytest.raises(RewardError, match="could not load the classifier"):
        make_reward("hf-classifier", model=str(tmp_path))  # an empty folder


# ------------------------------------------------------------------ answer extraction

EXTRACT_CASES = [
    ("The answer is 18.", "18"),
    ("#### 18", "18"),
    ("She has 3 + 15 = 18 apples.", "18"),
    ("It costs $1,234.", "1234"),
    ("It costs $1,234.50 in total", "1234.50"),
    ("The answer is €5", "5"),
    ("The temperature drops to -3 degrees.", "-3"),
    ("The answer is -3.", "-3"),
    ("Half of it: 0.5", "0.5"),
    ("12 - 5 = 7", "7"),  # a minus between numbers is not a sign
    ("#### 72\nThen 5 more questions follow: 99", "72"),  # an explicit marker wins
    ("The answer is 40. Check: 40 + 2 = 42", "40"),
    ("The answer is: **25**", "25"),
    ("1,000,000 people", "1000000"),
    ("no number here", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "want"), EXTRACT_CASES)
def test_extract_answer(text, want):
    assert extract_answer(text) == want


EQUAL_CASES = [
    ("18", "18", True),
    ("18", "18.0", True),
    ("18.00", "18", True),
    ("$18", "18", True),
    ("1,234", "1234", True),
    ("-3", "-3.0", True),
    ("0.5", ".5", True),
    ("18.", "18", True),
    ("18", "19", False),
    ("-3", "3", False),
    (None, "3", False),
    ("abc", "ABC ", True),
    ("abc", "3", False),
    ("nan", "nan", True),  # not numbers: compared as text
    (18, "18.0", True),
]


@pytest.mark.parametrize(("a", "b", "want"), EQUAL_CASES)
def test_answers_equal(a, b, want):
    assert answers_equal(a, b) is want


MATCH_CASES = [
    ("18", "The answer is 18.", 1.0),
    ("18", "#### 18", 1.0),
    ("18", "so she has 18.00 dollars", 1.0),
    ("1234", "It costs $1,234.", 1.0),
    ("5", "The answer is €5", 1.0),
    ("-3", "The answer is -3.", 1.0),
    ("0.5", "Each gets 1/2 = 0.5", 1.0),
    ("72", "48 + 24 = 72. The answer is 72.", 1.0),
    ("72", "The answer is 70. Then 2 more makes 72", 0.0),  # the marker is what counts
    ("18", "The answer is 17.", 0.0),
    ("18", "I do not know.", 0.0),
    ("18", "", 0.0),
]


def test_answer_match_table():
    queries = [Query(f"q{i}", answer=gold) for i, (gold, _, _) in enumerate(MATCH_CASES)]
    responses = [resp for _, resp, _ in MATCH_CASES]
    got = score(make_reward("answer-match"), queries, responses)
    np.testing.assert_array_equal(got, [want for *_, want in MATCH_CASES])


def test_answer_match_needs_gold():
    fn = make_reward("answer-match")
    with pytest.raises(ValueError, match="needs a gold answer"):
        fn(["How many?"], ["3"])
    with pytest.raises(RewardError, match="needs a gold answer"):
        score(fn, [Query("a", answer="1"), "How many?"], ["1", "3"])
