"""Prompt and knowledge-transfer templates of the paper's two settings.

Templates are ``str.format`` strings over ``{q}`` (the query) and ``{a1}`` (the pioneer's
answer), consumed by :class:`cory_env.tasks.base.Task`; the chain templates (observers
after two or more answers, K > 2) take ``{answers}``, each answer formatted by its
``*_CHAIN_ANSWER`` template.
"""

from __future__ import annotations

# IMDB (subjective reward): the pioneer continues the review opening; the observer is asked
# to make the pioneer's sentence more positive and then continues the same opening.
IMDB_PIONEER = "{q}"
IMDB_OBSERVER = 'I can make this sentence "{q}{a1}" more positive: {q}'
# Chains (K > 2): an observer after several answers reads each as a quoted sentence.
IMDB_CHAIN = "I can make these sentences {answers} more positive: {q}"
IMDB_CHAIN_ANSWER = '"{q}{a}"'
IMDB_CHAIN_SEPARATOR = ", "

# GSM8K (objective reward): a 1-shot "Question: ... Answer:" prompt; the observer's prompt
# adds the pioneer's answer as a reference before "Answer:".
GSM8K_SHOT_QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)
GSM8K_SHOT_ANSWER = (
    "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April "
    "and May. The answer is 72."
)
GSM8K_SHOT = f"Question: {GSM8K_SHOT_QUESTION}\nAnswer: {GSM8K_SHOT_ANSWER}\n\n"
GSM8K_PIONEER = GSM8K_SHOT + "Question: {q}\nAnswer:"
GSM8K_OBSERVER = GSM8K_SHOT + "Question: {q}\nReference: {a1}\nAnswer:"
# Chains (K > 2): one numbered reference per earlier answer.
GSM8K_CHAIN = GSM8K_SHOT + "Question: {q}\n{answers}\nAnswer:"
GSM8K_CHAIN_ANSWER = "Reference {i}: {a}"
# Short answers (arith's ``short_answers``): the same format, a one-line worked example.
SHORT_SHOT = (
    "Question: Maya has 4 shells and gets 3 more. How many shells does Maya have now?\n"
    "Answer: 4 + 3 = 7. The answer is 7.\n\n"
)
SHORT_PIONEER = SHORT_SHOT + "Question: {q}\nAnswer:"
SHORT_OBSERVER = SHORT_SHOT + "Question: {q}\nReference: {a1}\nAnswer:"
SHORT_CHAIN = SHORT_SHOT + "Question: {q}\n{answers}\nAnswer:"
# A GSM8K turn ends when the model starts the next question.
GSM8K_STOP = ("\nQuestion:", "\n\n")
