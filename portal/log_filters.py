"""Keep secrets out of log lines: API, worker and enrollment tokens and signed transfer URLs are masked.

Django logs the path of every 4xx/5xx response (`django.request`), and a transfer URL's path *is* its
credential; tokens could reach a message through an exception's text. The filter rewrites the formatted
message of every record that passes through the handlers it is attached to (settings.LOGGING).
"""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    # Personal API tokens, worker tokens and enrollment tokens (jobs.models.new_token).
    (re.compile(r"\b(lus|lwk|len)_[A-Za-z0-9_\-]{16,}"), r"\1_[redacted]"),
    # The signed part of a transfer URL (jobs.storage.sign), wherever the URL appears.
    (re.compile(r"(/worker/transfer/)[^\s/?\"']+"), r"\1[redacted]"),
    # Header values quoted in messages: "Authorization: Token …", "X-Fencing-Token: …".
    (re.compile(r"(?i)((?:authorization|x-fencing-token)[\"']?\s*[:=]\s*[\"']?(?:token |worker |bearer )?)"
                r"[^\s\"',}]+"), r"\1[redacted]"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Replace the record's message by its redacted, fully formatted text (args folded in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the record
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # The formatter prints exc_text as it is when set: format the traceback once, redacted.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
