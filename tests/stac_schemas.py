"""Offline STAC validation for the tests: the core STAC schemas bundled with pystac and the extension
schemas bundled in ``tests/data/stac-schemas/`` (see its README), checked with jsonschema. Nothing
is fetched: an extension whose schema is not bundled (and not in ``STRUCTURAL``) fails."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).parent / "data" / "stac-schemas"
#: extensions checked structurally by the tests instead of by a schema (datacube: check_datacube)
STRUCTURAL = {"https://stac-extensions.github.io/datacube/v2.2.0/schema.json"}


def bundled() -> dict[str, dict[str, Any]]:
    """``{schema URI: schema}`` of the bundled extension schemas."""
    out = {}
    for p in sorted(SCHEMAS.glob("*.json")):
        doc = json.loads(p.read_text())
        out[doc["$id"]] = doc
    return out


def validate(doc: dict[str, Any]) -> list[str]:
    """Validate one STAC document (item or collection) offline; returns the extension URIs checked.
    Raises ``jsonschema.ValidationError`` (or pystac's STACValidationError for the core) on failure."""
    import jsonschema
    from pystac.validation import validate_dict

    core = copy.deepcopy(doc)
    core["stac_extensions"] = []
    validate_dict(core)  # core STAC schemas: bundled with pystac
    schemas = bundled()
    checked = []
    for uri in doc.get("stac_extensions", []):
        if uri in STRUCTURAL:
            continue
        if uri not in schemas:
            raise AssertionError(f"{doc.get('id')}: extension {uri} has no bundled schema in {SCHEMAS}")
        jsonschema.Draft7Validator(schemas[uri]).validate(doc)
        checked.append(uri)
    return checked
