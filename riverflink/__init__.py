"""riverflink: River model replicas in PyFlink, merged and served through Kafka.

The package is ``riverflink``; its parts are ``riverflink.models`` (pure
Python: adapters, merging, the wire format), ``riverflink.operators`` (the
Flink functions and the state machines behind them) and
``riverflink.pipelines`` (job graphs, CLI, runtimes).  In the repository they
live in the top-level ``models/``, ``operators/`` and ``pipelines/`` folders,
mapped here by ``pyproject.toml``.

>>> from riverflink import to_wire, from_wire, merge
"""

from riverflink.models import from_wire, merge, to_wire

__version__ = "0.2.0"

__all__ = ["LiveModel", "__version__", "from_wire", "merge", "to_wire"]


def __getattr__(name: str):
    # LiveModel needs a Kafka client: import it only when asked for
    if name == "LiveModel":
        from riverflink.pipelines.live_model import LiveModel

        return LiveModel
    raise AttributeError(f"module 'riverflink' has no attribute {name!r}")
