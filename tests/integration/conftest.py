"""Fixtures of the integration tests that more than one module uses: a fake cloud provider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from routercore.testing.fakenode import ThreadedFakeNode
from tests.support.netservers import self_signed_cert
from tests.support.providers import provider_https_node


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def provider_node(tls_files: tuple[Path, Path]) -> Iterator[ThreadedFakeNode]:
    node = provider_https_node(tls_files)
    yield node
    node.close()
