"""The Models view and the node logs in a real browser (Debian's chromium, headless).

Every timeout below is a polling deadline, not a speed claim.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.browser import ARTIFACTS, BROWSER_MARKS, DASH, LIVE, expect, open_dashboard
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, RouterThread

pytestmark = BROWSER_MARKS


def model_row(page: Any, model: str) -> Any:
    return page.locator(f'#models-table tr[data-model="{model}"]')


def column_of(page: Any, name: str) -> int:
    """The 1-based column of node `name` in the models table."""
    expect(page.locator("#models-table thead")).to_contain_text(name)
    heads = page.locator("#models-table thead th").all_inner_texts()
    return next(i for i, text in enumerate(heads, start=1) if text.startswith(name))


def cell(page: Any, model: str, node: str) -> Any:
    return model_row(page, model).locator(f"td:nth-child({column_of(page, node)})")


def online(router: RouterThread, count: int) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        agents = {a["machine_name"]: a["id"] for a in router.agents() if a["status"] == "online"}
        return agents if len(agents) == count else None

    return wait_until(check, message=f"{count} nodes online")


def test_models_view_deploys_pulls_with_progress_and_deletes(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    # gpu-box-1 pulls slowly (a progress line a second) so its progress bar can be seen.
    fake_nodes(register=router.url, name="gpu-box-1", models=["llama3.2:1b", "qwen2.5:0.5b"],
               token_delay=1.0)  # fmt: skip
    fake_nodes(register=router.url, name="gpu-box-2", models=["llama3.2:1b"])
    fake_nodes(register=router.url, name="llamacpp-1", models=["smollm2-135m"], api="openai")
    online(router, 3)
    page.goto(f"{router.url}/dashboard#models")
    page.evaluate(f"sessionStorage.setItem('llmRouterAdminToken', '{ADMIN_TOKEN}')")
    open_dashboard(page, router, "models")
    expect(page.locator("#view-models")).to_be_visible()
    expect(cell(page, "llama3.2:1b", "gpu-box-2")).to_have_text("✓")
    expect(cell(page, "smollm2-135m", "llamacpp-1")).to_have_text("✓")
    expect(cell(page, "smollm2-135m", "gpu-box-1")).to_have_text(DASH)

    # Deploy to every node: the one without it pulls it; the OpenAI-only node is not a target.
    page.fill("#models-name", "qwen2.5:0.5b")
    page.fill("#models-replicas", "all")
    page.click("#models-deploy")
    row = model_row(page, "qwen2.5:0.5b")
    expect(row.locator("td").nth(1)).to_contain_text("all nodes", timeout=LIVE)
    expect(cell(page, "qwen2.5:0.5b", "gpu-box-2")).to_have_text("✓", timeout=10_000)
    expect(cell(page, "qwen2.5:0.5b", "llamacpp-1")).to_have_text(DASH)

    # Pull on every Ollama node: progress bars while it runs, ticks when done.
    page.fill("#models-name", "mistral:7b")
    page.click("#models-pull")
    bar = cell(page, "mistral:7b", "gpu-box-1").locator(".pull-bar")
    expect(bar).to_be_visible(timeout=LIVE)
    expect(bar.locator(".pct")).to_have_text(re.compile(r"^[1-9]\d?%$"), timeout=5_000)
    expect(cell(page, "mistral:7b", "gpu-box-2")).to_have_text("✓", timeout=LIVE)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True)
    expect(cell(page, "mistral:7b", "gpu-box-1")).to_have_text("✓", timeout=15_000)
    expect(page.locator("#notice-text")).to_contain_text("Pull of mistral:7b: done")
    assert any(
        "mistral:7b" in a["models"] for a in router.agents() if a["machine_name"] == "gpu-box-1"
    )

    # Delete asks first, then removes the model from every node.
    model_row(page, "mistral:7b").locator("button.danger").click()
    expect(page.locator("#confirm-text")).to_contain_text("mistral:7b")
    page.click("#confirm-ok")
    expect(model_row(page, "mistral:7b")).to_have_count(0, timeout=LIVE)
    assert not any("mistral:7b" in a["models"] for a in router.agents())


def test_node_detail_shows_the_router_log_and_says_when_the_agent_sends_none(
    router: RouterThread,
    fake_nodes: Callable[..., Any],
    page: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="routercore")  # as `serve` logs by default
    fake_nodes(register=router.url, name="mute-node")
    node_id = online(router, 1)["mute-node"]
    page.goto(f"{router.url}/dashboard#node/{node_id}")
    page.evaluate(f"sessionStorage.setItem('llmRouterAdminToken', '{ADMIN_TOKEN}')")
    dialog = page.locator("#node-dialog")
    dialog.locator("#node-router-log").click()
    expect(dialog.locator("#node-log")).to_contain_text(f"event=node_registered id={node_id}")
    # A fake node never sends its log: the page says so once the router gives up (504).
    dialog.locator("#node-agent-log").click()
    expect(page.locator("#notice-text")).to_contain_text("did not send its log", timeout=10_000)
