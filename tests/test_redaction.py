"""Secrets are masked in log records: messages, tracebacks and stacks (stockade.redaction)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from stockade.redaction import MASK, redact, redact_value

SECRET = "stk_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"


def test_token_shaped_text_is_masked_in_values_and_keys() -> None:
    assert redact(f"DELETE /tokens/{SECRET}") == f"DELETE /tokens/{MASK}"
    assert redact("interface stk_ab stays") == "interface stk_ab stays"  # too short to be a token
    assert redact_value({SECRET: [SECRET, 1]}) == {MASK: [MASK, 1]}


def test_a_traceback_carrying_a_token_is_masked_in_the_log() -> None:
    code = textwrap.dedent(f"""
        import logging, sys
        from stockade.redaction import install_log_redaction
        install_log_redaction()
        logging.basicConfig(stream=sys.stdout, level=logging.INFO)
        try:
            raise ValueError("bad token {SECRET}")
        except ValueError:
            logging.getLogger("x").exception("failed for %s", "{SECRET}")
        logging.getLogger("x").info("here", stack_info=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ValueError: bad token" in out and "Traceback" in out  # the traceback is still there ...
    assert SECRET not in out and SECRET[4:24] not in out          # ... without the secret
    assert out.count(MASK) >= 2
