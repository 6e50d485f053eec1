"""Observers of the gateway: its events, Prometheus metrics, OpenTelemetry traces and health
probes. None of them is on the path a request must take."""
