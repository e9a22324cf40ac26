"""Operating a replica: the ``baton`` CLI, configuration, HTTP probes and metrics, logs,
the replica assembly and the demo."""
