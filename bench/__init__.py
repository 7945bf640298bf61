"""Jobline's benchmark: `python -m bench` (all workloads), `--quick`, `--only w1,w3`, `--json PATH`.

Modules: `harness` (sizes, processes, Redis, job creation), `queue_workloads` (W1-W3 as the peers'
harness defines them, memory per job), `http_workloads` (enqueue over HTTP, listing),
`stream_workloads` (SSE fan-out), `report` (results, table, JSON).
"""
