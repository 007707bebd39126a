"""Typed flow parameters, so the Prefect UI shows a validated form for each deployment.

A field left empty keeps the value of its ``MLC_`` setting in the environment the run executes
in (the worker's or ``mlc serve``'s), so an operator overrides one value for one run without
restating the others.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TrainingOverrides(BaseModel):
    """Training settings for one run; an empty field keeps its ``MLC_TRAINING__`` value."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(
        None, ge=1, le=10_000, description="maximum epochs (early stopping may end sooner)"
    )
    backbone: str | None = Field(
        None,
        description="backbone from the registry, e.g. compact_cnn, mobilenet_v3_small",
        min_length=1,
        max_length=64,
    )
    image_size: int | None = Field(None, ge=32, le=1024, description="square input side in pixels")

    def train_flow_parameters(self) -> dict[str, Any]:
        """The keyword arguments of ``flows.train.train_flow`` (``None`` keeps the setting)."""
        return self.model_dump()
