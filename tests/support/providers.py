"""A fake cloud provider as the router sees one: HTTPS with a certificate from a private CA, its
own API key; `provider_https_node` serves it (the fixtures are in tests/integration/conftest.py)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from routercore.config import ProviderConfig
from routercore.testing.fakenode import ThreadedFakeNode

KEY = "sk-fake-provider-key-0123456789"


def provider_https_node(tls_files: tuple[Path, Path]) -> ThreadedFakeNode:
    """A fake node speaking the OpenAI API over HTTPS that wants KEY."""
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ThreadedFakeNode(
        models=["gpt-4o-mini", "text-embedding-3-small"], api="openai", tls=ctx, api_key=KEY
    )


def provider(node: ThreadedFakeNode, ca: Path, name: str = "acme", **kw: Any) -> ProviderConfig:
    return ProviderConfig(
        name=name, base_url=f"https://127.0.0.1:{node.port}/v1", api_key=KEY, ca_file=str(ca), **kw
    )
