"""The monitor stage: drift, quality and latency of the served model, with Prometheus alert rules and a Grafana
dashboard. Placeholder until the detection side lands its package docstring and lazy API."""
