"""Turn a pydantic model's JSON schema into a Kubernetes *structural* OpenAPI v3 schema.

Called by ``crd.py`` when the CRD is generated. The apiserver accepts only a subset of JSON
schema: no ``$ref``, no ``anyOf`` with ``null`` (optional means "not required"), no ``title``,
``exclusiveMinimum`` as a boolean beside ``minimum``, every object and array typed, and no
``additionalProperties`` beside ``properties``. Anything this module cannot express is an error
at generation time, never a silently wrong CRD. Every property must carry a description, because
``kubectl explain`` is how users learn the API.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from .errors import SchemaError

JsonSchema = dict[str, Any]

_DROPPED = {"title", "additionalProperties", "$defs", "discriminator"}
_KEPT_SCALARS = (str, int, float, bool)


def structural_schema(model: type[BaseModel]) -> JsonSchema:
    """The structural schema of ``model`` (camelCase, validation mode), with every ``$ref`` inlined."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, JsonSchema] = raw.get("$defs", {})
    return _convert(raw, definitions, path=model.__name__)


def _resolve(reference: str, definitions: dict[str, JsonSchema], path: str) -> JsonSchema:
    prefix = "#/$defs/"
    if not reference.startswith(prefix) or reference[len(prefix) :] not in definitions:
        raise SchemaError(f"{path}: cannot resolve {reference}")
    return copy.deepcopy(definitions[reference[len(prefix) :]])


def _without_null(options: list[JsonSchema]) -> list[JsonSchema]:
    return [option for option in options if option != {"type": "null"}]


def _convert(node: JsonSchema, definitions: dict[str, JsonSchema], path: str) -> JsonSchema:
    node = dict(node)
    # A $ref (or a single-element allOf/anyOf after dropping null) is inlined; the keys beside it
    # (the field's description, its CEL rules) win over the referenced definition's.
    if "$ref" in node:
        target = _resolve(node.pop("$ref"), definitions, path)
        return _convert(target | node, definitions, path)
    for combinator in ("allOf", "anyOf", "oneOf"):
        if combinator not in node:
            continue
        options = _without_null(node[combinator])
        if node.get("x-kubernetes-int-or-string"):
            break
        if len(options) != 1:
            raise SchemaError(f"{path}: {combinator} with {len(options)} non-null options is not structural")
        del node[combinator]
        return _convert(options[0] | node, definitions, path)

    result: JsonSchema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "default":
            # Scalar defaults go to the CRD so the apiserver applies them (and CEL rules can rely on
            # them); object defaults stay in the model, which the reconciler parses with.
            if isinstance(value, _KEPT_SCALARS):
                result[key] = value
            continue
        if key == "const":
            result["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            result[bound] = value
            result[key] = True
            continue
        result[key] = value

    additional = node.get("additionalProperties")
    if "properties" in node:
        result["type"] = "object"
        result["properties"] = {}
        for name, child in node["properties"].items():
            child_path = f"{path}.{name}"
            converted = _convert(child, definitions, child_path)
            if not converted.get("description"):
                raise SchemaError(
                    f"{child_path}: every field needs a description (kubectl explain prints it)"
                )
            result["properties"][name] = converted
    elif additional is True or (node.get("type") == "object" and additional is None):
        result["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(additional, dict):
        result["additionalProperties"] = _convert(additional, definitions, f"{path}[*]")

    if "items" in node:
        result["items"] = _convert(node["items"], definitions, f"{path}[]")

    if "enum" in result and "type" not in result:
        result["type"] = "string"
    if "type" not in result and not result.get("x-kubernetes-int-or-string"):
        raise SchemaError(f"{path}: no type (structural schemas type every node)")
    if result.get("type") == "array" and "items" not in result:
        raise SchemaError(f"{path}: an array needs items")
    return _ordered(result)


_FIRST = ("description", "type")
_LAST = ("properties", "additionalProperties", "items", "required", "x-kubernetes-validations")


def _ordered(node: JsonSchema) -> JsonSchema:
    """Readable, stable key order: description and type first, nested schemas last."""
    middle = sorted(key for key in node if key not in _FIRST and key not in _LAST)
    return {key: node[key] for key in (*_FIRST, *middle, *_LAST) if key in node}
