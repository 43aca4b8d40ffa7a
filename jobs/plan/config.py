"""Read and check config/config.yaml: every mistake becomes one line naming the key,
the value and what is allowed, raised before anything is submitted."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration mistake, worded for the user in one line."""


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate_config(config: dict[str, Any]) -> None:
    """Raise ConfigError for the first schema violation (in document order)."""
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"config error: {describe(error)}")


def _dotted(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def describe(error: jsonschema.ValidationError) -> str:
    where = _dotted(error.absolute_path)
    value = error.instance
    rule = error.validator_value
    match error.validator:
        case "enum":
            allowed = ", ".join(repr(v) for v in rule)
            return f"{where} = {value!r} is not allowed; use one of {allowed}"
        case "minimum":
            return f"{where} = {value!r} is too small; it must be >= {rule}"
        case "exclusiveMinimum":
            return f"{where} = {value!r} is too small; it must be > {rule}"
        case "maximum":
            return f"{where} = {value!r} is too large; it must be <= {rule}"
        case "exclusiveMaximum":
            return f"{where} = {value!r} is too large; it must be < {rule}"
        case "type":
            wanted = " or ".join(rule) if isinstance(rule, list) else rule
            return f"{where} = {value!r} has the wrong type; it must be {wanted}"
        case "additionalProperties":
            allowed = ", ".join(sorted(error.schema.get("properties", {})))
            unexpected = ", ".join(repr(k) for k in value if k not in error.schema.get("properties", {}))
            what = "a training parameter" if where.endswith(".grid") or where.endswith(".fixed") else "a known key"
            return f"{where}: {unexpected} is not {what}; allowed: {allowed}"
        case "required":
            missing = [k for k in rule if k not in value]
            return f"{where}: missing {', '.join(repr(k) for k in missing)}"
        case "minItems" | "minProperties":
            return f"{where} is empty; give at least {rule} value(s)"
        case "uniqueItems":
            return f"{where} = {value!r} repeats a value; list each value once"
        case "pattern":
            return f"{where}: {value!r} must match {rule} (letters, digits, underscores)"
    return f"{where}: {error.message.splitlines()[0]}"
