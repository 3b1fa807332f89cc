"""Validation errors for rule documents.

A rule is checked completely before it is rejected, so the user who built it in Center's
UI sees every problem at once rather than fixing them one round trip at a time. Each
problem names the place in the document as a JSON Pointer (RFC 6901:
`/conditions/2/value`, "" for the document itself) and a reason precise enough to act on.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import SegmentsError


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem: where in the document (a JSON Pointer) and why.

    `path` is "" for the document itself, otherwise e.g. `/filter`, `/timezone`,
    `/conditions/2/value`, `/conditions/0/value/1`.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path or '(rule)'}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        """The HTTP API's form: `{"path": JSON Pointer, "message": reason}`."""
        return {"path": self.path, "message": self.reason}


def pointer(base: str, *tokens: str | int) -> str:
    """`base` (a JSON Pointer) extended by `tokens`, each escaped as RFC 6901 says."""
    return base + "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


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
