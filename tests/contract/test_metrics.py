"""`GET /metrics` read back through a strict Prometheus text-format (0.0.4) parser."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from routercore.api.metrics import METRICS, PREFIX, escape_label, format_value
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, RouterThread, http, join

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str
    kind: str = "untyped"
    help: str = ""
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


class ParseError(AssertionError):
    pass


def _value(text: str) -> float:
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ParseError(f"bad sample value {text!r}")
    return float(text)


def _labels(text: str, line: str) -> Labels:
    """Parse `a="x",b="y"` honouring the three escapes; anything else is an error."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        m = LABEL_NAME.match(text, i)
        if m is None or text[m.end() : m.end() + 2] != '="':
            raise ParseError(f"bad label at {i} in {line!r}")
        name = m.group()
        i = m.end() + 2
        value: list[str] = []
        while True:
            if i >= len(text):
                raise ParseError(f"unterminated label value in {line!r}")
            ch = text[i]
            if ch == "\\":
                nxt = text[i + 1 : i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ParseError(f"bad escape \\{nxt} in {line!r}")
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif ch == '"':
                i += 1
                break
            elif ch == "\n":
                raise ParseError(f"raw newline in label value in {line!r}")
            else:
                value.append(ch)
                i += 1
        if name.startswith("__") or name in dict(out):
            raise ParseError(f"reserved or duplicate label {name!r} in {line!r}")
        out.append((name, "".join(value)))
        if i < len(text):
            if text[i] != ",":
                raise ParseError(f"expected ',' at {i} in {line!r}")
            i += 1
    return tuple(out)


def _owner(sample: str, families: dict[str, Family]) -> Family:
    if sample in families and families[sample].kind != "histogram":
        return families[sample]
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample.removesuffix(suffix)
        if base != sample and base in families and families[base].kind == "histogram":
            return families[base]
    raise ParseError(f"sample {sample!r} has no TYPE line before it")


def parse(text: str) -> dict[str, Family]:
    """Strict: TYPE before samples, families contiguous, no duplicates, valid histograms."""
    if not text.endswith("\n"):
        raise ParseError("exposition must end with a newline")
    families: dict[str, Family] = {}
    finished: set[str] = set()
    current: str | None = None
    for line in text[:-1].split("\n"):
        if not line:
            raise ParseError("empty line")
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
                continue  # a plain comment
            name = parts[2]
            if not NAME.fullmatch(name):
                raise ParseError(f"bad metric name {name!r}")
            if name in finished:
                raise ParseError(f"family {name} split or declared twice")
            fam = families.setdefault(name, Family(name))
            if current is not None and current != name:
                finished.add(current)
            current = name
            if parts[1] == "TYPE":
                kind = parts[3] if len(parts) > 3 else ""
                if kind not in TYPES or fam.samples:
                    raise ParseError(f"bad or late TYPE line {line!r}")
                fam.kind = kind
            else:
                fam.help = parts[3] if len(parts) > 3 else ""
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?", line)
        if m is None:
            raise ParseError(f"bad sample line {line!r}")
        fam = _owner(m.group(1), families)
        if fam.name != current:
            raise ParseError(f"sample {line!r} outside its family block")
        key = (m.group(1), _labels(m.group(3) or "", line))
        if key in fam.samples:
            raise ParseError(f"duplicate sample {line!r}")
        fam.samples[key] = _value(m.group(4))
    for fam in families.values():
        if fam.kind == "histogram":
            _check_histogram(fam)
    return families


def _check_histogram(fam: Family) -> None:
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for (name, labels), value in fam.samples.items():
        if name.endswith("_bucket"):
            le = dict(labels).get("le")
            if le is None:
                raise ParseError(f"{name} without le")
            rest = tuple(kv for kv in labels if kv[0] != "le")
            groups.setdefault(rest, []).append((_value(le), value))
    for labels, buckets in groups.items():
        buckets.sort()
        counts = [c for _, c in buckets]
        if buckets[-1][0] != math.inf:
            raise ParseError(f"{fam.name}{labels} has no +Inf bucket")
        if counts != sorted(counts):
            raise ParseError(f"{fam.name}{labels} buckets are not cumulative")
        if fam.samples.get((fam.name + "_count", labels)) != counts[-1]:
            raise ParseError(f"{fam.name}{labels} _count differs from the +Inf bucket")
        if (fam.name + "_sum", labels) not in fam.samples:
            raise ParseError(f"{fam.name}{labels} has no _sum")


def scrape(router: RouterThread, **kw: Any) -> dict[str, Family]:
    status, headers, body = http("GET", router.url + "/metrics", **kw)
    assert status == 200, body
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(body.decode("utf-8"))


def value(fams: dict[str, Family], metric: str, **labels: str) -> float:
    """The one sample of `metric` whose labels include `labels`."""
    fam = _owner(PREFIX + metric, fams)
    want = set(labels.items())
    found = [v for (n, lab), v in fam.samples.items() if n == PREFIX + metric and want <= set(lab)]
    assert len(found) == 1, (metric, labels, found)
    return found[0]


# -- the parser itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a 1",  # no trailing newline
        "a 1\n",  # no TYPE
        '# TYPE a gauge\na{b="x} 1\n',
        '# TYPE a gauge\na{b="\\q"} 1\n',
        "# TYPE a gauge\na 1\na 2\n",
        "# TYPE a gauge\n# TYPE b gauge\nb 1\na 1\n",
        "# TYPE a gauge\na one\n",
        '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
    ],
)
def test_parser_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ParseError):
        parse(text)


def test_escaping_round_trips() -> None:
    tricky = 'a "quoted" \\ back\nslash'
    text = f'# TYPE x gauge\nx{{v="{escape_label(tricky)}"}} {format_value(1.5)}\n'
    assert parse(text)["x"].samples[("x", (("v", tricky),))] == 1.5


# -- the router's exposition -------------------------------------------------------------------


def test_every_documented_family_is_exposed_with_help_and_type(router: RouterThread) -> None:
    fams = scrape(router)
    for name, kind, _ in METRICS:
        fam = fams[PREFIX + name]
        assert fam.kind == kind and fam.help, name
    assert value(fams, "requests_in_flight") == 0
    assert value(fams, "queue_length") == 0


def test_counts_follow_traffic(
    router_factory: Callable[..., RouterThread], fake_nodes: Callable[..., Any]
) -> None:
    router = router_factory(prefix_affinity=False)  # one prompt, spread by least_loaded
    join(router, fake_nodes, 2)
    ids = {a["id"]: a["machine_name"] for a in router.agents()}
    for _ in range(5):
        assert http("POST", router.url + "/v1/chat/completions", CHAT)[0] == 200
    assert http("POST", router.url + "/api/chat", {**CHAT, "stream": False})[0] == 200
    assert http("POST", router.url + "/v1/chat/completions", {**CHAT, "model": "x"})[0] == 404
    fams = scrape(router)

    reqs = fams[PREFIX + "requests_total"].samples
    by_node: dict[str, float] = {}
    for (_, labels), count in reqs.items():
        lab = dict(labels)
        assert set(lab) == {"endpoint", "model", "node", "status"}
        by_node[lab["node"]] = by_node.get(lab["node"], 0) + count
    assert sum(by_node.values()) == 7
    assert set(by_node) == {*ids, ""}  # the 404 had no node
    # A model no node lists is counted under one label, never its own.
    assert value(fams, "requests_total", model="other", status="404") == 1
    assert value(fams, "unknown_model_requests_total") == 1
    assert value(fams, "request_outcomes_total", outcome="ok") == 6
    assert value(fams, "request_outcomes_total", outcome="rejected") == 1

    assert (
        value(fams, "request_duration_seconds_count", endpoint="chat.completions", model="llama3")
        == 5
    )
    assert (
        value(fams, "time_to_first_byte_seconds_count", endpoint="chat.completions", model="llama3")
        == 5
    )
    assert (
        value(fams, "request_duration_seconds_sum", endpoint="chat.completions", model="llama3") > 0
    )
    assert value(fams, "tokens_total", model="llama3", kind="completion") == 6 * 8

    assert value(fams, "nodes", status="online") == 2
    for node_id, name in ids.items():
        assert value(fams, "node_status", node=node_id, status="online") == 1
        assert value(fams, "node_status", node=node_id, status="offline") == 0
        assert value(fams, "node_enabled", node=node_id) == 1
        assert (
            dict(
                next(
                    lab
                    for (n, lab) in fams[PREFIX + "node_enabled"].samples
                    if dict(lab)["node"] == node_id
                )
            )["name"]
            == name
        )
    picks = fams[PREFIX + "balancer_picks_total"].samples
    assert sum(picks.values()) == 6
    assert {dict(lab)["node"] for _, lab in picks} == set(ids)


def test_node_status_and_odd_names(router: RouterThread, fake_nodes: Callable[..., Any]) -> None:
    nodes = join(router, fake_nodes, 1)
    node_id = router.agents()[0]["id"]
    odd = 'rack "A"\\2\nslot'
    status = http(
        "PATCH", router.url + f"/api/agents/{node_id}", {"custom_name": odd}, token=ADMIN_TOKEN
    )[0]
    assert status == 200
    assert value(scrape(router), "node_enabled", node=node_id, name=odd) == 1
    nodes[0].close()

    def offline() -> bool:
        fams = scrape(router)
        return value(fams, "node_status", node=node_id, status="offline") == 1

    wait_until(offline, timeout=15, message="node_status offline")
    assert value(scrape(router), "nodes", status="online") == 0


def test_closed_reads_protect_metrics(router_factory: Callable[..., RouterThread]) -> None:
    router = router_factory(open_reads=False)
    assert http("GET", router.url + "/metrics")[0] == 401
    assert PREFIX + "build_info" in scrape(router, token=ADMIN_TOKEN)


def test_affinity_hit_rate_per_node_and_overall(
    router: RouterThread, fake_nodes: Callable[..., Any]
) -> None:
    """Three turns of one conversation: the first is a miss, the follow-ups are hits, on the
    node that served the first."""
    join(router, fake_nodes, 2)
    messages: list[dict[str, str]] = []
    for turn in range(3):
        messages.append({"role": "user", "content": f"question {turn}"})
        status, headers, body = http(
            "POST", router.url + "/v1/chat/completions", {"model": "llama3", "messages": messages}
        )
        assert status == 200
        messages.append(body["choices"][0]["message"])
        if turn == 0:
            home = headers["x-router-node"]
        assert headers["x-router-node"] == home
    fams = scrape(router)
    assert value(fams, "affinity_picks_total", node=home, result="hit") == 2
    assert value(fams, "affinity_picks_total", node=home, result="miss") == 1
    assert value(fams, "affinity_hit_rate") == pytest.approx(2 / 3)
    assert value(fams, "node_affinity_hit_rate", node=home) == pytest.approx(2 / 3)
    other = next(a["id"] for a in router.agents() if a["id"] != home)
    assert value(fams, "affinity_picks_total", node=other, result="hit") == 0
    rated = {dict(lab)["node"] for _, lab in fams[PREFIX + "node_affinity_hit_rate"].samples}
    assert rated == {home}  # no rate for a node without prefix picks
