"""Charts as SVG drawn on the server: no script, no CDN; hovering a shape shows its
`<title>` (the browser's own tooltip), so they work with JavaScript off."""

from __future__ import annotations

from decimal import Decimal

from markupsafe import Markup, escape

from llmgw.budgets.pricing import micros_to_usd
from llmgw.server.ui.data import Spend

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f")
OTHER = "#bab0ac"
MAX_KEYS = len(PALETTE)  # more keys than colours: the rest share one grey


def usd(micros: int) -> str:
    """Exact dollars, six decimals (as the CLI prints them)."""
    return format(micros_to_usd(micros), "f")


def colours(keys: list[str]) -> dict[str, str]:
    return {k: PALETTE[i] if i < MAX_KEYS else OTHER for i, k in enumerate(keys)}


def _nice_max(micros: int) -> int:
    """A round axis top at or above `micros` (1, 2 or 5 times a power of ten)."""
    if micros <= 0:
        return 1_000_000
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= micros:
                return step * m
        step *= 10


def spend_chart(spend: Spend, colour_of: dict[str, str], *, width: int = 960,
                height: int = 300) -> Markup:
    """Stacked cost bars per day (today's outlined as "so far") and the cache's saving as a
    line; every shape titled with its exact amount."""
    left, right, top, bottom = 78, 12, 14, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max([max(d.total.cost_micros, d.total.saved_micros)
                               for d in spend.days] + [0]))
    n = len(spend.days)
    slot = plot_w / n
    bar_w = slot * 0.72

    def y(v: int) -> float:
        return top + plot_h - plot_h * v / top_value

    out = [(f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} '
            f'{height}" width="{width}" height="{height}" role="img" '
            'aria-label="Cost per day, stacked">')]
    for i in range(5):  # grid lines and dollar ticks
        v = top_value * i // 4
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" '
                   f'y2="{y(v):.1f}"/><text class="tick" x="{left - 6}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">${_short(micros_to_usd(v))}</text>')
    saved_points = []
    for i, day in enumerate(spend.days):
        x = left + i * slot + (slot - bar_w) / 2
        title = (f"{day.day}{' (today so far)' if day.today else ''}: "
                 f"${usd(day.total.cost_micros)}, {day.total.requests} requests, "
                 f"saved ${usd(day.total.saved_micros)}")
        css = "day today" if day.today else "day"
        out.append(f'<rect class="{css}" x="{x - 1:.1f}" y="{top}" width="{bar_w + 2:.1f}" '
                   f'height="{plot_h}" data-day="{day.day}" '
                   f'data-cost-micros="{day.total.cost_micros}"><title>{escape(title)}</title>'
                   '</rect>')
        base = 0
        for key, cost in day.segments:
            h = plot_h * cost / top_value
            out.append(f'<rect class="seg" x="{x:.1f}" y="{y(base + cost):.1f}" '
                       f'width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                       f'data-day="{day.day}" data-key="{escape(key)}" data-micros="{cost}" '
                       f'fill="{colour_of.get(key, OTHER)}"><title>{escape(day.day)} '
                       f'{escape(key)}: ${usd(cost)}</title></rect>')
            base += cost
        saved_points.append(f"{x + bar_w / 2:.1f},{y(day.total.saved_micros):.1f}")
        if i % 5 == (n - 1) % 5 or day.today:
            label = "today" if day.today else day.day[5:]
            out.append(f'<text class="tick" x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" '
                       f'text-anchor="middle">{label}</text>')
    out.append(f'<polyline class="saved" points="{" ".join(saved_points)}"><title>saved by '
               f'the cache, per day</title></polyline>')
    out.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
               f'y2="{top + plot_h}"/>')
    out.append("</svg>")
    return Markup("".join(out))


def budget_bar(spent: int, reserved: int, limit: int, warn_ratio: float, *,
               width: int = 200, height: int = 16) -> Markup:
    """Spent, then reserved, against the limit; the warn line marked. Past the limit the bar
    is full (the figures beside it say by how much)."""
    def w(v: int) -> float:
        return width * min(v / limit, 1.0) if limit else (width if v else 0.0)

    spent_w = w(spent)
    held_w = min(w(spent + reserved), width) - spent_w
    warn_x = width * warn_ratio
    over = limit and spent + reserved >= limit * warn_ratio
    return Markup(
        f'<svg class="bar" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(_used(spent, reserved, limit))} used">'
        f'<rect class="bar-bg" width="{width}" height="{height}"/>'
        f'<rect class="{"bar-spent over" if over else "bar-spent"}" width="{spent_w:.1f}" '
        f'height="{height}"><title>spent ${usd(spent)}</title></rect>'
        f'<rect class="bar-held" x="{spent_w:.1f}" width="{max(held_w, 0):.1f}" '
        f'height="{height}"><title>reserved ${usd(reserved)}</title></rect>'
        f'<line class="bar-warn" x1="{warn_x:.1f}" x2="{warn_x:.1f}" y1="0" y2="{height}">'
        f'<title>warn at {warn_ratio:.0%}</title></line></svg>')


def _used(spent: int, reserved: int, limit: int) -> str:
    return f"{(spent + reserved) / limit:.1%}" if limit else "100%"


def _short(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text
