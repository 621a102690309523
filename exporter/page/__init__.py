"""The status page: what an incident responder opens first (``lifeline serve`` at ``/``).

One screen answers "which services are blocked from which networks, how,
since when, and is it getting worse": "Now" first (a headline counting the
ongoing incidents, then one line each), the legend, a matrix of services by vantages (the
worst verdict of each service's targets, in words, a glyph and a colour), a
timeline of verdict bands per service, recent changes, and a drill-down with
the stage-by-stage evidence of one (target, vantage).

Everything is rendered on the server from the typed status (`view.Status`) and the store's
verdict changes, so the page is complete without JavaScript and testable
without a browser. ``static/page.js`` only adds live updates (it polls
``/api/v1/status`` and patches the cells that changed), the clipboard button
and keyboard navigation. Every value shown may come from a hostile network
(titles, reasons, even names), so the HTML comes from Jinja2 templates with
autoescaping on for every template, the page carries no inline script, and a
Content-Security-Policy forbids any.

- ``view``: verdict looks, times, the status document grouped (cells, vantages, counts)
- ``now``: the "Now" section: its headline (the incidents counted) and one line per incident
- ``timeline``: verdict bands and the ``/api/v1/timeline`` document
- ``render``: the records the templates read, the Jinja2 environment, the page
- ``drill``: the drill-down page's records and renderer
- ``summary``: the text summary
- ``routes``: the aiohttp handlers
- ``templates/``: the HTML
"""

from exporter.page.drill import render_target_page
from exporter.page.render import render_page
from exporter.page.routes import add_page_routes
from exporter.page.source import ChangeRow, PageSource
from exporter.page.summary import summary_text
from exporter.page.timeline import TIMELINE_SCHEMA, timeline
from exporter.page.view import verdict_label

__all__ = [
    "TIMELINE_SCHEMA",
    "ChangeRow",
    "PageSource",
    "add_page_routes",
    "render_page",
    "render_target_page",
    "summary_text",
    "timeline",
    "verdict_label",
]
