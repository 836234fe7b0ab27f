"""Pydantic JSON schema -> Kubernetes structural schema."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from smartflow_operator.errors import SchemaError
from smartflow_operator.schema import structural_schema


class Inner(BaseModel):
    count: int = Field(default=1, gt=0, description="How many.")


class Outer(BaseModel):
    inner: Inner = Field(description="The inner object.")
    maybe: Inner | None = Field(default=None, description="Optional inner object.")
    labels: dict[str, str] | None = Field(default=None, description="String map.")


class Undocumented(BaseModel):
    name: str


class TestStructuralSchema:
    def test_refs_are_inlined_and_field_descriptions_win(self) -> None:
        schema = structural_schema(Outer)
        inner = schema["properties"]["inner"]
        assert inner["type"] == "object"
        assert inner["description"] == "The inner object."
        assert inner["properties"]["count"]["type"] == "integer"
        assert "$ref" not in str(schema) and "$defs" not in schema

    def test_optional_is_not_required_and_not_any_of_null(self) -> None:
        schema = structural_schema(Outer)
        assert schema["required"] == ["inner"]
        maybe = schema["properties"]["maybe"]
        assert "anyOf" not in maybe and maybe["type"] == "object"
        assert "default" not in maybe

    def test_exclusive_minimum_becomes_openapi_v3_form(self) -> None:
        count = structural_schema(Outer)["properties"]["inner"]["properties"]["count"]
        assert count["minimum"] == 0 and count["exclusiveMinimum"] is True
        assert count["default"] == 1

    def test_titles_are_dropped_and_maps_keep_value_types(self) -> None:
        schema = structural_schema(Outer)
        assert "title" not in str(schema)
        assert schema["properties"]["labels"]["additionalProperties"] == {"type": "string"}

    def test_a_field_without_description_is_an_error(self) -> None:
        with pytest.raises(SchemaError, match=r"Undocumented\.name"):
            structural_schema(Undocumented)
