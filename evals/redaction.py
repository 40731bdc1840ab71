"""PII redaction at export time: emails, phone numbers, card numbers and API-key-like tokens,
plus a dataset's own patterns. The manifest gets counts per kind, never the values.

Fast path: the built-in patterns only match ASCII characters that JSON never escapes, so one
search over a step's raw JSON text tells whether any string in it can hold PII; only those
steps are walked string by string. A dataset with its own patterns always walks."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from evals.cases import Case


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for index, char in enumerate(digits):
        n = int(char)
        if index % 2 == parity:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", match.group(0))
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _phone(match: re.Match[str]) -> bool:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if _DATE.match(text) or not 9 <= digits <= 15:
        return False
    # A bare run of digits is a phone number only with a + prefix or when it is 10+ digits long.
    return text.startswith("+") or any(c in text for c in " ().-") or digits >= 10


# (kind, pattern, validator): all ASCII, so they also match raw JSON text (see module docstring).
BUILTIN: list[tuple[str, str, Callable[[re.Match[str]], bool] | None]] = [
    ("email", r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", None),
    (
        "api_key",
        r"(?<![A-Za-z0-9])(?:(?:sk|pk|rk|rq)[-_][A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}"
        r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35})"
        r"|(?<=Bearer )[A-Za-z0-9._~+/-]{20,}=*",
        None,
    ),
    ("card", r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])", _card),
    ("phone", r"(?<![\w.+-])\+?[0-9][0-9 ().-]{6,20}[0-9](?![\w-])", _phone),
]
# Byte tables for the pre-check: a phone or card number is 9+ digits once separators are
# dropped; every api_key match but xox tokens (and Bearer ones) is a run of 19+ token characters.
_DIGITS = bytes.maketrans(b"0123456789", b"0" * 10)
_TOKEN_CHARS = (string.ascii_letters + string.digits + "_-").encode()
_TOKENS = bytes.maketrans(_TOKEN_CHARS, b"a" * len(_TOKEN_CHARS))
_LOCAL_CHARS = frozenset(string.ascii_letters + string.digits + "._%+-")  # an address's local part
_DOMAIN_RUN = re.compile(r"[A-Za-z0-9.-]*")
_DIGIT_RUN = re.compile(r"\+?[0-9](?:[ ().-]{0,3}[0-9]){8,}")
# JSON escapes that put a letter or digit where the decoded text has another character
# ("\\n555-123-4567" reads as "n555…", which the phone pattern's look-behind refuses). The
# pre-check decodes them, so each string's characters are the decoded ones; the escapes it
# keeps (\\" and \\\\) stand for characters no pattern holds, as the two characters do.
_DECODED_ESCAPES = re.compile(r"\\[ntrbfu/]")  # one scan (most texts hold \" escapes only)
_ESCAPE = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\([bfnrt/\\\"])"
)
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "/": "/", "\\": "\\\\", '"': '\\"'}


def _decoded(match: re.Match[str]) -> str:
    high, low, code, simple = match.groups()
    if high is not None:  # a surrogate pair: one character beyond the BMP
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if code is not None:
        value = int(code, 16)
        return "\x00" if 0xD800 <= value <= 0xDFFF else chr(value)  # a lone surrogate: no pattern's
    return _SIMPLE[simple]


# Any of `Redactor._hit`'s triggers in a raw JSON text (RE2 syntax), or an escape it decodes
# first: where this finds nothing, `_hit` is False (a property test holds them together).
TRIGGERS = r"@|xox|Bearer |[A-Za-z0-9_-]{19}|[0-9](?:[ ().+-]*[0-9]){8}|\\[ntrbfu/]"


def _triggered(columns: list[list[Any]]) -> list[bool]:
    """For each row of texts given as columns (None: no text), whether TRIGGERS finds something
    in one of them: one search of each column with Arrow's RE2, a linear scan in C (Python's
    `re` tries the pattern at every position)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = None
    for column in columns:
        try:
            array = pa.array(column, pa.string())
        except (UnicodeEncodeError, pa.ArrowException):  # a lone surrogate (no UTF-8), not text
            array = pa.array([None if text is None else "@" for text in column], pa.string())  # flag them
        matched = pc.match_substring_regex(array, TRIGGERS)
        found = matched if found is None else pc.or_kleene(found, matched)
    return pc.fill_null(found, False).to_pylist()


def load_triggers() -> None:
    """Load Arrow's compute functions now, not at the first chunk: a parallel export does it
    before it forks its workers, which then share them (about 90 MiB of library pages)."""
    _triggered([["@"]])


PLACEHOLDER = {"email": "[EMAIL]", "api_key": "[API_KEY]", "card": "[CARD]", "phone": "[PHONE]"}


class RedactionError(ValueError):
    pass


def validate_patterns(patterns: Any) -> list[dict[str, str]]:
    """A dataset's extra patterns: [{"name": "customer_id", "pattern": "CUST-[0-9]{6}"}]."""
    if patterns in (None, ""):
        return []
    if not isinstance(patterns, list):
        raise RedactionError("redaction_patterns must be a list of {name, pattern}")
    clean = []
    for index, entry in enumerate(patterns):
        if not isinstance(entry, dict) or not isinstance(entry.get("pattern"), str) or not entry.get("pattern"):
            raise RedactionError(f"redaction_patterns[{index}] needs a non-empty 'pattern' string")
        name = str(entry.get("name") or f"pattern_{index + 1}")
        problem = pattern_problem(name, entry["pattern"])
        if problem:
            raise RedactionError(f"redaction_patterns[{index}].{problem}")
        clean.append({"name": name, "pattern": entry["pattern"]})
    return clean


def pattern_problem(name: str, pattern: str) -> str | None:
    """What is wrong with an extra pattern ("name must be …", "pattern is not a valid regex: …"),
    or None."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
        return "name must be lowercase letters, digits and _"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"pattern is not a valid regex: {exc}"
    return None


class Redactor:
    def __init__(self, extra_patterns: list[dict[str, str]] | None = None) -> None:
        rules = [(kind, re.compile(p), check, PLACEHOLDER[kind]) for kind, p, check in BUILTIN]
        for entry in validate_patterns(extra_patterns):
            rules.append((entry["name"], re.compile(entry["pattern"]), None, f"[{entry['name'].upper()}]"))
        self.rules = rules
        self.always_walk = bool(extra_patterns)
        self._by_kind = {kind: (pattern, check) for kind, pattern, check, _ in rules[: len(BUILTIN)]}

    def may_contain(self, *raw_texts: Any) -> bool:
        """Cheap pre-check on raw JSON texts (other values are serialised); False means no
        string in them can be redacted."""
        if self.always_walk:
            return True
        texts = [t if type(t) is str else orjson.dumps(t).decode() for t in raw_texts if t]
        return self._hit("\n".join(texts))

    def may_contain_rows(self, columns: list[list[Any]]) -> list[bool]:
        """For rows of raw JSON texts given as columns (a chunk of an export's steps), whether a
        row may hold something to redact: one search of TRIGGERS over each column
        (`_triggered`). True where `may_contain` of the row's texts could be True; callers run
        that exact check on the rows flagged."""
        rows = len(columns[0]) if columns else 0
        if self.always_walk or not rows:
            return [True] * rows
        return _triggered(columns)

    def _hit(self, text: str) -> bool:
        """Whether any built-in pattern (validators included) matches a string in a raw JSON
        text: `_matches` on the text with its escapes decoded."""
        if "\\" in text and _DECODED_ESCAPES.search(text):
            text = _ESCAPE.sub(_decoded, text)
        return self._matches(text)

    def _matches(self, text: str) -> bool:
        """Whether any built-in pattern (validators included) matches `text`. Byte-level triggers
        (an @, 9 digits in a row once separators are dropped, a long token) decide cheaply
        whether the regexes need to run at all; they run near the trigger, not over every text."""
        raw = text.encode("utf-8", "surrogatepass")
        if b"@" in raw:
            email, _ = self._by_kind["email"]
            at = text.find("@")
            while at != -1:
                # An address around this @ lies within the runs of characters an address can
                # hold on either side of it (the pattern's look-behind makes a match start
                # where the run before the @ starts), however long they are.
                start = at
                while start and text[start - 1] in _LOCAL_CHARS:
                    start -= 1
                if email.search(text, start, _DOMAIN_RUN.match(text, at + 1).end()):
                    return True
                at = text.find("@", at + 1)
        long_token = b"a" * 19 in raw.translate(_TOKENS) or b"xox" in raw or b"Bearer " in raw
        if long_token and self._by_kind["api_key"][0].search(text):
            return True
        if b"0" * 9 in raw.translate(_DIGITS, b" ().-+"):
            for run in _DIGIT_RUN.finditer(text):
                for kind in ("card", "phone"):
                    pattern, check = self._by_kind[kind]
                    for match in pattern.finditer(text, max(0, run.start() - 1), min(len(text), run.end() + 1)):
                        if check is None or check(match):
                            return True
        return False

    def redact_text(self, text: str, counts: Counter[str]) -> str:
        if not self.always_walk and not self._matches(text):  # most strings of a flagged step
            return text
        for kind, pattern, check, placeholder in self.rules:

            def replace(
                match: re.Match[str], kind: str = kind, check: Any = check, placeholder: str = placeholder
            ) -> str:
                if check is not None and not check(match):
                    return match.group(0)
                counts[kind] += 1
                return placeholder

            text = pattern.sub(replace, text)
        return text

    def redact_value(self, value: Any, counts: Counter[str], key: str = "") -> Any:
        if isinstance(value, str):
            if key == "arguments":  # a JSON-encoded tool-call argument object: redact inside, re-encode
                try:
                    decoded = orjson.loads(value)
                except orjson.JSONDecodeError:
                    return self.redact_text(value, counts)
                before = sum(counts.values())
                redacted = self.redact_value(decoded, counts)
                return orjson.dumps(redacted).decode() if sum(counts.values()) != before else value
            return self.redact_text(value, counts)
        if isinstance(value, list):
            return [self.redact_value(v, counts) for v in value]
        if isinstance(value, dict):
            return {k: self.redact_value(v, counts, k) for k, v in value.items()}
        return value

    def redact_case(self, case: Case) -> None:
        """Redact a case in place; its `redactions` get the counts per kind."""
        counts: Counter[str] = Counter()
        case.messages = self.redact_value(case.messages, counts)
        case.expected = self.redact_value(case.expected, counts)
        case.rejected = self.redact_value(case.rejected, counts)
        case.reason = self.redact_value(case.reason, counts)
        case.labels = self.redact_value(case.labels, counts)
        if counts:
            case.redactions = dict(counts)
