"""Segment rules without a broker: parse, validate, evaluate, index; owns the filter list.

Everything here is pure and synchronous, and imports nothing of this project but `common`, and
no Kafka, Faust, Stripe or Redis, so the stream, the CLI, the HTTP API and the tests all
share one definition of what a rule means.

    rule = parse_rule(doc)                    # raises RuleError listing every problem
    matches(rule, fact, now)                  # one fact
    failed_conditions(rule, fact, now)        # which of its conditions that fact fails
    is_member(rule, facts, now)               # one contact
    next_change(rule, facts, now)             # when the clock alone flips is_member
    evaluate(rule, facts, now)                # both at once (the stream's hot path)

Times are int epoch seconds (UTC); money is int minor units on facts and Decimal major
units in rules.
"""

from rules.errors import FieldError, RuleError
from rules.evaluate import evaluate, failed_conditions, is_member, matches, next_change
from rules.fact import FactView
from rules.index import RuleIndex
from rules.model import Rule
from rules.parse import parse_rule, parse_rule_json
from rules.vocabulary import FIELDS, FILTERS

__all__ = [
    "FIELDS",
    "FILTERS",
    "FactView",
    "FieldError",
    "Rule",
    "RuleError",
    "RuleIndex",
    "evaluate",
    "failed_conditions",
    "is_member",
    "matches",
    "next_change",
    "parse_rule",
    "parse_rule_json",
]
