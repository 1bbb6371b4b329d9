"""What Grafana does with a dashboard's InfluxQL before sending it, and with an alert rule's
results after: Grafana cannot run on the test machines, so the tests do these steps here.

* Template variables: ``$name``, ``${name}`` and ``[[name]]``; a multi-value or include-all
  variable is regex-escaped and several values become ``(a|b)``; "All" with a custom
  all-value substitutes it as written (Grafana's InfluxDB datasource, ``interpolateQueryExpr``).
* Macros: ``$timeFilter`` → ``time >= Fms and time <= Tms``; ``$__interval`` → the interval.
* Alert expressions: ``reduce`` (last, mean, max, min, sum, count) and ``threshold``
  (gt, lt, within_range, outside_range) over each series, as unified alerting evaluates them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_REGEX_SPECIALS = re.compile(r"[\\^$*+?.()|[\]{}/]")


def escape_regex(value: str) -> str:
    return _REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), value)


@dataclass
class Variable:
    name: str
    values: list[str]
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    selected_all: bool = False

    def expand(self, options: list[str] | None = None) -> str:
        if self.selected_all and self.all_value is not None:
            return self.all_value
        values = options if self.selected_all and options is not None else self.values
        if not (self.multi or self.include_all):
            return values[0]
        escaped = [escape_regex(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    @classmethod
    def from_dashboard(cls, spec: dict[str, Any], values: list[str],
                       *, selected_all: bool = False) -> Variable:
        return cls(spec["name"], values, bool(spec.get("multi")), bool(spec.get("includeAll")),
                   spec.get("allValue"), selected_all)


@dataclass
class TimeRange:
    from_ms: int
    to_ms: int
    interval: str = "1m"


@dataclass
class Expander:
    time_range: TimeRange
    variables: dict[str, Variable] = field(default_factory=dict)

    def __call__(self, query: str) -> str:
        query = query.replace("$timeFilter", f"time >= {self.time_range.from_ms}ms and "
                                             f"time <= {self.time_range.to_ms}ms")
        query = query.replace("$__interval", self.time_range.interval)
        for name in sorted(self.variables, key=len, reverse=True):
            value = self.variables[name].expand()
            query = (query.replace(f"${{{name}}}", value).replace(f"[[{name}]]", value)
                     .replace(f"${name}", value))
        leftover = re.findall(r"\$\{?\w+", query)
        if leftover:
            raise ValueError(f"unexpanded {leftover} in {query}")
        return query


def reduce(values: list[float | None], reducer: str) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    match reducer:
        case "last":
            return present[-1]
        case "mean":
            return sum(present) / len(present)
        case "max":
            return max(present)
        case "min":
            return min(present)
        case "sum":
            return sum(present)
        case "count":
            return float(len(present))
    raise ValueError(f"unknown reducer {reducer}")


def threshold(value: float | None, evaluator: dict[str, Any]) -> bool:
    if value is None:
        return False
    params = evaluator["params"]
    match evaluator["type"]:
        case "gt":
            return value > params[0]
        case "lt":
            return value < params[0]
        case "within_range":
            return bool(params[0] < value < params[1])
        case "outside_range":
            return bool(value < params[0] or value > params[1])
    raise ValueError(f"unknown evaluator {evaluator['type']}")


def expander(dashboard: dict[str, Any], time_range: TimeRange,
             **values: list[str]) -> Expander:
    """The dashboard's variables set to ``values``; a variable not given is set to All."""
    variables = {}
    for spec in dashboard.get("templating", {}).get("list", []):
        chosen = values.get(spec["name"])
        variables[spec["name"]] = Variable.from_dashboard(
            spec, chosen or ["all"], selected_all=chosen is None)
    return Expander(time_range, variables)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with queries, rows' children included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.extend(panels(panel) if panel.get("type") == "row" else [panel])
    return [p for p in found if p.get("targets")] + [
        p for p in found if not p.get("targets") and p.get("type") != "row"]


def panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    matching = [p for p in panels(dashboard) if p.get("title") == title]
    if len(matching) != 1:
        raise KeyError(f"{len(matching)} panels titled {title!r}")
    return matching[0]


def run_targets(db: Any, target_panel: dict[str, Any], expand: Expander
                ) -> dict[str, list[dict[str, Any]]]:
    """refId → rows (tags merged in) of each of the panel's queries, as Grafana sends them."""
    return {t["refId"]: db.rows(expand(t["query"])) for t in target_panel["targets"]}


def firing(db: Any, rule: dict[str, Any], now_ms: int) -> list[dict[str, str]]:
    """The label sets of the series for which a ``query → reduce → threshold`` rule is true
    now (``for`` aside: that is Grafana's clock, not the data's)."""
    steps = {step["refId"]: step for step in rule["data"]}
    condition = steps[rule["condition"]]["model"]
    reduced = steps[condition["expression"]]["model"]
    query_step = steps[reduced["expression"]]
    window = query_step["relativeTimeRange"]
    expand = Expander(TimeRange(now_ms - window["from"] * 1000, now_ms - window["to"] * 1000,
                                f"{query_step['model']['intervalMs'] // 1000}s"))
    assert reduced["type"] == "reduce" and condition["type"] == "threshold"
    out = []
    for result in db.raw(expand(query_step["model"]["query"]))["results"]:
        for series in result.get("series", []):
            values = [row[1] for row in series["values"]]
            if threshold(reduce(values, reduced["reducer"]),
                         condition["conditions"][0]["evaluator"]):
                out.append(series.get("tags", {}))
    return out
