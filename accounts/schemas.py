from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

Short = Annotated[str, StringConstraints(max_length=64, strip_whitespace=True)]


class DeviceIn(BaseModel):
    """What a browser says about itself (all untrusted, all short). It names no device: the
    one described is always its session's own."""

    model_config = ConfigDict(extra="ignore")
    make: Short = ""
    model: Short = ""
    platform: Short = ""
    client_version: Short = ""
