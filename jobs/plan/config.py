"""Read and check config/config.yaml: every mistake becomes one line naming the key,
the value and what is allowed, raised before anything is submitted."""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import submitit
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "config.schema.yaml"

TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "array": "a list",
              "object": "a mapping (key: value)", "boolean": "true or false", "null": "null"}

# sbatch settings the launcher derives for every cell: setting them under launcher.slurm
# would contradict the cell's own size and time limit.
LAUNCHER_OWNED_SLURM_KEYS = {
    "time": "launcher.time_limit", "timeout_min": "launcher.time_limit",
    "cpus_per_task": "launcher.cpus_per_task", "gpus_per_node": "launcher.gpus_per_node",
    "nodes": "gpus and launcher.gpus_per_node", "tasks_per_node": "gpus and launcher.gpus_per_node",
    "ntasks_per_node": "gpus and launcher.gpus_per_node", "name": "the study and cell", "job_name": "the study and cell",
}

_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 60, 60, 8, 4


class ConfigError(ValueError):
    """A configuration mistake, worded for the user in one line."""


def short(value: Any) -> str:
    """repr() cut to one readable line: a 1000-value grid axis must not flood the error."""
    return _SHORT.repr(value)


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _is_strict_integer(_checker: Any, value: Any) -> bool:
    # JSON Schema counts 64.0 as an integer; the training job's range() and slicing do not.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(_checker: Any, value: Any) -> bool:
    # YAML's .nan and .inf are floats, and compare false with every bound.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


STRICT_VALIDATOR = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_strict_integer, "number": _is_finite_number}),
)


def validate_config(config: dict[str, Any]) -> None:
    """Raise ConfigError for the most relevant schema violation."""
    validator = STRICT_VALIDATOR(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"config error: {describe(error)}")


def _dotted(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def closest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a likely typo, else ''."""
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def bounds(schema: dict[str, Any]) -> str:
    """The limits a number must respect, as ' >= 1' or ' > 0 and <= 1' ('' if none)."""
    words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    parts = [f"{sign} {schema[key]}" for key, sign in words.items() if key in schema]
    return (" " + " and ".join(parts)) if parts else ""


NUMBER_TEXT = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+))(?:[eE]([-+]?\d+))?")


def number_text_hint(text: str, wanted: list[str]) -> str | None:
    """How to write a number that arrived as text, or None if `text` is not one."""
    text = text.strip()
    match = NUMBER_TEXT.fullmatch(text)
    if not match:
        return None
    mantissa, exponent = match.groups()
    number = float(text)
    if "number" in wanted:
        plain = text if exponent is None else repr(number)
    elif number.is_integer():
        plain = str(int(number))
    else:
        return None
    if exponent is None:
        return f"write {plain} without quotes"
    if "number" in wanted:
        # PyYAML follows YAML 1.1: a float needs a point, and a sign on its exponent.
        point = mantissa if "." in mantissa else f"{mantissa}.0"
        plain = f"{point}e{exponent if exponent[0] in '+-' else '+' + exponent} or {plain}"
    return f"write {plain}: YAML reads {text} as text"


def describe_type(where: str, error: jsonschema.ValidationError) -> str:
    value, rule = error.instance, error.validator_value
    wanted = [str(w) for w in (rule if isinstance(rule, list) else [rule])]
    names = " or ".join(TYPE_NAMES.get(w, w) for w in wanted)
    if isinstance(value, float) and not math.isfinite(value) and "number" in wanted:
        return f"{where} = {value!r}: not a finite number; it must be a number{bounds(error.schema)}"
    if isinstance(value, float) and value.is_integer() and "integer" in wanted:
        return f"{where} = {value!r} is not an integer; write {int(value)}"
    if isinstance(value, str) and {"integer", "number"} & set(wanted):
        hint = number_text_hint(value, wanted)
        if hint:
            return f"{where} = {value!r} is text, not {names}; {hint}"
    return f"{where} = {short(value)} has the wrong type; it must be {names}"


def describe_unknown_keys(where: str, error: jsonschema.ValidationError) -> str:
    known = error.schema.get("properties", {})
    unexpected = [key for key in error.instance if key not in known]
    what = "a training parameter" if where.endswith((".grid", ".fixed")) else "a known key"
    listed = ", ".join(repr(k) for k in unexpected)
    return f"{where}: {listed} is not {what}{closest(unexpected[0], known)}; allowed: {', '.join(sorted(known))}"


def describe_builtin_or_import_path(where: str, error: jsonschema.ValidationError) -> str | None:
    """A model or dataset that is neither a built-in name nor "package.module:function"."""
    alternatives = error.validator_value
    names = next((alternative["enum"] for alternative in alternatives if "enum" in alternative), None)
    if names is None or not any("pattern" in alternative for alternative in alternatives):
        return None
    value = error.instance
    return (f"{where} = {short(value)} is not allowed{closest(value, map(str, names))}; use one of "
            f"{', '.join(repr(name) for name in names)}, or your own as \"package.module:function\"")


def describe(error: jsonschema.ValidationError) -> str:
    where = _dotted(error.absolute_path)
    any_of = error if error.validator == "anyOf" else error.parent
    if any_of is not None and any_of.validator == "anyOf":
        message = describe_builtin_or_import_path(_dotted(any_of.absolute_path), any_of)
        if message is not None:
            return message
    value = error.instance
    rule = error.validator_value
    match error.validator:
        case "enum":
            allowed = ", ".join(repr(v) for v in rule)
            return f"{where} = {short(value)} is not allowed{closest(value, map(str, rule))}; use one of {allowed}"
        case "minimum":
            return f"{where} = {value!r} is too small; it must be >= {rule}"
        case "exclusiveMinimum":
            return f"{where} = {value!r} is too small; it must be > {rule}"
        case "maximum":
            return f"{where} = {value!r} is too large; it must be <= {rule}"
        case "exclusiveMaximum":
            return f"{where} = {value!r} is too large; it must be < {rule}"
        case "type":
            return describe_type(where, error)
        case "additionalProperties":
            return describe_unknown_keys(where, error)
        case "required":
            missing = [k for k in rule if k not in value]
            return f"{where}: missing {', '.join(repr(k) for k in missing)}; it needs {', '.join(rule)}"
        case "minItems" | "minProperties":
            return f"{where} is empty; give at least {rule} value(s)"
        case "uniqueItems":
            return f"{where} = {short(value)} repeats a value; list each value once"
        case "pattern":
            return f"{where}: {value!r} must match {rule} (letters, digits, underscores)"
    return f"{where} = {short(value)}: {error.message.splitlines()[0]}"


def valid_slurm_keys() -> set[str]:
    """What submitit's AutoExecutor accepts as slurm_<key>: sbatch settings and its generic ones."""
    return set(submitit.SlurmExecutor._valid_parameters()) | set(submitit.AutoExecutor._valid_parameters())


def check_slurm_settings(slurm: dict[str, Any]) -> None:
    """Typos in launcher.slurm would otherwise surface as a NameError inside a running rule."""
    settable = valid_slurm_keys() - set(LAUNCHER_OWNED_SLURM_KEYS)
    for key, value in slurm.items():
        where = f"config error: launcher.slurm.{key} = {short(value)}"
        if key in LAUNCHER_OWNED_SLURM_KEYS:
            raise ConfigError(f"{where}: the launcher sets it for every cell; "
                              f"it follows from {LAUNCHER_OWNED_SLURM_KEYS[key]}")
        if key not in settable:
            raise ConfigError(f"{where}: not an sbatch setting submitit knows{closest(key, settable)}; "
                              f"allowed: {', '.join(sorted(settable))}")


def check_directory(key: str, value: str, root: Path) -> None:
    """A directory the workflow writes into or reads from: not empty, not a file on the way."""
    if not value.strip():
        raise ConfigError(f"config error: {key} = {value!r}: empty; name a directory, such as {key.split('_')[0]!r}")
    path = root / value
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise ConfigError(f"config error: {key} = {value!r}: {candidate} is an existing file, not a "
                                  "directory; name a directory (it is created if missing)")
            return
