"""Secrets never reach a log or the audit log: one place that finds and masks anything token-shaped.

A Stockade token is `stk_` and 43 URL-safe base64 characters (`controller.auth.new_token`).
It can reach a log line or an audit entry through any field a caller controls — a URL path
(`DELETE /tokens/stk_…`), a name, a reason built from input — so masking is done here, on the
way out, whatever field it came in, rather than by every writer remembering to.

- `redact(text)`: the text with every token-shaped run replaced by `stk_…REDACTED`.
- `redact_value(value)`: the same through dicts, lists and tuples (keys too); other values as is.
- `install_log_redaction()`: every log record of this process, of any logger and handler, is
  masked when it is made (a log record factory): its message, its traceback and its stack.

Pure but for `install_log_redaction`, which wraps the process's log record factory once.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# At least 16 characters after the prefix: a real token has 43, and a short `stk_` word (an
# interface name like `stk_ab`) is not a secret.
TOKEN_SHAPED = re.compile(r"stk_[A-Za-z0-9_\-]{16,}")
MASK = "stk_…REDACTED"


def redact(text: str) -> str:
    return TOKEN_SHAPED.sub(MASK, text) if "stk_" in text else text


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


_installed = False


def install_log_redaction() -> None:
    """Mask token-shaped text in every log record made from now on (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report, as logging does
            return record
        if "stk_" in message:
            record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            # A traceback can carry a secret too (an exception's message, a repr of a request):
            # formatted and masked now; handlers print exc_text as it is when it is set.
            text = logging.Formatter().formatException(record.exc_info)
            if "stk_" in text:
                record.exc_text = redact(text)
        if record.stack_info and "stk_" in record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
