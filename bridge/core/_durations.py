"""Durations as people write them in config files: 15s, 1m30s, 500ms, PT15S, or a bare number.

The seed's keys use Go-style durations, the vendor's Python and Go SDKs bare seconds, and
the Java starter Spring's forms (PT30S). One parser takes all of them so that a config
file written for any SDK reads the same.
"""

from __future__ import annotations

import re

# Go-style: one or more <number><unit> parts, largest first by convention (1h2m3.5s, 1m30s, 500ms).
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_GO = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")
# ISO-8601 durations as Java's Duration.parse writes them: PT15S, PT1M30S, P1DT2H, PT0.5S.
_ISO = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_BARE = re.compile(r"^\d+(?:\.\d+)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Words that turn a limit off, where a setting allows it (the task timeout).
NONE_WORDS = frozenset({"none", "off", "no", "never", "unlimited"})

HOW_TO_WRITE = "write it like 15s, 1m30s, 500ms, PT15S, or a number of seconds"
# The longest duration any setting takes: a year. Far past any sensible wait, and past what
# the event loop's timers can hold (a task would fail with an internal OverflowError).
LONGEST = 365 * 86400.0


class TooLong(ValueError):
    """A duration over LONGEST."""


def _capped(text: object, seconds: float) -> float:
    if seconds > LONGEST:
        raise TooLong(f"{text!r} is longer than a year: write at most 8760h")
    return seconds


def parse_duration(text: object) -> float:
    """A duration in seconds; ValueError saying how to write one."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration ({HOW_TO_WRITE})")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"{text} is negative ({HOW_TO_WRITE})")
        return _capped(text, float(text))
    value = str(text).strip()
    if _BARE.match(value):
        return _capped(text, float(value))
    if _GO.match(value):
        return _capped(text, sum(float(n) * _UNIT[unit] for n, unit in _GO_PART.findall(value)))
    iso = _ISO.match(value.upper())
    if iso and value.upper() not in ("P", "PT") and any(iso.groups()):
        days, hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups())
        return _capped(text, days * 86400 + hours * 3600 + minutes * 60 + seconds)
    raise ValueError(f"{text!r} is not a duration ({HOW_TO_WRITE})")


def parse_limit(text: object) -> float | None:
    """A duration where 0, none or off mean no limit (None)."""
    if text is False or (isinstance(text, str) and text.strip().lower() in NONE_WORDS):
        return None  # YAML 1.1 reads a bare `off` or `no` as false
    try:
        seconds = parse_duration(text)
    except TooLong as exc:
        raise TooLong(f"{exc}; for no limit write 0 or none") from None
    return None if seconds == 0 else seconds


def parse_positive_duration(text: object) -> float:
    """A duration that must be greater than 0 (a connect timeout, an interval)."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be greater than 0 ({HOW_TO_WRITE})")
    return seconds
