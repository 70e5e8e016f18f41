"""The Markdown tables of one benchmark run, from its results (the JSON the run writes)."""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_NAMES = {
    "direct": "node, direct",
    "router_default": "through the router, default configuration",
    "router_default_nolog": "through the router, default configuration, access log off",
    "router": "through the router, tuned",
    "nginx": "through nginx (keepalive upstream)",
    "bare": "bare uvloop+h11 server (same reply)",
    "wrk_ceiling": "wrk ceiling (nginx `return 200`)",
}


_RELAY_NAMES = {"router": "router -> node", "router_relay": "router -> relay -> node"}


def _table(title: str, header: str, align: str, rows: list[str]) -> list[str]:
    return ["", title, "", header, align, *rows]


def _stream_table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    return _table(
        title,
        "| path | streams | TTFT p50 ms | TTFT p99 ms | chunk delay p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        [
            f"| {k} | {v['streams']} | {_f(v['ttft_p50_ms'], 3)} | {_f(v['ttft_p99_ms'], 3)} | "
            f"{_f(v['chunk_p50_ms'], 3)} | {_f(v['chunk_p99_ms'], 3)} |"
            for k, v in rows.items()
        ],
    )


def _affinity_tables(a: dict[str, Any]) -> list[str]:
    s = a["settings"]
    rows = []
    for mode in ("without", "with"):
        m = a[mode]
        per_node = ", ".join(f"{k} {v}" for k, v in sorted(m["requests_per_node"].items()))
        rows.append(
            f"| {mode} | {_f(m['first_turn_mean_s'])} | {_f(m['follow_up_mean_s'])} | "
            f"{_f(m['follow_up_min_s'])}-{_f(m['follow_up_max_s'])} | {m['follow_ups']} | "
            f"{per_node} | {m['conversations_on_one_node']}/{m['conversations']} |"
        )
    pick = a["pick"]
    py, cy = pick["python"], pick["cython"] or {}
    return [
        *_table(
            f"Prefix affinity on two llama.cpp nodes (--cache True, 1 thread each; "
            f"{s['conversations']} interleaved conversations x {s['turns']} turns per phase, "
            f"{s['rounds']} rounds alternating the two routers; ~{s['document_words']}-word first "
            f"message; streamed, TTFT = first event; load average {a['loadavg_start']} -> "
            f"{a['loadavg_end']}):",
            "| PREFIX_AFFINITY | first turn TTFT s | follow-up TTFT mean s | range s | follow-ups "
            "| requests per node | conversations on one node |",
            "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
            rows,
        ),
        "",
        f"Follow-up TTFT with / without: {a['follow_up_ratio']}. Streams llama.cpp ended at "
        f"once without a token, sent again and not timed: with "
        f"{a['with'].get('empty_streams_resent', 0)}, without "
        f"{a['without'].get('empty_streams_resent', 0)}.",
        *_table(
            f"Affinity pick, {pick['indexed']} indexed prefixes, 16 nodes (hashing a ~1,300-token "
            f"chat at its boundaries: {pick['prefix_hash_us']} µs per request):",
            "| pick | twin ns | Cython ns |",
            "| --- | ---: | ---: |",
            [
                f"| follow-up (hit) | {_f(py['hit_ns'], 0)} | {_f(cy.get('hit_ns'), 0)} |",
                f"| new conversation | {_f(py['new_ns'], 0)} | {_f(cy.get('new_ns'), 0)} |",
            ],
        ),
    ]


def render(r: dict[str, Any]) -> str:
    """The Markdown tables of one run (sections that did not run are left out)."""
    m, s = r["machine"], r["settings"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"Python {m['python']}, uvloop {m['uvloop']}, h11 {m['h11']}",
        f"Pinning: system under test on core(s) {s['sut_cores']}, load generator and fake "
        f"nodes on core(s) {s['load_cores']}; load average at start {r['loadavg_start']}, "
        f"at end {r['loadavg_end']}",
        "Node for the request sections: the fake node's recorded reply replayed as raw bytes "
        "(bench/bare.py --replay), so the node on the load core never limits the router.",
    ]
    if "throughput" in r:
        ratios = r.get("ratios", {})
        lines += _table(
            f"Non-streamed chat completions, max throughput (wrk, 1 thread, "
            f"{s['wrk_connections']} connections, closed loop, best of {s['rounds']} "
            "interleaved rounds). Default configuration: on-disk SQLite, access log on (what a "
            "user gets); tuned: in-memory SQLite, access log off:",
            "| target | max req/s | ÷ bare | ÷ nginx | p50 ms | p99 ms | errors | its CPU % "
            "| CPU µs/req |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            [
                f"| {_NAMES.get(k, k)} | {v['rps']} | {_f(ratios.get(k, {}).get('bare'))} | "
                f"{_f(ratios.get(k, {}).get('nginx'))} | {_f(v['p50_ms'])} | "
                f"{_f(v['p99_ms'])} | {v['errors']} | {_f(v['sut_cpu_pct'], 0)} | "
                f"{_f(v['cpu_us_per_req'], 1)} |"
                for k, v in r["throughput"].items()
            ],
        )
    if "latency_c1" in r:
        c1 = r["latency_c1"]
        base = c1.get("nginx")
        lines += _table(
            f"One connection, one request after another (wrk -c1; lowest p50 and lowest p99 of "
            f"{s['rounds']} interleaved rounds); added = over nginx proxying to the same node:",
            "| target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            [
                f"| {_NAMES.get(k, k)} | {v['rps']} | {_f(v['p50_ms'], 3)} | "
                f"{_f(v['p99_ms'], 3)} | "
                f"{_f(v['p50_ms'] - base['p50_ms'], 3) if base else '-'} | "
                f"{_f(v['p99_ms'] - base['p99_ms'], 3) if base else '-'} |"
                for k, v in c1.items()
            ],
        )
    if "latency_at_half_max" in r:
        lat = r["latency_at_half_max"]
        lines += _table(
            f"Latency at half the router's max ({lat['router']['rate']} req/s, open loop with "
            f"Poisson arrivals, {s['paced_processes']} paced client processes, send to last "
            "byte; skipped = due while all 16 connections of a client were busy):",
            "| target | achieved req/s | p50 ms | p99 ms | errors | skipped |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            [
                f"| {_NAMES.get(k, k)} | {v['achieved_rps']} | {_f(v['p50_ms'], 3)} | "
                f"{_f(v['p99_ms'], 3)} | {v['errors']} | {v['skipped']} |"
                for k, v in lat.items()
            ],
        )
    if "streams" in r:
        lines += _stream_table(
            "Streams (SSE from a stamping upstream, one at a time; TTFT = first response byte; "
            "chunk delay = arrival - the upstream's send stamp):",
            {_NAMES.get(k, k): v for k, v in r["streams"].items()},
        )
    if "translated" in r:
        tr = r["translated"]
        lines += _stream_table(
            "Ollama's /api/chat on an OpenAI-only node (SSE translated to NDJSON) against /v1 "
            f"passed through, same upstream and router; translator CPU per chunk "
            f"{_f(tr['chunk_us'])} µs:",
            {k: v for k, v in tr.items() if k != "chunk_us"},
        )
    if "concurrent_streams" in r:
        lines += _table(
            f"Concurrent streams held open through the router (1 chunk/s each; router RSS at "
            f"start {r['idle_router_rss_mb']} MB):",
            "| streams | router RSS MB | router CPU % |",
            "| ---: | ---: | ---: |",
            [
                f"| {v['streams']} | {_f(v['rss_mb'], 1)} | {_f(v['cpu_pct'], 1)} |"
                for v in r["concurrent_streams"]
            ],
        )
    if "many_streams" in r:
        ms = r["many_streams"]
        lines += _table(
            f"Streams at once through one router process, default configuration ({ms['streams']}"
            f" asked for {ms['requested']}: two sockets each in the router, open-file hard limit "
            f"{ms['fd_hard_limit']}; the node holds each stream after its first event until all "
            f"have arrived, then streams {ms['stream_seconds']} s more; each read to its end; "
            f"router RSS idle {ms['router_idle_rss_mb']} MB):",
            "| streams | most open at once | complete | errors | router peak RSS MB "
            "| router CPU s | seconds |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            [
                f"| {ms['streams']} | {ms['peak_open']} | {ms['complete']} | {ms['errors']} | "
                f"{_f(ms['router_peak_rss_mb'], 1)} | {_f(ms['router_cpu_s'])} | "
                f"{_f(ms['seconds'])} |"
            ],
        )
        if ms["error_samples"]:
            lines += ["", f"First errors: {ms['error_samples']}"]
    if "balancer" in r:
        lines += _table(
            "Balancer pick (least_loaded, every node eligible):",
            "| nodes | twin ns | Cython ns | speed-up |",
            "| ---: | ---: | ---: | ---: |",
            [
                f"| {v['nodes']} | {_f(v['python_ns'], 0)} | {_f(v['cython_ns'], 0)} | "
                f"{_f(v['speedup'], 1)}x |"
                for v in r["balancer"]
            ],
        )
    if "relay" in r:
        rel = r["relay"]
        lines += _table(
            "Agent relay, the extra hop (router -> relay -> upstream vs router -> upstream; relay "
            "on the node's core):",
            "| path | streams | TTFT p50 ms | TTFT p99 ms | chunk delay p50 ms | max req/s | "
            "CPU µs/req (router; relay) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            [
                f"| {_RELAY_NAMES[k]} | {v['streams']} | {_f(v['ttft_p50_ms'], 3)} | "
                f"{_f(v['ttft_p99_ms'], 3)} | {_f(v['chunk_p50_ms'], 3)} | "
                f"{rel['throughput'][k]['rps']} | {_f(rel['throughput'][k]['cpu_us_per_req'], 1)} |"
                for k, v in rel["streams"].items()
            ],
        )
        lines += [
            "",
            f"Relay adds: TTFT p50 {rel['added_ttft_p50_ms']} ms, p99 {rel['added_ttft_p99_ms']} "
            f"ms, chunk delay p50 {rel['added_chunk_p50_ms']} ms; relay CPU "
            f"{rel['relay_cpu_us_per_stream']} µs per stream, {rel['relay_cpu_us_per_chunk']} µs "
            "per chunk.",
        ]
    if "affinity" in r:
        lines += _affinity_tables(r["affinity"])
    lines += _table(
        "Targets:",
        "| target | measured | limit | met |",
        "| --- | ---: | --- | --- |",
        [
            f"| {t['target']} | {t['value']} | {t['limit']} | {'yes' if t['met'] else 'NO'} |"
            for t in r["targets"]
        ],
    )
    return "\n".join(lines)
