"""The audit trail as a terminal table that stays readable at any width down to 80 columns.

Why a renderable that picks its layout: without a terminal (CI logs, pipes) rich renders at 80
columns and squeezed the nine-column table until most cells were ``…``. The wide layout is used
when it fits; otherwise a compact one puts the status under the tool and the reasons, approver
and lease under the decision, and folds long words instead of cutting them.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .audit import Action, AuditTrail, _decision_label

__all__ = ["TrailTable"]

_STYLES = {
    "authorised+completed": "green",
    "denied": "red",
    "rejected": "red",
    "aborted": "yellow",
    "failed": "yellow",
    "in-doubt": "yellow",
    "approval-pending": "cyan",
}


def _title(trail: AuditTrail) -> str:
    title = f"audit trail of {trail.thread_id}"
    if trail.charter:
        title += f" — owner {trail.charter.owner}, {trail.charter.risk_tier} risk: {trail.charter.intent}"
    return title


def _sig(a: Action) -> Text:
    return Text("✔") if a.verified else Text("✘", style="red")


def _decision(a: Action) -> str:
    return _decision_label(a.decision)


def wide(trail: AuditTrail) -> Table:
    """One column per field (the layout when the console is wide enough)."""
    table = Table(title=_title(trail), show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("tool", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("decision")
    table.add_column("approver")
    table.add_column("lease", no_wrap=True)
    table.add_column("att", justify="right")
    table.add_column("rep", justify="right")
    table.add_column("sig", justify="center")
    for i, a in enumerate(trail.actions, 1):
        table.add_row(
            str(i),
            Text(a.tool),
            Text(a.status, style=_STYLES.get(a.status, "")),
            Text(_decision(a) + (f" ({', '.join(a.reasons)})" if a.reasons else "")),
            Text(a.approver or ""),
            Text(",".join(x[:8] for x in a.leases)),
            str(a.attempts),
            str(a.replays),
            _sig(a),
        )
    return table


def compact(trail: AuditTrail) -> Table:
    """Six columns: the status under the tool; reasons, approver and lease under the decision."""
    table = Table(title=_title(trail), box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("tool / status", overflow="fold")
    table.add_column("decision", overflow="fold", ratio=1)
    table.add_column("att", justify="right", no_wrap=True)
    table.add_column("rep", justify="right", no_wrap=True)
    table.add_column("sig", justify="center", no_wrap=True)
    for i, a in enumerate(trail.actions, 1):
        action = Text(a.tool, style="bold")
        action.append("\n" + a.status, style=_STYLES.get(a.status, ""))
        decision = Text(_decision(a))
        if a.reasons:
            decision.append("\n" + ", ".join(a.reasons), style="dim")
        if a.approver:
            decision.append(f"\nby {a.approver}")
        if a.leases:
            decision.append("\nlease " + ",".join(x[:8] for x in a.leases), style="dim")
        table.add_row(str(i), action, decision, str(a.attempts), str(a.replays), _sig(a))
    return table


class TrailTable:
    """A rich renderable: the wide table when it fits the console, else the compact one."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = wide(self.trail)
        natural = Measurement.get(console, options.update_width(10_000), table).maximum
        if natural > options.max_width:
            table = compact(self.trail)
        yield table

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, wide(self.trail))
