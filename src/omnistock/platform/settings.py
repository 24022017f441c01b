"""Configuration from environment variables, with defaults that fit the local stack."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_JWT_SECRET = "omnistock-local-development-secret-change-me"  # noqa: S105 - local only
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class Settings(BaseSettings):
    """Everything a service reads from its environment (prefix ``OMNISTOCK_``)."""

    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_", extra="ignore")

    database_url: str = "postgresql://omnistock:omnistock@127.0.0.1:15432/omnistock"
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=20, ge=1)
    kafka_bootstrap: str = "127.0.0.1:19092"
    # Topics are created with this many partitions and this replication factor; production
    # clusters want 3 replicas and min.insync.replicas=2.
    kafka_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync_replicas: int = Field(default=1, ge=1)
    legacy_mysql_url: str = "mysql://omnistock:omnistock@127.0.0.1:13306/legacy"

    # Local tokens are HS256 with this secret; set jwks_url to verify an identity provider's tokens.
    jwt_secret: str = DEVELOPMENT_JWT_SECRET
    jwt_issuer: str = "omnistock-local"
    jwt_audience: str = "omnistock"
    jwks_url: str | None = None

    log_level: str = "INFO"
    log_json: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    outbox_batch_size: int = Field(default=2000, ge=1)
    outbox_poll_interval_s: float = Field(default=0.5, gt=0)
    consumer_batch_size: int = Field(default=2000, ge=1)
    consumer_max_attempts: int = Field(default=5, ge=1)
    # Processed event ids are kept longer than the topics keep events (7 days locally): within
    # that window a redelivery is always recognised.
    inbox_retention_s: float = Field(default=8 * 24 * 3600, gt=0)
    # A client retrying a write after this long gets it done again rather than the first answer.
    idempotency_retention_s: float = Field(default=7 * 24 * 3600, gt=0)
    # Static group membership (e.g. the pod name of a StatefulSet): a consumer restarted under
    # the same id gets its partitions back at once instead of after a session timeout and a
    # rebalance of the whole group.
    consumer_instance_id: str | None = None

    def refusal_to_serve(self, host: str) -> str | None:
        """Why serving on ``host`` would be unsafe, if it would: anyone who has read this
        source can mint tokens for the development secret, so it never leaves the machine."""
        if self.jwks_url is not None or host in LOOPBACK_HOSTS:
            return None
        if self.jwt_secret == DEVELOPMENT_JWT_SECRET:
            return (
                f"refusing to serve on {host} with the development token secret: set "
                "OMNISTOCK_JWT_SECRET (32 bytes or more) or OMNISTOCK_JWKS_URL"
            )
        if len(self.jwt_secret.encode()) < 32:
            return "OMNISTOCK_JWT_SECRET is shorter than 32 bytes: too easy to guess for HS256"
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
