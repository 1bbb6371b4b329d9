"""Reading a site file (YAML) into a :class:`simpang.site.Site`, with errors that name the file,
the path inside it and what is wrong."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from simpang.site import Site


class SiteFileError(ValueError):
    """A site file that cannot be used; ``str()`` lists every problem as ``file: path: what``."""

    def __init__(self, path: Path, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {where}: {what}" for where, what in problems))


def format_location(loc: tuple[int | str, ...]) -> str:
    """``("intersections", 0, "plan", "cycle_s")`` → ``intersections[0].plan.cycle_s``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_site(path: str | Path) -> Site:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteFileError(path, [("(file)", exc.strerror or str(exc))]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = f"not valid YAML: {getattr(exc, 'problem', exc)}"
        raise SiteFileError(path, [(where, problem)]) from None
    if not isinstance(data, dict):
        problem = "expected a mapping with id, name, intersections"
        raise SiteFileError(path, [("(top level)", problem)])
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        problems = [
            (format_location(tuple(err["loc"])), err["msg"].removeprefix("Value error, "))
            for err in exc.errors()
        ]
        raise SiteFileError(path, problems) from None
