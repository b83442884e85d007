"""Where the generated pages point: each model's page, GitHub's heading anchors and
Neuronpedia, so the markdown docs and the catalogue page link the same way."""

from __future__ import annotations

import re

from saereg.catalogue.resolver import NEURONPEDIA_URL as NEURONPEDIA

__all__ = ["NEURONPEDIA", "heading_anchor", "model_slug"]


def model_slug(model: str) -> str:
    """The file name (without .md) of a model's page under docs/models/."""
    return re.sub(r"[^a-z0-9._-]+", "_", model.lower()).strip("_")


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a '## [name](url)' heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")
