"""One request through the gateway: its context, parameters and validation, token counts, the
lifecycle (hold, trace, rows) and the completions it returns."""
