"""Throttle rates as written in settings (`'3000/min'`): read here, free of Django, so that the settings can
refuse a bad one at start-up and the throttle (portal/throttling.py) can use it on every request."""

from __future__ import annotations

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """'3000/min' → (3000, 60); the unit is read by its first letter, as DRF does (s, m, h, d)."""
    number, _, unit = rate.partition("/")
    try:
        return int(number), PERIODS[unit.strip()[:1]]
    except (ValueError, KeyError):
        raise ValueError(f"throttle rate {rate!r} is not '<requests>/<s|min|hour|day>'") from None
