"""Turn the samples into paired ratios, a Markdown report and a JSON document."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .harness import FRAMEWORKS, SUBJECT, Contender, Group, Plan

#: The frameworks workflowhttp is compared with as speed ratios (> 1: workflowhttp is faster).
RIVALS = ("flask", "falcon")


def paired_ratios(numerator: Contender, denominator: Contender) -> list[float]:
    """Return ``numerator / denominator`` for the samples of each round."""
    return [a / b for a, b in zip(numerator.samples, denominator.samples, strict=True)]


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def group_ratios(group: Group) -> dict[str, list[float]]:
    """Return the per-round ratios of a group, by the label they describe.

    For a ``frameworks`` group: ``{rival: rival_time / workflowhttp_time}`` (speed ratios). For a
    ``variants`` group: ``{variant: variant_time / baseline_time}`` (costs).
    """
    baseline = group.baseline
    if baseline is None or not baseline.samples:
        return {}
    if group.kind == "frameworks":
        return {
            rival: paired_ratios(contender, baseline)
            for rival in RIVALS
            if (contender := group.contender(rival)) is not None
        }
    return {c.label: paired_ratios(c, baseline) for c in group.contenders}


def us_text(ns: float) -> str:
    """Return ``ns`` nanoseconds as µs, e.g. ``3.21 µs``."""
    us = ns / 1000
    if us < 10:
        return f"{us:.2f} µs"
    if us < 100:
        return f"{us:.1f} µs"
    return f"{us:.0f} µs"


def rate_text(ns: float) -> str:
    """Return the requests/s of ``ns`` nanoseconds per request, e.g. ``312.5k/s``."""
    rate = 1e9 / ns
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M/s"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k/s"
    return f"{rate:.0f}/s"


def ratio_text(values: Sequence[float]) -> str:
    """Return the median of ``values`` as ``1.23x``, with ``±N%`` from 4 values on."""
    if not values:
        return "n/a"
    q1, median, q3 = _quartiles(values)
    if len(values) < 4:
        return f"{median:.2f}x"
    spread = (q3 - q1) / 2 / median * 100
    return f"{median:.2f}x ±{spread:.0f}%"


def table(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> list[str]:
    """Return the lines of a Markdown table; ``align`` has one ``l`` or ``r`` per column."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(plan: Plan, meta: dict[str, Any]) -> str:
    """Return the human-readable report."""
    lines = [
        f"## workflowhttp benchmark: {meta['rounds']} rounds x {meta['seconds_per_round']} s, "
        f"Python {meta['python']}, {meta['cpus']} CPUs",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in plan.versions.items()),
        "",
    ]
    frameworks = [f for f in FRAMEWORKS if f in plan.versions]
    framework_groups = [g for g in plan.groups if g.kind == "frameworks"]
    if framework_groups:
        lines += [
            "Median µs per request · requests/s. `wf vs X` is the median over rounds of the "
            "paired ratio X time ÷ workflowhttp time: > 1 means workflowhttp is faster "
            "(±: half the interquartile range). `wf - raw` is workflowhttp's own cost per "
            "request above the hand-written WSGI floor.",
            "",
        ]
        header = ["endpoint", *frameworks, "wf - raw", *(f"wf vs {r}" for r in RIVALS)]
        rows = []
        for group in framework_groups:
            row = [f"`{group.title}`"]
            for framework in frameworks:
                contender = group.contender(framework)
                if contender is None or not contender.samples:
                    row.append("—")
                else:
                    row.append(f"{us_text(contender.median_ns)} · {rate_text(contender.median_ns)}")
            subject, raw = group.contender(SUBJECT), group.contender("raw")
            if subject and raw and subject.samples:
                row.append(f"{(subject.median_ns - raw.median_ns) / 1000:.2f} µs")
            else:
                row.append("—")
            ratios = group_ratios(group)
            row += [ratio_text(ratios.get(rival, [])) for rival in RIVALS]
            rows.append(row)
        lines += table(header, "l" + "r" * (len(header) - 1), rows)
        lines.append("")

    variant_groups = [g for g in plan.groups if g.kind == "variants" and g.contenders]
    if variant_groups:
        lines += [
            "workflowhttp variants. `cost` is the median over rounds of the paired ratio "
            "variant time ÷ baseline time: 1.00x costs the same, > 1 is slower.",
            "",
        ]
        rows = []
        for group in variant_groups:
            ratios = group_ratios(group)
            for contender in group.contenders:
                if not contender.samples:
                    continue
                rows.append(
                    [
                        group.row_titles.get(contender.label, contender.label),
                        us_text(contender.median_ns),
                        rate_text(contender.median_ns),
                        "baseline"
                        if contender is group.baseline
                        else ratio_text(ratios.get(contender.label, [])),
                    ]
                )
        lines += table(["variant", "µs/request", "requests/s", "cost"], "lrrr", rows)
        lines.append("")

    for title, items in (("Notes", plan.notes), ("Discrepancies", plan.discrepancies)):
        if items:
            lines += [f"**{title}**", "", *(f"- {item}" for item in items), ""]
    return "\n".join(lines)


def as_json(plan: Plan, meta: dict[str, Any]) -> dict[str, Any]:
    """Return every sample and summary as a JSON-serialisable document."""
    groups = []
    for group in plan.groups:
        ratios = group_ratios(group)
        groups.append(
            {
                "name": group.name,
                "title": group.title,
                "kind": group.kind,
                "ratio": "rival_time / workflowhttp_time"
                if group.kind == "frameworks"
                else "variant_time / baseline_time",
                "contenders": [
                    {
                        "label": c.label,
                        "title": group.row_titles.get(c.label, c.label),
                        "calls_per_sample": c.calls,
                        "samples_ns": c.samples,
                        "median_us": c.median_ns / 1000 if c.samples else None,
                        "requests_per_second": 1e9 / c.median_ns if c.samples else None,
                    }
                    for c in group.contenders
                ],
                "ratios": {
                    label: {"per_round": values, "median": statistics.median(values)}
                    for label, values in ratios.items()
                    if values
                },
            }
        )
    return {
        "meta": meta,
        "versions": plan.versions,
        "notes": plan.notes,
        "discrepancies": plan.discrepancies,
        "groups": groups,
    }
