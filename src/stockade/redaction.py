"""Secrets never reach a log or the audit log: one place that finds and masks anything token-shaped.

A Stockade token is `stk_` and 43 URL-safe base64 characters (`controller.auth.new_token`).
It can reach a log line or an audit entry through any field a caller controls — a URL path
(`DELETE /tokens/stk_…`), a name, a reason built from input — so masking is done here, on the
way out, whatever field it came in, rather than by every writer remembering to.

- `redact(text)`: the text with every token-shaped run replaced by `stk_…REDACTED`.
- `redact_value(value)`: the same through dicts, lists and tuples (keys too); other values as is.
- `install_log_redaction()`: every log record of this process, of any logger and handler, is
  masked when it is made (a log record factory): its message, its traceback and its stack.
  It also writes the control characters of the record's string arguments (the data a message
  quotes: a name, a path, a refusal's reason built from input) as escapes (`\n`, `\x1b`), so
  that a caller's text cannot end a log line and forge the next one, nor drive a terminal.
  The format string itself is the code's, and is left as it is.

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
# Every C0 control but tab, and DEL: what ends a line or moves a terminal's cursor.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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


def one_line(text: str) -> str:
    """`text` with its control characters written as Python escapes (`\\n`, `\\r`, `\\x1b`)."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], text) if CONTROL.search(text) else text


def _one_line_args(args: Any) -> Any:
    if isinstance(args, tuple):
        return tuple(one_line(a) if isinstance(a, str) else a for a in args)
    if isinstance(args, dict):
        return {k: one_line(v) if isinstance(v, str) else v for k, v in args.items()}
    return args


_installed = False


def install_log_redaction() -> None:
    """Mask token-shaped text in every log record made from now on (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.args:
            record.args = _one_line_args(record.args)
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
