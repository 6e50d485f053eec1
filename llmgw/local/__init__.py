"""The embedded local model: fetching its weights (`fetch`) and serving it (`server`)."""
