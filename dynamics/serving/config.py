"""The server's settings, checked where they are built, and the rule for binding beyond loopback."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mbrl_core.errors import ConfigError

TOKEN_ENV = "MBRL_SERVE_TOKEN"
PORT_RANGE = range(0, 65536)  # 0 asks the system for a free port


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # shared secret expected as "Authorization: Bearer <token>" on every endpoint but /health and the docs
    token: str | None = None
    # requests with more rows are refused (413)
    max_request_rows: int = 4096
    # the batching worker stops gathering requests at this many rows...
    batch_rows: int = 8192
    # ...or when the first gathered request has waited this long for requests still arriving
    max_wait_ms: float = 2.0
    # seconds a kept-alive connection may sit idle between requests before it is closed
    idle_timeout: int = 30

    def __post_init__(self) -> None:
        if self.port not in PORT_RANGE:
            raise ConfigError(f"--port must be in 0..65535 (0 picks a free port), got {self.port}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("the serve token is empty; set a non-empty secret or none")
        for name in ("max_request_rows", "batch_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve {name} must be >= 1, got {getattr(self, name)}")
        if not self.max_wait_ms >= 0:
            raise ConfigError(f"serve max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.idle_timeout < 1:
            raise ConfigError(f"serve idle_timeout must be >= 1 second, got {self.idle_timeout}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind_allowed(config: ServeConfig) -> None:
    """The model leaves this machine only behind a token."""
    if not is_loopback(config.host) and config.token is None:
        raise ConfigError(
            f"refusing to serve on non-loopback host '{config.host}' without a token: set {TOKEN_ENV} or "
            "--token-file (clients send 'Authorization: Bearer <token>')"
        )
