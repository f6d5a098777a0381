"""Node-level alerts (`NodeSnapshot.alerts`, e.g. a full disk), loud, until they clear."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget


class AlertBanner(Widget):
    """One line per alert; hidden when there is none."""

    DEFAULT_CSS = """
    AlertBanner { height: auto; padding: 0 1; background: $error 30%; display: none; }
    AlertBanner.-active { display: block; }
    """

    alerts: reactive[tuple[str, ...]] = reactive(())

    def watch_alerts(self, alerts: tuple[str, ...]) -> None:
        self.set_class(bool(alerts), "-active")

    def render(self) -> Content:
        return Content("\n").join(
            Content.assemble(("⚠ ", "bold $error"), (alert, "bold $text")) for alert in self.alerts
        )
