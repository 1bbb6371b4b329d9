"""Finding and running SUMO from the ``eclipse-sumo`` wheel, and reading ``.sumocfg`` files.

SUMO's binaries live in ``sumo.SUMO_HOME/bin``; tools and XML schemas look for the
``SUMO_HOME`` environment variable, which :func:`sumo_env` sets for child processes and
:func:`ensure_sumo_home` for this process (libsumo reads it too).
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path


class SumoError(RuntimeError):
    """A SUMO tool failed or a SUMO file cannot be used; the message says which and why."""


def sumo_home() -> Path:
    import sumo

    return Path(sumo.SUMO_HOME)


def ensure_sumo_home() -> None:
    os.environ.setdefault("SUMO_HOME", str(sumo_home()))


def sumo_env() -> dict[str, str]:
    return {**os.environ, "SUMO_HOME": str(sumo_home())}


def binary(name: str) -> Path:
    path = sumo_home() / "bin" / name
    if not path.exists():
        raise SumoError(f"SUMO binary {name!r} not found at {path}")
    return path


def run_tool(name: str, args: list[str], *, cwd: Path | None = None) -> str:
    """Run a SUMO binary; its output on success, :class:`SumoError` with it on failure."""
    result = subprocess.run(
        [str(binary(name)), *args], cwd=cwd, env=sumo_env(), capture_output=True, text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SumoError(f"{name} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout + result.stderr


@dataclass(frozen=True)
class SumoConfig:
    """The parts of a ``.sumocfg`` that Simpang uses, with paths made absolute."""

    path: Path
    net_file: Path
    route_files: list[Path] = field(default_factory=list)
    additional_files: list[Path] = field(default_factory=list)
    begin_s: float = 0.0
    end_s: float | None = None
    step_length_s: float = 1.0
    # Output files the configuration asks for (``…-output`` options, names as written), which
    # a run sends to its own directory.
    output_options: dict[str, str] = field(default_factory=dict)


def read_sumocfg(path: str | Path) -> SumoConfig:
    """Read any SUMO configuration file.

    >>> from simulator.sumo_tools import game_scenario
    >>> cfg = read_sumocfg(game_scenario("cross"))
    >>> cfg.net_file.name, cfg.step_length_s
    ('cross.net.xml', 0.2)
    """
    path = Path(path).resolve()
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise SumoError(f"{path}: cannot read SUMO configuration: {exc}") from None
    values: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for section in root:
        for option in section:
            value = option.get("value")
            if value is not None:
                values[option.tag] = value
                if option.tag.endswith("-output") and value.strip():
                    outputs[option.tag] = value

    def files(key: str) -> list[Path]:
        raw = values.get(key, "")
        return [(path.parent / item.strip()).resolve() for item in raw.split(",") if item.strip()]

    nets = files("net-file")
    if not nets:
        raise SumoError(f"{path}: no <net-file> in the configuration")
    if not nets[0].exists():
        raise SumoError(f"{path}: net-file {nets[0]} does not exist")
    return SumoConfig(
        path=path,
        net_file=nets[0],
        route_files=files("route-files"),
        additional_files=files("additional-files"),
        begin_s=float(values.get("begin", 0)),
        end_s=float(values["end"]) if "end" in values else None,
        step_length_s=float(values.get("step-length", 1.0)),
        output_options=outputs,
    )


# Elements of additional files that write output, and the attribute naming the file.
OUTPUT_ATTRIBUTES = {
    "inductionLoop": "file", "e1Detector": "file", "instantInductionLoop": "file",
    "laneAreaDetector": "file", "e2Detector": "file", "entryExitDetector": "file",
    "e3Detector": "file", "edgeData": "file", "laneData": "file", "routeProbe": "file",
    "vTypeProbe": "file", "timedEvent": "dest", "calibrator": "output",
}


def redirect_outputs(additional_file: Path, out_dir: Path) -> Path:
    """``additional_file``, or a copy of it in ``out_dir`` whose outputs are written to
    ``out_dir`` too, so that running someone else's scenario never writes next to its files
    (which may be an installed package).

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> game = game_scenario("cross").parent
    >>> copy = redirect_outputs(game / "input_additional.add.xml", out)
    >>> copy.parent == out, ET.parse(copy).getroot()[0].get("dest") == str(out / "tlsstate.xml")
    (True, True)
    >>> programme = game / "cross" / "cross.tls.add.xml"
    >>> redirect_outputs(programme, out) == programme
    True
    """
    try:
        tree = ET.parse(additional_file)
    except (OSError, ET.ParseError) as exc:
        raise SumoError(f"{additional_file}: cannot read additional file: {exc}") from None
    changed = False
    for element in tree.iter():
        attribute = OUTPUT_ATTRIBUTES.get(element.tag)
        target = element.get(attribute) if attribute else None
        if attribute and target and target not in ("NUL", "/dev/null"):
            element.set(attribute, str(out_dir / Path(target).name))
            changed = True
    if not changed:
        return additional_file
    out_dir.mkdir(parents=True, exist_ok=True)
    copy = out_dir / f"redirected.{additional_file.name}"
    tree.write(copy, encoding="unicode")
    return copy


def game_scenario(name: str) -> Path:
    """A scenario shipped in the eclipse-sumo wheel (``tools/game``: cross, corridor, grid6…)."""
    path = sumo_home() / "tools" / "game" / f"{name}.sumocfg"
    if not path.exists():
        raise SumoError(f"no SUMO game scenario {name!r} at {path}")
    return path
