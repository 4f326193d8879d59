"""What each endpoint accepts, checked with pydantic; a bad body is one line naming the field.

``/v1/compare`` takes a row as ``selftaught judge`` reads it, or a list of them; ``/v1/grade`` a row as
``selftaught judge judge_file.mode=absolute`` reads it, or a list; ``/get_reward`` OpenRLHF's remote
reward-model body (``query``: prompt + response as the policy produced it, ``prompts``, ``labels``), or the
same with ``responses`` instead of ``query`` (what ``selftaught.reward``'s adapters send). Unknown keys
are ignored (callers send their datasets' extra columns); values are not coerced (a number is not a
string).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

from selftaught.formats.graded import rubric_text


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


Text = Annotated[str, AfterValidator(_not_blank)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    id: Optional[Union[str, int]] = None  # echoed back


class CompareRow(_Row):
    instruction: Text
    response_a: Text
    response_b: Text
    reference: Optional[str] = None

    @model_validator(mode="after")
    def _differ(self) -> "CompareRow":
        if self.response_a.strip() == self.response_b.strip():
            raise ValueError("response_a and response_b are the same text (nothing to decide)")
        return self


class GradeRow(_Row):
    instruction: Text
    response: Text
    rubric: Optional[Union[str, dict[str, Any]]] = None  # a string, or {criteria, score1_description..score5_description}
    reference: Optional[str] = None

    @model_validator(mode="after")
    def _rubric(self) -> "GradeRow":
        text, err = rubric_text({"rubric": self.rubric}, "rubric")
        if err:
            raise ValueError(err)
        self.rubric = text
        return self


# Trailing end-of-turn / end-of-text / padding markers a policy's decoded sequence may carry (OpenRLHF decodes with
# special tokens): "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>", repeated, with whitespace between.
_TRAILING_SPECIAL = re.compile(r"(?:\s*(?:<\|[^|<>\s]{1,40}\|>|</s>))+\s*$")


def response_of(query: str, prompt: str) -> Optional[str]:
    """The response in an OpenRLHF query (prompt + response), its trailing special tokens cut; None when the
    query does not start with its prompt (a decoding that does not round-trip: that item is unscored)."""
    if not query.startswith(prompt):
        return None
    return _TRAILING_SPECIAL.sub("", query[len(prompt):])


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    prompts: list[str]
    query: Optional[list[str]] = None  # OpenRLHF: prompt + response; the response is what follows the prompt
    responses: Optional[list[str]] = None
    # Reference answers (reward=reference needs them); a non-string label (a number, a list) is no reference.
    labels: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _shape(self) -> "RewardRequest":
        if (self.query is None) == (self.responses is None):
            raise ValueError("give either query (prompt + response, OpenRLHF) or responses")
        given = self.query if self.query is not None else self.responses
        key = "query" if self.query is not None else "responses"
        if len(given) != len(self.prompts):
            raise ValueError(f"{key} has {len(given)} items and prompts {len(self.prompts)}")
        if self.labels is not None and len(self.labels) != len(self.prompts):
            raise ValueError(f"labels has {len(self.labels)} items and prompts {len(self.prompts)}")
        return self

    def items(self) -> list[tuple[str, Optional[str], Optional[str]]]:
        """(prompt, response or None when its query does not start with its prompt, label or None) per item."""
        responses = (self.responses if self.responses is not None
                     else [response_of(q, p) for q, p in zip(self.query, self.prompts)])
        labels = [x if isinstance(x, str) else None for x in (self.labels or [None] * len(self.prompts))]
        return list(zip(self.prompts, responses, labels))


class BadRequest(ValueError):
    """One line for the caller: the field, then what is wrong with it."""


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "body"


def one_line(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{_where(tuple(err['loc']))}: {msg}{more}"


def rows_of(model: type[_Row], body: Any) -> tuple[list[_Row], bool]:
    """(the rows, whether the body was a list)."""
    many = isinstance(body, list)
    try:
        rows = TypeAdapter(list[model]).validate_python(body) if many else [model.model_validate(body)]
    except ValidationError as e:
        raise BadRequest(one_line(e)) from None
    if many and not rows:
        raise BadRequest("body: an empty list (nothing to judge)")
    return rows, many


def reward_request(body: Any) -> RewardRequest:
    try:
        req = RewardRequest.model_validate(body)
    except ValidationError as e:
        raise BadRequest(one_line(e)) from None
    if not req.prompts:
        raise BadRequest("prompts: an empty list (nothing to score)")
    return req
