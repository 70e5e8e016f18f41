"""The HTTP server's limits come from the settings of the same names."""

from __future__ import annotations

import dataclasses

from routercore.config import RouterConfig
from routercore.http.server import ServerLimits
from routercore.service import server_limits


def test_every_server_limit_is_the_setting_of_its_name() -> None:
    config = RouterConfig(
        max_header_bytes=2048,
        body_deadline=7.5,
        access_log=False,
        http_fast_path=False,
        max_connections_per_address=3,
    )
    limits = server_limits(config)
    assert limits.fast_path is False  # the one renamed: http_fast_path
    for field in dataclasses.fields(ServerLimits):
        if field.name != "fast_path":
            assert getattr(limits, field.name) == getattr(config, field.name), field.name
    assert (limits.max_header_bytes, limits.body_deadline, limits.access_log) == (2048, 7.5, False)
