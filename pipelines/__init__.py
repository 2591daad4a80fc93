"""Job definitions, the ``riverflink`` CLI and the local runtimes (embedded broker, Flink)."""
