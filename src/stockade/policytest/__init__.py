"""Policy tests as code: expected verdicts, checked with trace against a desired state.

    expectations  a YAML file of flows and their expected verdict → typed `Expectation`s
    proposal      proposed object files → the `DesiredState` the controller would store (offline)
    evaluate      `DesiredState` × expectations → `Report` (each verdict from `compile.trace`)

Everything here is pure except `read_expectations`, which reads the one file.
There is no second policy evaluator: every verdict is `trace_flow`'s, which
runs the compiled host programs the kernel runs.
"""

from stockade.policytest.evaluate import Outcome, Report, evaluate
from stockade.policytest.expectations import Expectation, parse_expectations, read_expectations
from stockade.policytest.proposal import proposed_state

__all__ = ["Expectation", "Outcome", "Report", "evaluate", "parse_expectations", "proposed_state",
           "read_expectations"]
