"""`python -m routercore.bench`: the router's overhead, throughput and streaming benchmarks."""
