"""The `registry:` config section: which MLflow to talk to and where adapters are filed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from registry.names import ALIAS_PATTERN, RESERVED_ALIAS


class RegistryConfig(BaseModel):
    """`local`: sqlite inside the workspace (tracking_uri None) or a given `sqlite:///` file.
    `server`: an MLflow tracking server (`http(s)://…`), e.g. the team's one on PostgreSQL."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "server"] = "local"
    tracking_uri: str | None = None
    experiment: str = Field(default="ltx-lora", min_length=1)
    alias: str = Field(default="candidate", pattern=ALIAS_PATTERN)

    @field_validator("alias")
    @classmethod
    def _alias_not_reserved(cls, v: str) -> str:
        if RESERVED_ALIAS.match(v):
            raise ValueError("'latest' and v<number> are reserved by MLflow: use e.g. candidate")
        return v

    @model_validator(mode="after")
    def _uri_matches_backend(self) -> RegistryConfig:
        uri = self.tracking_uri
        if self.backend == "local" and uri is not None and not uri.startswith("sqlite:///"):
            raise ValueError(
                f"backend 'local' takes tracking_uri null or sqlite:///<path>, got {uri!r}: "
                "use registry=server for a tracking server"
            )
        if self.backend == "server" and not uri:
            raise ValueError(
                "backend 'server' needs tracking_uri: set MLFLOW_TRACKING_URI or "
                "registry.tracking_uri=http://host:5000"
            )
        return self
