"""The browser packages' files (bpmn-js for diagrams, dmn-js for decision tables, bpmn-auto-layout for diagrams
without a layout, Leaflet for shipment maps, Chart.js for the metrics), served from node_modules: nothing is
fetched from the internet."""

from __future__ import annotations

from pathlib import Path

from flask import abort, current_app, send_from_directory

from ..config import project_root
from . import bp

VENDOR_PACKAGES = {
    "bpmn-js": Path("bpmn-js") / "dist",
    "leaflet": Path("leaflet") / "dist",
    "chart.js": Path("chart.js") / "dist",
    "dmn-js": Path("dmn-js") / "dist",
    # bpmn-auto-layout is an ES module: the studio page maps its imports to these packages (an import map).
    "bpmn-auto-layout": Path("bpmn-auto-layout") / "dist",
    "bpmn-moddle": Path("bpmn-moddle") / "dist",
    "moddle": Path("moddle") / "dist",
    "moddle-xml": Path("moddle-xml") / "dist",
    "min-dash": Path("min-dash") / "dist",
    "saxen": Path("saxen") / "dist",
}
# The ES modules bpmn-auto-layout imports, by the name it imports them by (each package's dist/index.js).
AUTO_LAYOUT_MODULES = ("bpmn-auto-layout", "bpmn-moddle", "moddle", "moddle-xml", "min-dash", "saxen")


def vendor_dir(package: str) -> Path | None:
    """Where an installed package's browser files are (under the repository's node_modules)."""
    if package not in VENDOR_PACKAGES:
        return None
    root = Path(current_app.config.get("NODE_MODULES") or project_root() / "node_modules")
    folder = root / VENDOR_PACKAGES[package]
    return folder if folder.is_dir() else None


@bp.get("/vendor/<package>/<path:filename>")
def vendor_file(package: str, filename: str):
    """A file of an installed browser package (404 when it is not installed: run ``make install``)."""
    folder = vendor_dir(package)
    if folder is None:
        abort(404)
    return send_from_directory(folder, filename, max_age=86400)


def viewer_installed() -> bool:
    """Whether the diagram viewer is installed."""
    return vendor_dir("bpmn-js") is not None


def map_installed() -> bool:
    """Whether the map library (Leaflet) is installed."""
    return vendor_dir("leaflet") is not None


def dmn_editor_installed() -> bool:
    """Whether the decision table editor (dmn-js) is installed."""
    return vendor_dir("dmn-js") is not None


def auto_layout_installed() -> bool:
    """Whether bpmn-auto-layout and the modules it imports are installed."""
    return all(vendor_dir(name) is not None for name in AUTO_LAYOUT_MODULES)
