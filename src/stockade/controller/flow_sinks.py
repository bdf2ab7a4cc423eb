"""The controller's flow log as its configuration asks: the ring (`controller.flows`), filled back
from the JSON-lines file when there is one (`controller.flow_file`), with that file and the OTLP
exporter (`controller.flow_otlp`) as its sinks.

Invariant: a flow file that cannot be read back (unreadable, corrupt lines) never stops the
controller: what can be read is restored, the rest is logged and counted, and writing goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from stockade.clock import Clock, utc_now
from stockade.controller.config import ControllerConfig
from stockade.controller.flow_file import FlowFile, read_newest
from stockade.controller.flows import FlowLog, FlowSink

log = logging.getLogger(__name__)


def open_flow_log(config: ControllerConfig, cluster_id: str, clock: Clock = utc_now) -> FlowLog:
    sinks: list[FlowSink] = []
    restored: tuple[dict[str, Any], ...] = ()
    if config.flow_log is not None:
        try:
            back = read_newest(config.flow_log, config.flow_log_keep, config.flow_history)
        except OSError as e:
            log.error("flow log %s: cannot read back earlier records (%s); starting with none", config.flow_log, e)
        else:
            restored = back.lines
            if back.skipped:
                log.warning("flow log %s: skipped %d unreadable line(s) (a torn last write?)",
                            config.flow_log, back.skipped)
        sinks.append(FlowFile(config.flow_log, config.flow_log_max_bytes, config.flow_log_keep))
    if config.otlp_endpoint is not None:
        # Imported only when asked for: the OpenTelemetry SDK costs every other start its import time.
        from stockade.controller.flow_otlp import OtlpFlowSink
        sinks.append(OtlpFlowSink(config.otlp_endpoint, cluster_id))
    flow_log = FlowLog(config.flow_history, sinks, clock)
    skipped = flow_log.restore(restored)
    if skipped:
        log.warning("flow log %s: %d line(s) were no flow record and were skipped", config.flow_log, skipped)
    if restored:
        log.info("flow log %s: %d earlier record(s) restored, numbering on from seq %d",
                 config.flow_log, len(restored) - skipped, flow_log.last_seq + 1)
    return flow_log
