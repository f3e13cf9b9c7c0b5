"""The per-slide consistency map as stored in the hr-cache, next to the slide's HR tiles.

Two copies of each computed tile's value (``compute.consistency``), written by the worker that
computed the tile, never updated (so no read-modify-write races between workers):

* the tile object's user metadata (``x-amz-meta-consistency-db``): the viewer reads it with
  the tile, at no extra request;
* one JSON fragment per batch and slide under ``schemas.layout.hr_consistency_prefix``
  (``{"model": ..., "tiles": {"<level>/<col>_<row>": dB}}``): a reader lists and merges them
  into the slide's map. They live under the slide's HR prefix, so eviction and export treat
  them like the tiles.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

from schemas.events import TileRef

METADATA_KEY = "consistency-db"  # S3 user metadata of a computed tile


def tile_name(tile: TileRef) -> str:
    """The map's key of a tile: ``<level>/<col>_<row>``, as in its hr-cache key."""
    return f"{tile.level}/{tile.col}_{tile.row}"


def metadata_of(value_db: float) -> dict[str, str]:
    return {METADATA_KEY: f"{value_db:.2f}"}


def parse_value(raw: object) -> float | None:
    """A stored dB value (text or number), or None if absent or not a finite non-negative number."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def encode_fragment(values_db: Mapping[str, float], model: str) -> bytes:
    return json.dumps({"model": model, "tiles": dict(values_db)}, separators=(",", ":")).encode()


def decode_fragment(data: bytes) -> dict[str, float]:
    """Tile name -> dB of one fragment; entries that are not such pairs are skipped (the
    map is advisory: a damaged fragment must not hide the others)."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return {}
    tiles = document.get("tiles") if isinstance(document, dict) else None
    if not isinstance(tiles, dict):
        return {}
    out = {}
    for name, raw in tiles.items():
        value = parse_value(raw)
        if isinstance(name, str) and value is not None:
            out[name] = value
    return out


def merge(fragments: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """One map; a tile in several fragments (computed twice after a lease expired) keeps its
    lowest value, so a disagreement is never hidden."""
    out: dict[str, float] = {}
    for fragment in fragments:
        for name, value in fragment.items():
            out[name] = min(value, out.get(name, value))
    return out
