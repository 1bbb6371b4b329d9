"""A synthetic site of identical four-arm junctions, for benchmarks and fault tests: each
junction has two lanes per approach, each lane one loop detector (eight per junction), named
``xNNN-<approach initial><lane>`` (``x000-n1``).

>>> site = synthetic_site(3)
>>> [i["id"] for i in site["intersections"]], len(site["intersections"][0]["sensors"])
(['x000', 'x001', 'x002'], 8)
"""

from __future__ import annotations

from typing import Any

APPROACHES = ("north", "east", "south", "west")
DETECTORS_PER_INTERSECTION = len(APPROACHES) * 2


def synthetic_site(intersections: int, *, site_id: str = "synthetic",
                   name: str = "Synthetic site") -> dict[str, Any]:
    """The site as site-file data (``yaml.safe_dump`` it to get a site file)."""
    phase = {"min_green_s": 8, "max_green_s": 60, "yellow_s": 3, "all_red_s": 2}
    return {"id": site_id, "name": name, "intersections": [{
        "id": f"x{n:03d}", "name": f"Junction {n}", "lat": -0.5, "lon": 117.1,
        "approaches": [{"id": a, "lanes": [{"id": f"{a[0]}1", "movements": ["left", "through"]},
                                           {"id": f"{a[0]}2", "movements": ["through", "right"]}]}
                       for a in APPROACHES],
        "phases": [
            {"id": "ns", "movements": [f"{a}:{m}" for a in ("north", "south")
                                        for m in ("left", "through", "right")], **phase},
            {"id": "ew", "movements": [f"{a}:{m}" for a in ("east", "west")
                                        for m in ("left", "through", "right")], **phase},
        ],
        "plan": {"cycle_s": 90, "greens_s": {"ns": 40, "ew": 40}, "offset_s": 0},
        "sensors": [{"device_id": f"x{n:03d}-{a[0]}{k}", "kind": "loop", "approach": a,
                     "lane": f"{a[0]}{k}"} for a in APPROACHES for k in (1, 2)],
    } for n in range(intersections)]}
