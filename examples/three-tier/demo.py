"""The `make demo` walk-through: probe the interesting pairs of the three-tier example with
real packets and print what the policy expects beside what the kernel did."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from stockade.client_config import load_config
from stockade.cli.probing import run_probe
from stockade.compile.trace import Flow, trace_flow

FLOWS = Path(__file__).resolve().parent.parent / "three-tier.flows.yaml"
SEEN_AS = {"allow": "allowed", "deny": "denied"}


def main() -> int:
    console = Console(width=max(Console().width, 132))  # the table stays readable when piped
    cfg = load_config()  # resolved as every CLI command does: environment, then the config's context
    client = cfg.client()
    flows = yaml.safe_load(FLOWS.read_text())
    table = Table(title="Three-tier shop: real packets through the lab", header_style="bold")
    state = client.snapshot_state()
    for col in ("from", "to", "flow", "expected", "kernel did", "decided by (trace)", ""):
        table.add_column(col)
    misses = 0  # flows where the kernel or trace disagree with the expectation
    for f in flows:
        family = int(f.get("family", 4))
        result = run_probe(client, f["from"], f["to"], int(f.get("port", 0)), f["protocol"], family, None, 1.0)
        flow = f"{f['protocol']}{'/' + str(f['port']) if f.get('port') else ''} IPv{family}"
        colour = "green" if result["verdict"] == "allowed" else "red"
        src, dst = (tuple(ref.split("/")) for ref in (f["from"], f["to"]))
        why = trace_flow(state, Flow(src, dst, f["protocol"], f.get("port"), family))  # type: ignore[arg-type]
        ok = result["verdict"] == SEEN_AS[f["expect"]] and why.verdict == f["expect"]
        misses += not ok
        table.add_row(f["from"], f["to"], flow, f["expect"], f"[{colour}]{result['verdict']}[/{colour}]",
                      why.deciding_rule or "", "✓" if ok else "[bold red]MISMATCH[/bold red]")
    console.print(table)
    status = client.status()
    console.print(f"controller revision {status['revision']}; agents: "
                  + ", ".join(f"{a['host']}@{a['revision']}{'' if a.get('inSync') else ' (drift)'}"
                              for a in status.get("agents", [])))
    console.print(f"\nController API: {cfg.controller}  (OpenAPI: {cfg.controller}/docs)")
    # A token of its own for the browser, that ends by itself: the CLI's admin token stays in its file.
    created = client.create_token("admin", ttl="12h", name="dashboard-demo")
    first = cfg.controller.split(",")[0]
    console.print(f"Dashboard: [bold]{first}/ui/[/bold]  log in with this token (admin, valid 12 h):\n"
                  f"          {created['token']}\n"
                  f"          the lab's CA signed the controller's certificate: {cfg.ca} "
                  "(import it into the browser, or accept the warning)")
    console.print("Explore:  stockade get workloads -A   ·   stockade get policies -n shop -o yaml   ·   "
                  "stockade status   ·   stockade flows --denied\n"
                  "          stockade trace --from shop/web-1 --to shop/db-1 --port 5432 --protocol tcp\n"
                  "          stockade probe --from shop/web-1 --to shop/db-1 --port 5432 "
                  "--protocol tcp\nTear down: stockade lab down")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
