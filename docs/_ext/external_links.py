"""Fail the ``-W`` build on a broken link into an external inventory.

Sphinx's intersphinx turns ``:class:`torch.Tensor``` into a link built from the
inventory entry's URI. A URI without its ``#anchor`` (``tensors.html`` instead of
``tensors.html#torch.Tensor``) or on a page the project does not have still builds
silently and lands the reader on the wrong place or a 404. After each page is resolved,
this extension looks at every link whose target starts with the base URL of a project
in ``external_link_inventories`` and warns (an error under ``-W``) unless

* it has a non-empty ``#fragment``,
* its page is a document (``std:doc`` entry) of that project's inventory, and
* ``page#fragment`` is the target of one of that inventory's entries.

The inventories are read from the files themselves (``read_inventory``), independently
of intersphinx and of the script that writes them.

``external_link_inventories`` maps a project name to ``(base_url, inventory_path)``.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

# name, role, priority, uri, display name (the name may contain spaces: std:label).
_LINE = re.compile(r"(.+?)\s+(\S+)\s+-?\d+\s+?(\S*)\s+.*")


def read_inventory(path: str | Path) -> list[tuple[str, str, str]]:
    """``(name, role, uri)`` of each entry of a version-2 ``objects.inv``, ``$`` expanded."""
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n", 4)
    if lines[0] != b"# Sphinx inventory version 2" or len(lines) < 5:
        raise ValueError(f"read_inventory: path must be a version-2 Sphinx inventory, got {path}")
    entries = []
    for line in zlib.decompress(lines[4]).decode().splitlines():
        match = _LINE.match(line.rstrip())
        if match is None:
            raise ValueError(f"read_inventory: {path}: cannot read the line {line!r}")
        name, role, uri = match.groups()
        if uri.endswith("$"):
            uri = uri[:-1] + name
        entries.append((name, role, uri))
    return entries


class InventoryLinks:
    """The pages and targets of one inventory, for checking links into it."""

    def __init__(self, base_url: str, path: str | Path) -> None:
        self.base = base_url.rstrip("/") + "/"
        entries = read_inventory(path)
        self.pages = {uri for _name, role, uri in entries if role == "std:doc"}
        self.targets = {uri for _name, role, uri in entries if role != "std:doc"}

    def problem(self, refuri: str) -> str | None:
        """Why ``refuri`` (a link into this project) is broken, or None."""
        relative = refuri[len(self.base) :]
        page, sep, fragment = relative.partition("#")
        if not sep or not fragment:
            return "has no #fragment"
        if page not in self.pages:
            return f"points to {page!r}, a page not in the inventory"
        if relative not in self.targets:
            return f"points to #{fragment}, no entry of the inventory"
        return None


def _projects(app: Any) -> dict[str, InventoryLinks]:
    cache = getattr(app, "_external_link_inventories", None)
    if cache is None:
        cache = {
            name: InventoryLinks(base, path)
            for name, (base, path) in app.config.external_link_inventories.items()
        }
        app._external_link_inventories = cache
    return cache


def check_links(app: Any, doctree: nodes.document, docname: str) -> None:
    """Warn about each broken link into an external inventory on page ``docname``."""
    projects = _projects(app)
    for node in doctree.findall(nodes.reference):
        refuri = node.get("refuri", "")
        for name, links in projects.items():
            if refuri.startswith(links.base):
                problem = links.problem(refuri)
                if problem:
                    logger.warning(
                        "link into the %s inventory %s: %s",
                        name,
                        problem,
                        refuri,
                        location=node,
                        type="external-link",
                    )
                break


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("external_link_inventories", {}, "env")
    app.connect("doctree-resolved", check_links)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
