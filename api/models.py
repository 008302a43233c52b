"""Request and response models shared by the API's resources; the OpenAPI document is built
from these and the per-resource models (spectree), never written by hand."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal[
    "master_admin",
    "admin",
    "technical_admin",
    "media_library_admin",
    "billing",
    "reports",
    "media_library_user",
]
Level = Literal["viewer", "contributor", "editor", "manager"]
Kind = Literal["folder", "collection"]
Scope = Literal["read", "write", "admin"]
INT_MAX = 2**31 - 1  # integer ids and numbers fit a 32-bit column on every database


class Strict(BaseModel):
    """A request body: unknown members are refused (a typo never silently does nothing)."""

    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """An RFC 9457 problem document; `type` is stable per error class."""

    type: str
    title: str
    status: int
    detail: str
    guard: str | None = Field(None, description="The guard that refused the change.")
    errors: list[str] | None = Field(None, description="Every policy error as file:line:col.")
    request_id: str | None = None


class Page(BaseModel):
    """Cursor pagination: pass `next` back as `cursor` for the following page."""

    next: str | None = Field(None, description="The cursor of the next page; null on the last.")


class PageQuery(Strict):
    cursor: str | None = Field(None, max_length=512, description="`next` of the previous page.")
    limit: int = Field(50, ge=1, le=200)
