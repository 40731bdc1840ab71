"""An OpenAI Evals completion function for tests/evals/test_consumers.py. It runs inside the
separate environment that scripts/test.sh makes for the `evals` package (whose module name
this project's own `evals` app would shadow), never in the project's. It answers each sample
with the output its reviewer decided on, from a JSON file the test writes from the database:
a list of [prompt, answer] pairs."""

from __future__ import annotations

import json
from typing import Any

from evals.api import CompletionFn, CompletionResult


def _key(prompt: Any) -> str:
    return json.dumps(prompt, sort_keys=True)


class Answered(CompletionResult):
    def __init__(self, text: str) -> None:
        self.text = text

    def get_completions(self) -> list[str]:
        return [self.text]


class ReviewedAnswers(CompletionFn):
    def __init__(self, answers: str, **kwargs: Any) -> None:
        with open(answers, encoding="utf-8") as handle:
            self.answers = {_key(prompt): answer for prompt, answer in json.load(handle)}

    def __call__(self, prompt: Any, **kwargs: Any) -> Answered:
        return Answered(self.answers.get(_key(prompt), "(no reviewed answer)"))
