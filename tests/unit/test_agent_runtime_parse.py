"""Parsing the runtimes' model lists, and choosing the default model by memory."""

from __future__ import annotations

from agent.models import GIB, choose_default_model, has_model
from agent.runtime import parse_ollama_models, parse_openai_models

TABLE = ((48.0, "big:70b"), (16.0, "mid:8b"), (8.0, "small:3b"), (2.0, "tiny:1b"))


def test_ollama_tags() -> None:
    body = {
        "models": [{"name": "llama3:latest", "model": "llama3:latest"}, {"model": "qwen:7b"}, 7]
    }
    assert parse_ollama_models(body) == ("llama3:latest", "qwen:7b")
    assert parse_ollama_models({"models": []}) == ()
    assert parse_ollama_models({"data": []}) is None
    assert parse_ollama_models(None) is None


def test_openai_models() -> None:
    body = {"object": "list", "data": [{"id": "Qwen/Qwen2-7B"}, {"id": "Qwen/Qwen2-7B"}, {}]}
    assert parse_openai_models(body) == ("Qwen/Qwen2-7B",)
    assert parse_openai_models({"models": []}) is None


def test_choose_default_model_by_memory() -> None:
    assert choose_default_model(64 * GIB, TABLE) == "big:70b"
    assert choose_default_model(16 * GIB, TABLE) == "mid:8b"
    assert choose_default_model(int(15.5 * GIB), TABLE) == "small:3b"
    assert choose_default_model(1 * GIB, TABLE) == "tiny:1b"  # below every row: smallest


def test_has_model_latest_tag() -> None:
    assert has_model(["llama3:latest"], "llama3")
    assert has_model(["llama3"], "llama3:latest")
    assert not has_model(["llama3:8b"], "llama3")
