"""Routing conditions: validate them, evaluate them against a step's facts, compile them to SQL.

A rule's conditions are a list of ``{"field", "op", "value"}``; all must hold (an empty list
always holds). ``evaluate`` (pure Python, used when a step arrives) and ``to_q`` (a filter on
``core.Step``, used to try a rule against history) implement the same semantics on SQLite and
PostgreSQL; tests/routing/test_conditions.py checks that they agree on random data.

Fields:
- ``confidence``: a number or null.
- ``kind``, ``name``, ``agent`` (the agent's name): strings; for exists/missing the empty string
  counts as missing.
- ``metadata.<dotted.path>``: any JSON value at that path of the step's metadata; a path through
  something that is not an object, or a JSON null, counts as missing.

Ops:
- ``lt`` ``lte`` ``gt`` ``gte``: the field is a number (never a boolean) and compares so.
- ``eq`` / ``ne``: equal / not equal to a string, number or boolean. ``ne`` is exactly "not
  ``eq``", so it also holds when the field is missing or of another type.
- ``in``: equal to one of a non-empty list of such values.
- ``glob``: the field is a string matching an fnmatch-style pattern (``*``, ``?``, ``[abc]``,
  ``[a-z]``, ``[!abc]``), case-sensitive, against the whole string.
- ``exists`` / ``missing``: the field has a value / has none. They take no value.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import BooleanField, Expression, F, Q

NUMERIC_OPS = ("lt", "lte", "gt", "gte")
OPS = (*NUMERIC_OPS, "eq", "ne", "in", "glob", "exists", "missing")
VALUELESS_OPS = ("exists", "missing")
COLUMN_FIELDS = ("confidence", "kind", "name", "agent")
STRING_FIELDS = ("kind", "name", "agent")
KINDS = ("llm", "tool_call", "final_answer", "retrieval", "other")
METADATA_PREFIX = "metadata."
MAX_CONDITIONS = 50
MAX_IN_VALUES = 500
MAX_PATTERN_LENGTH = 500
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_MISSING = object()


class ConditionError(ValueError):
    """A bad condition. ``field`` is where, e.g. ``conditions[1].op``; str() is "field: message"."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


# --- validation -------------------------------------------------------------------------------


def validate_conditions(conditions: object) -> list[dict[str, Any]]:
    """Check conditions and return a normalised copy (``value`` dropped for exists/missing)."""
    if conditions is None:
        return []
    if not isinstance(conditions, list):
        raise ConditionError("conditions", "must be a list of {field, op, value} objects")
    if len(conditions) > MAX_CONDITIONS:
        raise ConditionError("conditions", f"at most {MAX_CONDITIONS} conditions")
    return [_validate_one(i, c) for i, c in enumerate(conditions)]


def _validate_one(index: int, condition: object) -> dict[str, Any]:
    where = f"conditions[{index}]"
    if not isinstance(condition, dict):
        raise ConditionError(where, "must be an object with 'field', 'op' and 'value'")
    unknown = sorted(set(condition) - {"field", "op", "value"})
    if unknown:
        raise ConditionError(where, f"unknown key '{unknown[0]}'; expected field, op, value")
    field = condition.get("field")
    op = condition.get("op")
    if not isinstance(field, str) or not field:
        raise ConditionError(f"{where}.field", "required; a string")
    if field.startswith(METADATA_PREFIX):
        segments = field[len(METADATA_PREFIX) :].split(".")
        for segment in segments:
            if not segment:
                raise ConditionError(f"{where}.field", f"empty path segment in '{field}'")
            if not _SEGMENT.match(segment):
                raise ConditionError(
                    f"{where}.field",
                    f"bad path segment '{segment}' in '{field}'; use letters, digits, '_' and '-' "
                    "(not starting with a digit)",
                )
    elif field not in COLUMN_FIELDS:
        raise ConditionError(
            f"{where}.field",
            f"unknown field '{field}'; expected one of {', '.join(COLUMN_FIELDS)} or metadata.<path>",
        )
    if not isinstance(op, str):
        raise ConditionError(f"{where}.op", f"required; one of {', '.join(OPS)}")
    if op not in OPS:
        raise ConditionError(f"{where}.op", f"unknown op '{op}'; expected one of {', '.join(OPS)}")

    if op in VALUELESS_OPS:
        if condition.get("value") is not None:
            raise ConditionError(f"{where}.value", f"'{op}' takes no value")
        return {"field": field, "op": op}
    if "value" not in condition:
        raise ConditionError(f"{where}.value", f"required for '{op}'")
    value = condition["value"]
    where_value = f"{where}.value"

    if op in NUMERIC_OPS:
        if field in STRING_FIELDS:
            raise ConditionError(f"{where}.op", f"'{op}' compares numbers; '{field}' is a string")
        _check_number(where_value, value, op)
    elif op == "glob":
        if field == "confidence":
            raise ConditionError(f"{where}.op", "'glob' matches strings; 'confidence' is a number")
        if not isinstance(value, str):
            raise ConditionError(where_value, "'glob' needs a string pattern")
        if len(value) > MAX_PATTERN_LENGTH:
            raise ConditionError(where_value, f"pattern longer than {MAX_PATTERN_LENGTH} characters")
        _check_no_nul(where_value, value)
    elif op == "in":
        if not isinstance(value, list) or not value:
            raise ConditionError(where_value, "'in' needs a non-empty list of values")
        if len(value) > MAX_IN_VALUES:
            raise ConditionError(where_value, f"at most {MAX_IN_VALUES} values")
        for j, item in enumerate(value):
            _check_scalar(f"{where_value}[{j}]", field, item)
        value = list(value)
    else:  # eq, ne
        _check_scalar(where_value, field, value)
    return {"field": field, "op": op, "value": value}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(where: str, value: object, op: str) -> None:
    if not _is_number(value):
        raise ConditionError(where, f"'{op}' needs a number, got {_type_name(value)}")
    try:
        finite = math.isfinite(float(value))  # type: ignore[arg-type]
    except OverflowError:
        finite = False
    if not finite:
        raise ConditionError(where, "must be a finite number (and not astronomically large)")


def _check_scalar(where: str, field: str, value: object) -> None:
    if field == "confidence":
        if not _is_number(value):
            raise ConditionError(where, f"'confidence' is a number; got {_type_name(value)}")
        _check_number(where, value, "confidence")
    elif field in STRING_FIELDS:
        if not isinstance(value, str):
            raise ConditionError(where, f"'{field}' is a string; got {_type_name(value)}")
        if field == "kind" and value not in KINDS:
            raise ConditionError(where, f"unknown kind '{value}'; expected one of {', '.join(KINDS)}")
    elif isinstance(value, str):
        _check_no_nul(where, value)
    elif _is_number(value):
        _check_number(where, value, "eq")
    elif not isinstance(value, bool):
        raise ConditionError(
            where,
            f"must be a string, number or boolean, got {_type_name(value)} (use 'exists' / 'missing' for null)",
        )


def _check_no_nul(where: str, value: str) -> None:
    if "\x00" in value:
        raise ConditionError(where, "must not contain NUL characters")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- evaluation ---------------------------------------------------------------------------------


def evaluate(conditions: list[dict[str, Any]], facts: Mapping[str, Any]) -> dict[str, Any] | None:
    """None when any condition fails; otherwise ``{field: actual value}`` for every condition.

    ``facts``: "confidence" (float | None), "kind", "name", "agent" (agent name), "metadata"
    (dict). ``conditions`` must already be valid (``validate_conditions``)."""
    matched: dict[str, Any] = {}
    for condition in conditions:
        field = condition["field"]
        actual = _lookup(facts, field)
        if not _holds(condition["op"], condition.get("value"), field, actual):
            return None
        matched[field] = None if actual is _MISSING else actual
    return matched


def _lookup(facts: Mapping[str, Any], field: str) -> Any:
    """The field's value; _MISSING when a metadata path is absent or null, or a column is null."""
    if field.startswith(METADATA_PREFIX):
        node: Any = facts.get("metadata")
        for segment in field[len(METADATA_PREFIX) :].split("."):
            if not isinstance(node, dict) or segment not in node:
                return _MISSING
            node = node[segment]
        return _MISSING if node is None else node
    value = facts.get(field)
    return _MISSING if value is None else value


def _present(field: str, actual: Any) -> bool:
    # An empty kind / name / agent counts as missing (a step without a name), though eq "" holds.
    return actual is not _MISSING and not (field in STRING_FIELDS and actual == "")


def _holds(op: str, value: Any, field: str, actual: Any) -> bool:
    if op == "exists":
        return _present(field, actual)
    if op == "missing":
        return not _present(field, actual)
    if op == "eq":
        return _equals(actual, value)
    if op == "ne":
        return not _equals(actual, value)
    if op == "in":
        return any(_equals(actual, v) for v in value)
    if op == "glob":
        return isinstance(actual, str) and compile_glob(value).matches(actual)
    if not _is_number(actual):
        return False
    # Exact comparison (Python compares int and float exactly; so does PostgreSQL's numeric).
    return {"lt": actual < value, "lte": actual <= value, "gt": actual > value, "gte": actual >= value}[op]


def _equals(actual: Any, value: Any) -> bool:
    """JSON-typed equality: strings to strings, numbers to numbers (1 == 1.0), booleans to booleans."""
    if isinstance(value, bool) or isinstance(actual, bool):
        return isinstance(value, bool) and isinstance(actual, bool) and actual is value
    if isinstance(value, str):
        return isinstance(actual, str) and actual == value
    return _is_number(actual) and actual == value


# --- glob -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Glob:
    """A glob compiled to a regex that Python's ``re`` and PostgreSQL's ``~`` read alike.
    ``regex`` is None when the pattern can never match (an empty character class)."""

    regex: str | None

    def matches(self, text: str) -> bool:
        return self.regex is not None and re.search(self.regex, text) is not None


def _regex_char(c: str) -> str:
    """A character as a regex atom. ASCII punctuation becomes ``\\uXXXX``: both engines read that
    escape (also inside brackets), so no character can be taken for an operator."""
    if c.isascii() and not c.isalnum() and c != "_" and not c.isspace():
        return f"\\u{ord(c):04x}"
    return c


@functools.lru_cache(maxsize=1024)  # rules evaluate the same few patterns for every step
def compile_glob(pattern: str) -> Glob:
    """fnmatch-style: ``*`` any run, ``?`` one character, ``[...]`` a class (``!`` negates, ``a-z``
    ranges, a leading ``]`` is a member, a reversed range is empty, an unclosed ``[`` is literal)."""
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not parts or parts[-1] != ".*":
                parts.append(".*")
        elif c == "?":
            parts.append(".")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                parts.append(_regex_char("["))
                continue
            stuff = pattern[i:j]
            i = j + 1
            negated = stuff.startswith("!")
            if negated:
                stuff = stuff[1:]
            members: list[str] = []
            k = 0
            while k < len(stuff):
                if k + 2 < len(stuff) and stuff[k + 1] == "-":
                    lo, hi = stuff[k], stuff[k + 2]
                    if lo <= hi:
                        members.append(f"{_regex_char(lo)}-{_regex_char(hi)}")
                    k += 3
                else:
                    members.append(_regex_char(stuff[k]))
                    k += 1
            if not members:
                if not negated:
                    return Glob(None)
                parts.append(".")
            else:
                parts.append("[" + ("^" if negated else "") + "".join(members) + "]")
        else:
            parts.append(_regex_char(c))
    # (?s): "." also matches a newline; \A and \Z anchor the whole string in both engines.
    return Glob("(?s)\\A" + "".join(parts) + "\\Z")


# --- compiling to a database filter ------------------------------------------------------------


def to_q(conditions: list[dict[str, Any]]) -> Q:
    """The same conditions as a filter on ``core.Step`` (``Step.objects.filter(to_q(c))``)."""
    q = Q()
    for condition in conditions:
        q &= _condition_q(condition["field"], condition["op"], condition.get("value"))
    return q


_NEVER = Q(pk__in=[])


def _condition_q(field: str, op: str, value: Any) -> Q:
    if field.startswith(METADATA_PREFIX):
        path = tuple(field[len(METADATA_PREFIX) :].split("."))
        if op == "glob" and compile_glob(value).regex is None:
            return _NEVER
        return Q(JsonPathCondition(F("metadata"), path=path, op=op, value=value))
    column = "agent__name" if field == "agent" else field
    if field == "confidence":
        present = Q(confidence__isnull=False)
        if op in NUMERIC_OPS:
            return Q(**{f"confidence__{op}": float(value)})
        if op == "eq":
            return Q(confidence=float(value))
        if op == "ne":
            return Q(confidence__isnull=True) | ~Q(confidence=float(value))
        if op == "in":
            return Q(confidence__in=[float(v) for v in value])
        return present if op == "exists" else ~present
    # kind, name, agent: non-null strings, where "" means missing.
    if op == "eq":
        return Q(**{column: value})
    if op == "ne":
        return ~Q(**{column: value})
    if op == "in":
        return Q(**{f"{column}__in": value})
    if op == "glob":
        regex = compile_glob(value).regex
        return _NEVER if regex is None else Q(**{f"{column}__regex": regex})
    if op == "exists":
        return ~Q(**{column: ""})
    return Q(**{column: ""})  # missing


class JsonPathCondition(Expression):
    """One condition on the JSON value at ``path`` inside a JSON column, as a boolean that is never
    NULL (so negation and ``ne`` behave). Written per backend: Django's JSON key lookups blur types
    on SQLite (the string "true" equals true there) and ``?`` on PostgreSQL finds array elements."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, column: Any, *, path: tuple[str, ...], op: str, value: Any = None) -> None:
        super().__init__(output_field=BooleanField())
        self.column = column
        self.path = tuple(path)
        self.op = op
        self.value = value

    def get_source_expressions(self) -> list[Any]:
        return [self.column]

    def set_source_expressions(self, exprs: list[Any]) -> None:
        (self.column,) = exprs

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        raise NotImplementedError(f"routing conditions on JSON need SQLite or PostgreSQL, not {connection.vendor}")

    # Both backends build the same shape: CASE WHEN <type check> THEN <comparison> ELSE FALSE END.

    def as_sqlite(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        col_sql, col_params = compiler.compile(self.column)
        json_path = "$" + "".join(f'."{segment}"' for segment in self.path)
        type_sql = f"JSON_TYPE({col_sql}, %s)"
        type_params = [*col_params, json_path]
        value_sql = f"JSON_EXTRACT({col_sql}, %s)"
        return self._build(
            type_sql,
            type_params,
            value_sql,
            type_params,
            number_types=("integer", "real"),
            string_type="text",
            bool_check=lambda b: (f"{type_sql} = %s", [*type_params, "true" if b else "false"]),
            regex_op="REGEXP",
            numeric_sql=value_sql,
            numeric_param=lambda v: v,
        )

    def as_postgresql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        col_sql, col_params = compiler.compile(self.column)
        path = list(self.path)
        type_sql = f"jsonb_typeof({col_sql} #> %s::text[])"
        type_params = [*col_params, path]
        text_sql = f"({col_sql} #>> %s::text[])"
        return self._build(
            type_sql,
            type_params,
            text_sql,
            type_params,
            number_types=("number",),
            string_type="string",
            bool_check=lambda b: (
                f"({type_sql} = 'boolean' AND {text_sql} = %s)",
                [*type_params, *type_params, "true" if b else "false"],
            ),
            regex_op="~",
            # numeric, not double precision: a huge JSON number must not raise "out of range".
            numeric_sql=f"{text_sql}::numeric",
            numeric_param=lambda v: repr(v),
            numeric_placeholder="%s::numeric",
        )

    def _build(
        self,
        type_sql: str,
        type_params: list[Any],
        value_sql: str,
        value_params: list[Any],
        *,
        number_types: tuple[str, ...],
        string_type: str,
        bool_check: Any,
        regex_op: str,
        numeric_sql: str,
        numeric_param: Any,
        numeric_placeholder: str = "%s",
    ) -> tuple[str, list[Any]]:
        op, value = self.op, self.value
        is_number = f"{type_sql} IN ({', '.join('%s' for _ in number_types)})"
        is_number_params = [*type_params, *number_types]

        def guarded(check: str, check_params: list[Any], then: str, then_params: list[Any]) -> tuple[str, list]:
            return f"(CASE WHEN {check} THEN ({then}) ELSE FALSE END)", [*check_params, *then_params]

        def equals(v: Any) -> tuple[str, list[Any]]:
            if isinstance(v, bool):
                sql, params = bool_check(v)
                return f"COALESCE({sql}, FALSE)", params
            if isinstance(v, str):
                return guarded(f"{type_sql} = %s", [*type_params, string_type], f"{value_sql} = %s", [*value_params, v])
            return guarded(
                is_number, is_number_params, f"{numeric_sql} = {numeric_placeholder}", [*value_params, numeric_param(v)]
            )

        if op in ("exists", "missing"):
            comparison = "<>" if op == "exists" else "="
            return f"(COALESCE({type_sql}, 'null') {comparison} 'null')", list(type_params)
        if op in NUMERIC_OPS:
            sign = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
            return guarded(
                is_number,
                is_number_params,
                f"{numeric_sql} {sign} {numeric_placeholder}",
                [*value_params, numeric_param(value)],
            )
        if op == "glob":
            regex = compile_glob(value).regex
            return guarded(
                f"{type_sql} = %s", [*type_params, string_type], f"{value_sql} {regex_op} %s", [*value_params, regex]
            )
        if op == "eq":
            return equals(value)
        if op == "ne":
            sql, params = equals(value)
            return f"(NOT {sql})", params
        pieces = [equals(v) for v in value]  # in
        return "(" + " OR ".join(sql for sql, _ in pieces) + ")", [p for _, params in pieces for p in params]


# --- sampling ---------------------------------------------------------------------------------


def sample_hit(rate: float, key: str) -> bool:
    """Deterministic sampling: SHA-256 of ``key`` mapped to [0, 1), hit when below ``rate``."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate
