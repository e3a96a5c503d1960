"""Running scenarios: the oracle's choice, the runner, findings, the plan of ``check`` and its shards, the kink conventions."""
