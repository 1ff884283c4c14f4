"""The API's JSON parser: DRF's, with a bound on nesting.

Python's JSON decoder recurses once per level, so a body of a few thousand `[` raised RecursionError (a 500
with an HTML page, even on the unauthenticated enroll endpoint). No document the API takes nests deeper than
MAX_DEPTH; deeper ones are a 400 in the API's error shape.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32


def depth(value: Any) -> int:
    """How deeply `value` nests lists and objects (iterative: it must not recurse itself)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels") from None
        if depth(data) > MAX_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels")
        return data


class WorkerJSONParser(BoundedJSONParser):
    """For the worker API: `NaN` and `Infinity` parse (Python's json writes them for a diverged loss), so that
    the contract can null them in a progress document, and refuse them in every numeric field, with a 400
    naming the field rather than a parse error that would cost a job its heartbeat."""

    strict = False
