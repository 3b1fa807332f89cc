"""What the engine needs to know about a fact, as a structural protocol.

`rules/` must not import the stream package (dependencies point one way), so it names
the attributes it reads instead of the class that carries them. `stream.facts.Fact`
satisfies this protocol as it is; tests use their own small dataclass.
"""

from __future__ import annotations

from typing import Protocol


class FactView(Protocol):
    """Read-only view of one normalized fact.

    Times are integer epoch seconds (UTC, event time); money is integer minor units of
    `currency` (a lower-case ISO code). Optional attributes are None when the occurrence
    does not carry them (e.g. no `refund_amount` on a charge).
    """

    @property
    def fact_id(self) -> str: ...
    @property
    def filter(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def occurred_at(self) -> int: ...
    @property
    def amount(self) -> int | None: ...
    @property
    def currency(self) -> str | None: ...
    @property
    def refund_amount(self) -> int | None: ...
    @property
    def plans(self) -> tuple[str, ...]: ...
    @property
    def start_date(self) -> int | None: ...
    @property
    def end_date(self) -> int | None: ...
