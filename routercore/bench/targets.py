"""The targets of the performance issues, each evaluated on one run's results: value, limit, met.

Issue 18 (the Cython hot path) sets most of them: the default configuration against the bare
server, the cost of the access log, the latency one connection adds over nginx, 10,000 streams
at once, and the time to first token. The rest stay from earlier issues.
"""

from __future__ import annotations

from typing import Any


def _target(name: str, value: Any, limit: str, met: bool) -> dict[str, Any]:
    return {"target": name, "value": value, "limit": limit, "met": met}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target as measured in this run (a section that did not run gives none)."""
    out: list[dict[str, Any]] = []
    if "throughput" in r:
        out += _throughput_targets(r["throughput"])
    if "latency_c1" in r:
        out += _c1_targets(r["latency_c1"])
    if "latency_at_half_max" in r:
        out += _half_max_targets(r["latency_at_half_max"])
    if "streams" in r:
        st = r["streams"]
        ttft = st["router"]["ttft_p50_ms"] - st["direct"]["ttft_p50_ms"]
        out.append(
            _target("added time to first token, p50 (ms)", round(ttft, 3), "<= 0.3", ttft <= 0.3)
        )
    if "translated" in r:
        tr = r["translated"]
        extra = tr["translated"]["ttft_p50_ms"] - tr["native"]["ttft_p50_ms"]
        out.append(
            _target(
                "translated Ollama path: added time to first token over /v1, p50 (ms)",
                round(extra, 3),
                "<= 0.3",
                extra <= 0.3,
            )
        )
    held = [h for h in r.get("concurrent_streams", []) if h["streams"] >= 2000]
    if held:
        rss = held[-1]["rss_mb"]
        out.append(_target("router RSS with 2,000 streams (MB)", rss, "<= 250", rss <= 250))
    if "many_streams" in r:
        out += _many_targets(r["many_streams"])
    if "affinity" in r:
        out += _affinity_targets(r["affinity"])
    worst = min((b["speedup"] for b in r.get("balancer", []) if b["speedup"]), default=None)
    if worst is not None:
        out.append(
            _target("Cython pick speed-up over the twin (worst size)", worst, ">= 10", worst >= 10)
        )
    return out


def _throughput_targets(tp: dict[str, Any]) -> list[dict[str, Any]]:
    default, bare = tp["router_default"], tp["bare"]
    ratio = default["rps"] / bare["rps"]
    cpu_ratio = bare["cpu_us_per_req"] / default["cpu_us_per_req"]
    out = [
        _target("default configuration max req/s / bare uvloop+h11", round(ratio, 3), ">= 2",
                ratio >= 2),
        _target("same from CPU time per request (bare / default configuration)",
                round(cpu_ratio, 3), ">= 2", cpu_ratio >= 2),
    ]  # fmt: skip
    nolog = tp.get("router_default_nolog")
    if nolog is not None:
        # The same configuration with only the access log off: req/s, and (steadier on a
        # shared machine) CPU time per request.
        cost = (1 - default["rps"] / nolog["rps"]) * 100
        cpu_cost = (default["cpu_us_per_req"] / nolog["cpu_us_per_req"] - 1) * 100
        out += [
            _target("req/s the access log costs (default configuration, log on vs off), %",
                    round(cost, 1), "<= 5", cost <= 5),
            _target("same from CPU time per request, %", round(cpu_cost, 1), "<= 5",
                    cpu_cost <= 5),
        ]  # fmt: skip
    return out


def _c1_targets(c1: dict[str, Any]) -> list[dict[str, Any]]:
    if "nginx" not in c1:
        return []
    add50 = c1["router_default"]["p50_ms"] - c1["nginx"]["p50_ms"]
    add99 = c1["router_default"]["p99_ms"] - c1["nginx"]["p99_ms"]
    return [
        _target("one connection: added p50 over nginx, default configuration (ms)",
                round(add50, 3), "<= 0.1", add50 <= 0.1),
        _target("one connection: added p99 over nginx, default configuration (ms)",
                round(add99, 3), "<= 0.5", add99 <= 0.5),
    ]  # fmt: skip


def _half_max_targets(lat: dict[str, Any]) -> list[dict[str, Any]]:
    add50 = lat["router"]["p50_ms"] - lat["direct"]["p50_ms"]
    add99 = lat["router"]["p99_ms"] - lat["direct"]["p99_ms"]
    return [
        _target("added p50 latency at half max (ms)", round(add50, 3), "<= 0.3", add50 <= 0.3),
        _target("added p99 latency at half max (ms)", round(add99, 3), "<= 2", add99 <= 2.0),
    ]


def _many_targets(many: dict[str, Any]) -> list[dict[str, Any]]:
    complete = many["complete"] == many["requested"] and many["errors"] == 0
    out = [
        _target(f"streams at once through one router: complete of {many['requested']} "
                f"({many['streams']} run, errors {many['errors']}, most open at once "
                f"{many['peak_open']})",
                many["complete"], f"= {many['requested']}, no error", complete),
    ]  # fmt: skip
    rss = many["router_peak_rss_mb"]
    if rss is not None:
        out.append(
            _target(f"router peak RSS with {many['streams']} streams (MB)", rss, "<= 300",
                    rss <= 300)
        )  # fmt: skip
    return out


def _affinity_targets(aff: dict[str, Any]) -> list[dict[str, Any]]:
    ratio = aff["follow_up_ratio"]
    out = [
        _target(
            "mean follow-up TTFT with affinity / without (2 llama.cpp nodes)",
            ratio,
            "<= 0.2",
            ratio <= 0.2,
        )
    ]
    compiled = aff["pick"]["cython"]
    if compiled is not None:
        worst = max(compiled["hit_ns"], compiled["new_ns"])
        out.append(
            _target("affinity pick, 1,000 indexed prefixes, compiled (µs)",
                    round(worst / 1000, 3), "<= 5", worst <= 5000)
        )  # fmt: skip
    return out
