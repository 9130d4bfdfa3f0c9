"""Read a campaign YAML file into `Campaign`; every problem becomes `file: field.path: message`."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from winback.campaigns.model import Campaign
from winback.errors import ConfigError


def load_campaign(path: str | Path) -> Campaign:
    """Load and validate a campaign file; raises ConfigError naming the file and the field path."""
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise ConfigError("campaign file not found", path=shown)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", path=shown) from None
    campaign = parse_campaign(text, source=shown)
    campaign._base_dir = path.resolve().parent
    campaign._source_file = shown
    return campaign


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names a key twice.

    YAML 1.2 requires mapping keys to be unique, but PyYAML keeps the last value silently: a campaign
    with two `holdout_share:` lines would run with whichever came last. Keys brought in by a merge
    (`<<: *defaults`) may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first on line {first.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, *, source: str) -> Any:
    """Parse YAML config text safely (no duplicate keys); errors are a ConfigError naming the line."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", path=source, field=where) from None


def parse_campaign(text: str, *, source: str = "<campaign>") -> Campaign:
    """Validate campaign YAML text; `source` names it in errors."""
    data = load_yaml(text, source=source)
    if not isinstance(data, dict):
        raise ConfigError("a campaign file must be a YAML mapping (id: …, name: …, offers: …)", path=source)
    return validate_campaign_data(data, source=source)


def validate_campaign_data(data: dict[str, Any], *, source: str = "<campaign>") -> Campaign:
    """Validate an already parsed mapping into `Campaign`; the first error raises ConfigError."""
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        problems = list(dict.fromkeys(_describe(err) for err in exc.errors()))
        field, message = problems[0]
        more = len(problems) - 1
        hint = None
        if more:
            hint = "also: " + "; ".join(f"{f}: {m}" if f else m for f, m in problems[1:4])
            if more > 3:
                hint += f"; and {more - 3} more"
        raise ConfigError(message, path=source, field=field or None, hint=hint) from None


# Labels pydantic puts into an error location for the branches of a union (`str | dict[str, str]`).
_TYPE_LABELS = {"str", "int", "float", "bool", "list", "dict", "none", "time", "literal"}


def format_loc(loc: tuple[Any, ...]) -> str:
    """('offers', 2, 'percent') → 'offers[2].percent' (pydantic internals like function-after dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or part.startswith("function-") or part in _TYPE_LABELS):
            continue  # pydantic's validator/union labels, not a user-visible key
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    field = format_loc(loc)
    msg = str(err.get("msg", "invalid"))
    kind = err.get("type", "")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if msg.startswith("@"):
        # Our model validators name a sub-field as "@sub.field: message"; move it into the path.
        sub, _, rest = msg[1:].partition(": ")
        field = f"{field}.{sub}" if field else sub
        field = field.replace(".[", "[")
        msg = rest
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        msg = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
        if allowed and not close:
            msg += f" (allowed: {', '.join(allowed)})"
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        msg = f"{err.get('input')!r} is not allowed; expected one of {expected}"
    return field, msg


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found at `loc` inside Campaign (best effort, for suggestions)."""
    model: Any = Campaign
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside list[...], dict[..., ...], X | None annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


CAMPAIGNS_DIR = Path("campaigns")


def campaign_path(ref: str, search_dir: Path = CAMPAIGNS_DIR) -> Path:
    """A campaign given as a YAML path or as its id (looked up in `campaigns/*.yaml`)."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError("campaign file not found", path=str(path))
        return path
    known = []
    for candidate in sorted(Path(search_dir).glob("*.y*ml")):
        try:
            campaign_id = load_campaign(candidate).id
        except ConfigError:
            continue
        if campaign_id == ref:
            return candidate
        known.append(campaign_id)
    raise ConfigError(f"no campaign with id {ref!r} in {search_dir}/"
                      + (f" (known: {', '.join(known)})" if known else ""), field="campaign")


def find_campaign(ref: str, search_dir: Path = CAMPAIGNS_DIR) -> Campaign | None:
    """The campaign of an id or path, or None when no campaign file defines it."""
    try:
        return load_campaign(campaign_path(ref, search_dir))
    except ConfigError:
        return None
