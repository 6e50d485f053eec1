"""Wire dialects: what each API the gateway speaks brings to the one pipeline."""
