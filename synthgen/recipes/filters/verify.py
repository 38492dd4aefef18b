"""Best-of-n: verifiers that decide which of a prompt's samples to keep, and each prompt's
pass rate (in `pass_rates`).

    exact    the answer equals the reference once both are normalized (case, spaces,
             a trailing period); `answer_pattern` (a regex, first group) picks the answer
             out of the text first, e.g. "(?i)answer:\\s*(.+)"
    regex    the text matches `pattern`, or the reference as a pattern
    math     math-verify: the answer is mathematically equivalent to the reference
             (1/2 = 0.5 = \\frac{1}{2}, \\boxed{...} found in prose)
    python   the code in the answer (its ```python block, else all of it) followed by the
             reference's tests (asserts) runs in synthgen's sandbox (no network, no write
             outside an empty temporary directory, bounded memory, a timeout; see
             synthgen/sandbox); passing means exit status 0

`keep: passing` (the default) keeps every sample that passes; `keep: best` only the first
passing sample of each prompt.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...errors import ConfigError
from ...hints import pip_install
from . import Outcome, Removal, column

CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["exact", "regex", "math", "python"]
    field: str = "response"        # the column holding the answer
    reference: str | None = None   # the column holding the reference (answer, pattern, tests)
    pattern: str | None = None     # regex: the pattern (else the reference column is one)
    answer_pattern: str | None = None
    timeout: float = Field(10.0, gt=0, le=600)
    keep: Literal["passing", "best"] = "passing"


def run(rows: list[dict[str, Any]], p: dict[str, Any]) -> Outcome:
    column(rows, p["field"], "verify")
    if p["method"] != "regex" or p["pattern"] is None:
        if p["reference"] is None:
            raise ConfigError(f"filter verify: method {p['method']} needs `reference`: the column "
                              "with each prompt's reference")
        column(rows, p["reference"], "verify")
    out = Outcome()
    by_prompt: dict[str, list[tuple[str, bool]]] = {}
    for row in rows:
        ok, why = check(row.get(p["field"]) or "", row.get(p["reference"]) if p["reference"] else None, p)
        by_prompt.setdefault(row["messages"], []).append((row["request_id"], ok))
        if not ok:
            out.removed.append(Removal(row["request_id"], p["method"], why))
    for prompt, results in by_prompt.items():
        passed = [rid for rid, ok in results if ok]
        out.pass_rates.append((prompt, len(results), len(passed)))
        if p["keep"] == "best":
            out.removed += [Removal(rid, "not-best", "a sample before it passed", passed[0])
                            for rid in passed[1:]]
    n = sum(s for _, s, _ in out.pass_rates)
    out.figures = {"samples": n, "passed": sum(k for _, _, k in out.pass_rates),
                   "prompts_solved": sum(1 for _, _, k in out.pass_rates if k)}
    return out


def check(text: str, reference: Any, p: dict[str, Any]) -> tuple[bool, str]:
    """(passed, why not)."""
    method = p["method"]
    if method == "exact":
        answer = _extract(text, p["answer_pattern"])
        ok = _norm(answer) == _norm(str(reference or ""))
        return ok, "" if ok else f"{_short(answer)!r} is not {_short(str(reference))!r}"
    if method == "regex":
        pattern = p["pattern"] if p["pattern"] is not None else str(reference or "")
        try:
            ok = re.search(pattern, text) is not None
        except re.error as exc:
            return False, f"bad pattern {pattern!r}: {exc}"
        return ok, "" if ok else f"no match for {pattern!r}"
    if method == "math":
        return _math(text, str(reference or ""))
    return _python(text, str(reference or ""), p["timeout"])


def _extract(text: str, pattern: str | None) -> str:
    if pattern:
        m = re.search(pattern, text)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return text


def _norm(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".")


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _math(text: str, reference: str) -> tuple[bool, str]:
    try:
        from math_verify import parse, verify
    except ImportError:
        raise ConfigError(f"verify method math needs math-verify: {pip_install('recipes')}") from None
    gold = parse(reference if "$" in reference or "\\" in reference else f"${reference}$")
    answer = parse(text)
    if not gold:
        return False, f"the reference {reference!r} is not a math answer"
    if not answer:
        return False, "no math answer found in the text"
    ok = bool(verify(gold, answer))
    return ok, "" if ok else f"{_short(str(answer[-1]))} is not {_short(reference)}"


def _python(text: str, tests: str, timeout: float) -> tuple[bool, str]:
    """The answer's code and the reference's tests, run in the sandbox (synthgen.sandbox):
    no network, nothing written outside its own empty directory, bounded memory and time."""
    from ...sandbox import Limits, run_python

    blocks = CODE_BLOCK.findall(text)
    code = blocks[0] if blocks else text
    result = run_python(f"{code}\n\n{tests}\n", limits=Limits(seconds=timeout))
    if result.ok:
        return True, ""
    return False, _short(f"timed out after {timeout:g}s" if result.timed_out else result.reason(), 160)
