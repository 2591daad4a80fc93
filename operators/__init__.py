"""Flink functions of the training and serving jobs.

Each Flink function is a thin shell around pure logic that unit tests can call
without a cluster: ``parse`` (validation), ``replica`` (one River replica),
``merge_state`` (the merger's state machine) and ``serving`` (predictions).
"""
