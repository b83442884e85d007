"""The filters of `list_saes` / `saereg list`, checked before they filter.

A filter value without glob characters that names nothing (a model, format, release or
hook site no release has) is a mistake, not a question whose answer is "nothing": it is
an UnknownReferenceError (exit code 2) naming close matches, in the API and the CLI
alike. A glob that matches nothing is an honest empty answer. Widths go through the one
parser both use (`records.parse_width`: 16384, '16k', '65k', '1m', '2pow14').
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from saereg.base.errors import ArgumentError, UnknownReferenceError
from saereg.catalogue.models import get_model, model_matches, model_table
from saereg.catalogue.records import parse_width
from saereg.catalogue.refs import close_matches

GLOB_CHARS = frozenset("*?[")


def is_glob(value: str) -> bool:
    return any(c in GLOB_CHARS for c in value)


def width_value(width: int | str | None) -> int | None:
    """`width` as a number of latents: an int, or text `saereg list --width` accepts."""
    if width is None or (isinstance(width, int) and not isinstance(width, bool)):
        return width
    if isinstance(width, str):
        try:
            return parse_width(width)
        except ValueError:
            pass
    raise ArgumentError(
        f"invalid width {width!r}: use a number of latents such as 16384, or 16k, 65k, 1m"
    )


def _unknown(kind: str, value: str, candidates: Iterable[str], flag: str | None) -> None:
    pool = sorted(set(candidates))
    near = close_matches(value, pool)
    tip = f"; did you mean {', '.join(repr(m) for m in near)}?" if near else ""
    more = (
        f" ({flag} also takes globs such as '{value[:3]}*')"
        if flag
        else f" (the catalogue's {kind}s: {', '.join(pool)})"
    )
    raise UnknownReferenceError(f"no release has {kind} {value!r}{tip}{more}")


def check_filters(
    releases: Mapping[str, Mapping[str, Any]],
    hooks: Sequence[Any],
    *,
    model: str | None,
    release: str | None,
    hook: str | None,
    format: str | None,
) -> None:
    """Raise for a glob-free value that names nothing in the catalogue. `releases` maps
    release name → {"model", "format", ...}; `hooks` are the hook names of every row."""
    if release is not None and not is_glob(release) and release not in releases:
        _unknown("the name", release, releases, "--release")
    if format is not None and not any(r["format"] == format for r in releases.values()):
        _unknown("format", format, (r["format"] for r in releases.values()), None)
    if model is not None and not is_glob(model):
        models = {r["model"] for r in releases.values()}
        if not any(model_matches(m, model) for m in models):
            known = get_model(model)
            if known is None:
                names = [*models, *model_table().all_names()]
                _unknown("model", model, names, "--model")
            raise UnknownReferenceError(
                f"no release has SAEs for model {known.name!r} (a model the models table "
                f"knows); `saereg list` shows the models with SAEs"
            )
    if hook is not None and not is_glob(hook) and hook not in set(hooks):
        _unknown("hook site", hook, (h for h in hooks if h), "--hook")
