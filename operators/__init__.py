"""The training and serving jobs' operators: Flink shells and the pure state machines behind them.

Flink functions (import pyflink; thin shells: state descriptors, timers, metrics, side outputs):
``replica_trainer`` (keyed, one replica per key), ``merger`` (keyed by model name), ``predictor``
(serving), with their state descriptors in ``flink_state``.

Pure Python, tested without a cluster:

* the loop: ``loop`` (the replica and merger halves, message by message), ``replica`` (one River
  replica's state machine), ``merge_state`` (the merger's), ``messages`` (updates and replica ids),
  ``delay_compensation`` (stale updates, both sides), ``batch_learning`` (batch mode's ``*_many``
  glue), ``quality_gate``, ``feature_budget``;
* records: ``frames`` (the binary record-frame codec), ``limits``, ``events`` (parse and validate
  one event), ``dead_letters``, ``keying``;
* models on the topic: ``model_feed`` (validate before storing);
* outputs: ``scoring`` (predictions, progressive scores, the single-node River baseline),
  ``records`` (prediction records);
* ``sampling_profiler`` (opt-in stack sampling inside the Python workers).
"""
