"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

Every "within 2 s" below is a polling deadline (Playwright's expect timeout), not a speed claim.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from routercore.testing.processes import free_port
from tests.support.browser import (
    ARTIFACTS,
    BROWSER_MARKS,
    DASH,
    LIVE,
    expect,
    node_row,
    open_dashboard,
)
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, RouterThread, http, join

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}

pytestmark = BROWSER_MARKS


def chat(router: RouterThread, model: str = "llama3") -> int:
    return http("POST", router.url + "/v1/chat/completions", {**CHAT, "model": model})[0]


def status_of(router: RouterThread, node_id: str) -> str | None:
    for agent in router.agents():
        if agent["id"] == node_id:
            return str(agent["status"])
    return None


# -- overview ----------------------------------------------------------------------------------


def test_shows_nodes_and_follows_traffic_and_offline(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    nodes = join(router, fake_nodes, 2)
    agents = {a["machine_name"]: a["id"] for a in router.agents()}
    open_dashboard(page, router)

    for name, node_id in agents.items():
        row = node_row(page, node_id)
        expect(row.locator("button.open-node")).to_have_text(name)
        expect(row.locator(".status")).to_have_text("online")
    expect(page.locator("#card-nodes")).to_have_text("2 / 2")
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")

    for _ in range(3):
        assert chat(router) == 200
    expect(page.locator("#card-total")).to_have_text("3", timeout=LIVE)
    expect(page.locator("#card-success")).to_have_text("100.0%", timeout=LIVE)
    expect(page.locator("#card-p50")).not_to_have_text(DASH, timeout=LIVE)
    # The same prompt three times: a miss, then two hits on the node that holds it.
    expect(page.locator("#card-affinity")).to_have_text("66.7%", timeout=LIVE)
    hits = [n for n in router.service.balancer.affinity_stats().values() if n[1]]
    assert hits == [(2, 3)]

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    gone = agents["fake-1"]
    nodes[1].close()
    wait_until(lambda: status_of(router, gone) == "offline", timeout=15, message="node offline")
    expect(node_row(page, gone).locator(".status")).to_have_text("offline", timeout=LIVE)
    expect(page.locator("#card-nodes")).to_have_text("1 / 2", timeout=LIVE)


def test_shows_why_a_node_is_out_of_rotation(
    router_factory: Callable[..., RouterThread], fake_nodes: Callable[..., Any], page: Any
) -> None:
    router = router_factory(breaker_failures=2, probe_interval=30, probe_max_interval=60)
    refusing, failing = join(router, fake_nodes, 2)
    ids = {a["runtime_port"]: a["id"] for a in router.agents()}
    open_dashboard(page, router)
    refusing.set_fault("refuse")
    failing.set_fault("status500")
    for _ in range(4):
        chat(router)
    wait_until(lambda: status_of(router, ids[refusing.port]) == "unreachable", message="marked")
    reason = node_row(page, ids[refusing.port]).locator(".health-reason")
    expect(reason).to_contain_text("unreachable: connect refused", timeout=LIVE)
    expect(reason).to_contain_text("next check in", timeout=LIVE)
    breaker = node_row(page, ids[failing.port]).locator(".health-reason")
    expect(breaker).to_contain_text("breaker open: 2 failures", timeout=LIVE)
    expect(node_row(page, ids[failing.port]).locator(".status")).to_have_text("online")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-health.png"), full_page=True)


def test_table_sorts_by_name_and_status(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    nodes = join(router, fake_nodes, 3)
    ids = {a["machine_name"]: a["id"] for a in router.agents()}
    nodes[0].close()
    wait_until(lambda: status_of(router, ids["fake-0"]) == "offline", timeout=15, message="offline")
    open_dashboard(page, router)
    names = page.locator("#nodes-table tbody button.open-node")
    expect(names).to_have_text(["fake-0", "fake-1", "fake-2"])
    page.click('th button[data-sort="name"]')
    expect(names).to_have_text(["fake-2", "fake-1", "fake-0"])
    page.click('th button[data-sort="status"]')
    expect(names).to_have_text(["fake-1", "fake-2", "fake-0"])
    page.click('th button[data-sort="status"]')
    expect(names.first).to_have_text("fake-0")


def test_charts_draw_the_last_hour(
    router_factory: Callable[..., RouterThread], fake_nodes: Callable[..., Any], page: Any
) -> None:
    router = router_factory(prefix_affinity=False)  # one prompt, yet a line for each node
    join(router, fake_nodes, 2)
    for _ in range(4):
        assert chat(router) == 200
    open_dashboard(page, router)
    for chart in ("chart-rps", "chart-latency", "chart-node-rps", "chart-node-latency"):
        marks = page.locator(f"#{chart} path.line, #{chart} circle")
        expect(marks.first).to_be_attached(timeout=LIVE)
    expect(page.locator("#legend-node-rps span")).to_have_count(2)


# -- node detail and admin actions -------------------------------------------------------------


def test_node_detail_shows_system_history_and_requests(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    join(router, fake_nodes, 1)
    node_id = router.agents()[0]["id"]
    assert chat(router) == 200
    http("PATCH", router.url + f"/api/agents/{node_id}",
         {"tags": ["rack-a"], "notes": "under the desk"}, token=ADMIN_TOKEN)  # fmt: skip
    detail = router.url + f"/api/dashboard/nodes/{node_id}"
    wait_until(lambda: len(http("GET", detail)[2]["samples"]) >= 2, message="two heartbeat samples")
    open_dashboard(page, router)
    node_row(page, node_id).locator("button.open-node").click()
    dialog = page.locator("#node-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("dl.kv")).to_contain_text("OS")
    expect(dialog.locator("dl.kv")).to_contain_text("cores")
    expect(dialog.locator("#node-live")).to_contain_text("rack-a")
    expect(dialog.locator("#node-live")).to_contain_text("under the desk")
    expect(dialog.locator("#node-live svg path.line").first).to_be_attached()
    expect(dialog.locator("#node-live tbody tr")).to_have_count(1)
    assert page.evaluate("location.hash") == f"#node/{node_id}"
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_admin_action_is_refused_without_the_token_and_works_with_it(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    join(router, fake_nodes, 1)
    node_id = router.agents()[0]["id"]
    page.goto(f"{router.url}/dashboard#node/{node_id}")
    dialog = page.locator("#node-dialog")
    expect(dialog.locator("#admin-toggle")).to_have_text("Disable")

    # No token: the page asks, the user cancels, the action is refused with a message.
    dialog.locator("#admin-toggle").click()
    expect(page.locator("#token-dialog")).to_be_visible()
    page.click("#token-cancel")
    expect(page.locator("#notice")).to_contain_text("Refused")
    expect(page.locator("#notice")).to_contain_text("admin token")
    assert router.agents()[0]["enabled"] is True

    # A wrong token: the router refuses, the page says so and forgets it.
    dialog.locator("#admin-toggle").click()
    page.fill("#token-input", "not-the-token")
    page.click("#token-save")
    expect(page.locator("#notice")).to_contain_text("did not accept the admin token")
    assert router.agents()[0]["enabled"] is True
    assert page.evaluate("sessionStorage.getItem('llmRouterAdminToken')") is None

    # The right token: asked once, kept in session storage, the action goes through.
    dialog.locator("#admin-toggle").click()
    page.fill("#token-input", ADMIN_TOKEN)
    page.click("#token-save")
    expect(page.locator("#notice")).to_contain_text("Disable: done")
    wait_until(lambda: router.agents()[0]["enabled"] is False, message="node disabled")
    expect(dialog.locator("#admin-toggle")).to_have_text("Enable")
    assert page.evaluate("sessionStorage.getItem('llmRouterAdminToken')") == ADMIN_TOKEN

    # Further actions use the stored token without asking again.
    dialog.locator("#admin-name").fill("front desk")
    dialog.locator("#admin-rename").click()
    expect(page.locator("#token-dialog")).to_be_hidden()
    wait_until(lambda: router.agents()[0]["custom_name"] == "front desk", message="renamed")
    dialog.locator("#admin-max").fill("3")
    dialog.locator("#admin-set-max").click()
    wait_until(lambda: router.agents()[0]["max_concurrency"] == 3, message="max concurrency")
    dialog.locator("#admin-tags").fill("rack-b, quiet")
    dialog.locator("#admin-notes").fill("fan is loud")
    dialog.locator("#admin-save-notes").click()
    wait_until(lambda: router.agents()[0]["tags"] == ["rack-b", "quiet"], message="tags saved")
    assert router.agents()[0]["notes"] == "fan is loud"
    dialog.locator("#admin-offline").click()
    wait_until(lambda: router.agents()[0]["status"] == "offline", message="forced offline")
    page.keyboard.press("Escape")
    row = node_row(page, node_id)
    expect(row.locator("button.open-node")).to_have_text("front desk", timeout=LIVE)
    expect(row.locator(".status")).to_have_text("offline", timeout=LIVE)
    expect(row.locator(".status")).to_have_attribute("data-disabled", "true")


def test_delete_asks_for_confirmation(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    join(router, fake_nodes, 1)
    node_id = router.agents()[0]["id"]
    page.goto(f"{router.url}/dashboard#node/{node_id}")
    page.evaluate(f"sessionStorage.setItem('llmRouterAdminToken', '{ADMIN_TOKEN}')")
    dialog = page.locator("#node-dialog")
    dialog.locator("#admin-delete").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("fake-0")
    page.click("#confirm-cancel")
    assert len(router.agents()) == 1
    dialog.locator("#admin-delete").click()
    page.click("#confirm-ok")
    wait_until(lambda: router.agents() == [], message="node deleted")
    expect(node_row(page, node_id)).to_have_count(0, timeout=LIVE)
    expect(page.locator("#node-dialog")).to_be_hidden()


# -- request history ---------------------------------------------------------------------------


def test_request_history_pages_filters_and_details(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    join(router, fake_nodes, 1, models=["llama3", "qwen2"])
    for i in range(55):
        assert chat(router, "qwen2" if i < 5 else "llama3") == 200
    # A model only a disabled node lists: refused by the router, and recorded (a name no node
    # lists at all would only be counted).
    gone = {"machine_name": "gone", "runtime_port": free_port(), "models": ["missing"]}
    status, _, reg = http("POST", router.url + "/api/agents/register", gone)
    assert status == 201
    patch = {"enabled": False}
    url = f"{router.url}/api/agents/{reg['agent_id']}"
    assert http("PATCH", url, patch, token=ADMIN_TOKEN)[0] == 200
    assert chat(router, "missing") == 404
    url = router.url + "/api/dashboard/request-history"
    wait_until(lambda: http("GET", url)[2]["total"] == 56, message="56 stored requests")
    open_dashboard(page, router, "requests")
    rows = page.locator("#history-table tbody tr")
    expect(page.locator("#history-info")).to_have_text(f"1{DASH}50 of 56")
    expect(rows).to_have_count(50)
    page.click("#history-next")
    expect(page.locator("#history-info")).to_have_text(f"51{DASH}56 of 56")
    expect(rows).to_have_count(6)
    expect(page.locator("#history-next")).to_be_disabled()

    page.select_option("#filter-model", "qwen2")
    page.click("#history-filters button[type=submit]")
    expect(page.locator("#history-info")).to_have_text(f"1{DASH}5 of 5")
    page.select_option("#filter-model", "")
    page.select_option("#filter-status", "rejected")
    page.click("#history-filters button[type=submit]")
    expect(page.locator("#history-info")).to_have_text(f"1{DASH}1 of 1")
    expect(rows.first).to_contain_text("404 rejected")

    rows.first.click()
    detail = page.locator("#request-dialog")
    expect(detail).to_be_visible()
    expect(detail.locator("#request-body")).to_contain_text("missing")
    expect(detail.locator("#request-body")).to_contain_text("not served by any node")


# -- chat --------------------------------------------------------------------------------------


def ask_in_chat(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any, prompt: str
) -> Any:
    """Join a slow node (30 tokens, 0.1 s apart), send `prompt` from the chat console; the
    answer's element."""
    join(router, fake_nodes, 1, tokens=30, token_delay=0.1)
    open_dashboard(page, router, "chat")
    expect(page.locator("#chat-model")).to_have_value("llama3")
    page.fill("#chat-prompt", prompt)
    page.click("#chat-send")
    return page.locator(".msg.assistant").last


def test_chat_console_streams_the_answer_and_names_the_node(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    answer = ask_in_chat(router, fake_nodes, page, "Tell me something")
    # Part of the answer is on screen while the rest is still being generated.
    expect(answer.locator(".text")).to_contain_text("tok1")
    assert answer.get_attribute("data-done") is None
    assert "tok29" not in answer.locator(".text").inner_text()
    expect(answer).to_have_attribute("data-done", "true", timeout=15_000)
    expect(answer.locator(".text")).to_contain_text("tok29")
    expect(answer.locator(".who")).to_contain_text("served by fake-0")
    assert answer.get_attribute("data-node") == router.agents()[0]["id"]
    expect(page.locator("#card-total")).to_have_text("1", timeout=LIVE)


def test_chat_stop_keeps_the_partial_answer_and_new_chat_clears(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    answer = ask_in_chat(router, fake_nodes, page, "Tell me something long")
    expect(answer.locator(".text")).to_contain_text("tok1")
    expect(page.locator("#chat-send")).to_be_disabled()
    page.click("#chat-stop")
    expect(answer).to_have_attribute("data-done", "true")
    expect(answer.locator(".text")).to_contain_text("[stopped]")
    assert "tok29" not in answer.locator(".text").inner_text()
    expect(page.locator("#chat-stop")).to_be_disabled()
    expect(page.locator("#chat-send")).to_be_enabled()
    page.click("#chat-clear")
    expect(page.locator("#chat-log .msg")).to_have_count(0)


def test_token_button_stores_the_token_and_forget_drops_it(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    join(router, fake_nodes, 2)
    open_dashboard(page, router)
    page.fill("#node-filter", "fake-1")
    expect(page.locator("#nodes-table tbody tr")).to_have_count(1)
    expect(page.locator("#nodes-count")).to_have_text("(1 of 2)")
    page.click("#token-button")
    page.fill("#token-input", ADMIN_TOKEN)
    page.click("#token-save")
    expect(page.locator("#notice")).to_contain_text("Admin token stored for this tab.")
    # The live channel reopens with the new token.
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
    assert page.evaluate("sessionStorage.getItem('llmRouterAdminToken')") == ADMIN_TOKEN
    page.click("#token-button")
    page.click("#token-forget")
    expect(page.locator("#notice")).to_contain_text("Admin token forgotten.")
    expect(page.locator("#token-dialog")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('llmRouterAdminToken')") is None


# -- live channel: reconnect, fallback, closed reads -------------------------------------------


def test_reconnects_after_a_router_restart(
    router_factory: Callable[..., RouterThread], tmp_path: Path, page: Any
) -> None:
    port, db = free_port(), str(tmp_path / "restart.db")
    first = router_factory(port=port, db=db)
    open_dashboard(page, first)
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
    first.stop()
    expect(page.locator("#conn-state")).not_to_have_attribute("data-state", "live")
    second = router_factory(port=port, db=db)
    assert chat(second) == 404  # counted by the new router only
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(page.locator("#card-errors")).to_have_text("1", timeout=LIVE)


def test_falls_back_to_polling_when_the_socket_fails(
    router: RouterThread, fake_nodes: Callable[..., Any], page: Any
) -> None:
    join(router, fake_nodes, 1)
    page.route_web_socket("**/ws/dashboard*", lambda ws: ws.close())
    page.goto(router.url + "/dashboard")
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "polling")
    expect(page.locator("#card-nodes")).to_have_text("1 / 1")
    assert chat(router) == 200
    # Polling runs every 2 s, so allow one poll period on top of the live deadline.
    expect(page.locator("#card-total")).to_have_text("1", timeout=2 * LIVE + 1000)


def test_hidden_tab_drops_the_feed_and_resumes(router: RouterThread, page: Any) -> None:
    open_dashboard(page, router)
    badge = page.locator("#conn-state")
    expect(badge).to_have_attribute("data-state", "live")
    flip = """hidden => {
        Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
    }"""
    page.evaluate(flip, True)
    expect(badge).to_have_attribute("data-state", "connecting")
    feed = router.call(lambda: _feed_sessions(router))
    wait_until(lambda: router.call(lambda: len(feed)) == 0, message="the router dropped the feed")
    page.evaluate(flip, False)
    expect(badge).to_have_attribute("data-state", "live")


def _feed_sessions(router: RouterThread) -> set[Any]:
    from routercore.api.dashboard import DashboardAPI

    for route in router.service.app.exact.values():
        owner = getattr(route.handler, "__self__", None)
        if isinstance(owner, DashboardAPI):
            return owner.feed.sessions
    raise AssertionError("dashboard API not installed")


def test_closed_reads_ask_for_the_token_once(
    router_factory: Callable[..., RouterThread], fake_nodes: Callable[..., Any], page: Any
) -> None:
    router = router_factory(open_reads=False)
    join(router, fake_nodes, 1)
    page.goto(router.url + "/dashboard")
    expect(page.locator("#token-dialog")).to_be_visible()
    expect(page.locator("#notice")).to_contain_text("requires the admin token")
    page.fill("#token-input", ADMIN_TOKEN)
    page.click("#token-save")
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
    expect(page.locator("#card-nodes")).to_have_text("1 / 1")
    expect(page.locator("#nodes-table tbody tr")).to_have_count(1)


# -- small screens -----------------------------------------------------------------------------


def test_phone_layout_fits_the_screen(
    router: RouterThread, fake_nodes: Callable[..., Any], browser: Any
) -> None:
    join(router, fake_nodes, 2)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)  # fmt: skip
    try:
        page = context.new_page()
        open_dashboard(page, router)
        expect(page.locator("#nodes-table tbody tr")).to_have_count(2)
        # Only the node table may scroll sideways (inside its own box), never the page.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        expect(page.locator("#card-nodes")).to_be_in_viewport()
        expect(page.locator("#nodes-table th.opt").first).to_be_hidden()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
        page.goto(router.url + "/dashboard#chat")
        expect(page.locator("#chat-send")).to_be_in_viewport()
    finally:
        context.close()
