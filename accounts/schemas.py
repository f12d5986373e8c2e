from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Short = Annotated[str, StringConstraints(max_length=64, strip_whitespace=True)]


class DeviceIn(BaseModel):
    """What a browser says about itself when it registers (all untrusted, all short)."""

    model_config = ConfigDict(extra="ignore")
    device_id: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    make: Short = ""
    model: Short = ""
    platform: Short = ""
    client_version: Short = ""
