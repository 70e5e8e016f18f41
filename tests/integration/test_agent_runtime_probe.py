"""Runtime detection against the fake runtime speaking Ollama, OpenAI, or both."""

from __future__ import annotations

from agent.runtime import OLLAMA, OPENAI, RuntimeProbe
from routercore.testing.fakenode import run_in_thread
from routercore.testing.processes import free_port


def test_auto_prefers_ollama_and_reads_models_running_and_version() -> None:
    node = run_in_thread(models=["a", "b"], api="both")
    try:
        status = RuntimeProbe(node.url).probe()
        assert (status.up, status.kind) == (True, OLLAMA)
        assert status.models == ("a", "b")
        assert status.version
        assert status.running_models == ()  # nothing loaded yet
    finally:
        node.close()


def test_openai_only_runtime_is_detected() -> None:
    node = run_in_thread(models=["Qwen/Qwen2-7B"], api="openai")
    try:
        probe = RuntimeProbe(node.url)
        status = probe.probe()
        assert (status.up, status.kind, status.models) == (True, OPENAI, ("Qwen/Qwen2-7B",))
        assert status.running_models == status.models
        assert probe.detected_kind == OPENAI
    finally:
        node.close()


def test_configured_kind_is_used_as_is() -> None:
    node = run_in_thread(models=["x"], api="both")
    try:
        assert RuntimeProbe(node.url, kind="openai").probe().kind == OPENAI
    finally:
        node.close()
    ollama_only = run_in_thread(models=["x"], api="ollama")
    try:
        assert RuntimeProbe(ollama_only.url, kind="openai").probe().up is False
    finally:
        ollama_only.close()


def test_nothing_listening_is_down() -> None:
    status = RuntimeProbe(f"http://127.0.0.1:{free_port()}", timeout=2).probe()
    assert not status.up and status.models == () and status.kind is None
