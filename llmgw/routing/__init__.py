"""Which deployment serves a call: the Router llmgw builds (`router`), its attempt recorder
(`recorder`), LiteLLM's errors mapped to ours (`errors`), sibling ordering, per-call
constraints, capacity and credentials."""
