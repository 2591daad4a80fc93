"""Every docstring example of the pure modules runs as a test, imported by its ``riverflink.*`` name."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import riverflink
import riverflink.models
import riverflink.operators


def _modules() -> list[str]:
    names = ["riverflink"]
    for pkg in (riverflink.models, riverflink.operators):
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + ".")]
    # the Flink functions import pyflink at import time; their examples live in the pure modules
    names += ["riverflink.pipelines.options", "riverflink.pipelines.config", "riverflink.pipelines.report",
              "riverflink.pipelines.flink_rest", "riverflink.pipelines.cli_topics"]
    return [n for n in names if not n.startswith("riverflink.operators.flink")]


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_examples_were_found():
    attempted = sum(doctest.testmod(importlib.import_module(n)).attempted for n in _modules())
    assert attempted >= 20
