"""lifeline's showing side: CLI, metrics, HTTP server, status page, store, logs."""
