"""riverflink: River model replicas in PyFlink, merged and served through Kafka.

The package is ``riverflink``; its parts are ``riverflink.models`` (pure
Python: adapters, merging, the wire format), ``riverflink.operators`` (the
Flink functions and the state machines behind them) and
``riverflink.pipelines`` (job graphs, CLI, runtimes).  In the repository they
live in the top-level ``models/``, ``operators/`` and ``pipelines/`` folders,
mapped here by ``pyproject.toml``.

>>> from riverflink import to_wire, from_wire, merge
"""

__version__ = "0.2.0"

__all__ = ["LiveModel", "__version__", "from_wire", "merge", "to_wire"]


def __getattr__(name: str):
    # imported when first asked for: River (and SciPy) take seconds to import, and the CLI must be able to
    # take a Ctrl-C quietly before they are in; LiveModel also needs a Kafka client
    if name in ("from_wire", "merge", "to_wire"):
        from riverflink import models

        return getattr(models, name)
    if name == "LiveModel":
        from riverflink.pipelines.live_model import LiveModel

        return LiveModel
    raise AttributeError(f"module 'riverflink' has no attribute {name!r}")
