"""Validation errors for rule documents.

A rule is checked completely before it is rejected, so the user who built it in Center's
UI sees every problem at once rather than fixing them one round trip at a time. Each
problem names the place in the document (`conditions[2].value`) and a reason precise
enough to act on.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import SegmentsError


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem: where in the document (a JSON-path-like string) and why.

    `path` is "" for the document itself, otherwise e.g. `filter`, `timezone`,
    `conditions[2].value`, `conditions[0].value[1]`.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path or '(rule)'}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


class RuleError(SegmentsError, ValueError):
    """A rule document is invalid; `errors` lists every problem found, in document order."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        super().__init__(self._message())

    def _message(self) -> str:
        count = len(self.errors)
        head = f"invalid rule: {count} problem{'s' if count != 1 else ''}"
        return "\n  ".join([head + ":", *(str(error) for error in self.errors)])

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        """JSON-ready form for HTTP answers and the CLI."""
        return {"errors": [error.to_dict() for error in self.errors]}
