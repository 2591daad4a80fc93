"""Pipelines (e.g. ``StandardScaler() | LogisticRegression()``) merge stage by stage.

Params: ``{"steps": [params of step 0, params of step 1, ...]}``; each step is
handled by its own adapter, so a pipeline is mergeable when all its steps are.
"""

from __future__ import annotations

from typing import Any, Sequence

from river import compose

from riverflink.models.adapter import Adapter, adapter_for, register
from riverflink.models.policies import MergePolicy


def steps(model: Any) -> list:
    return list(model.steps.values())


class PipelineAdapter(Adapter):
    family = "pipeline"
    classes = (compose.Pipeline,)

    def get_params(self, model: Any) -> dict:
        return {"steps": [adapter_for(s).get_params(s) for s in steps(model)]}

    def set_params(self, model: Any, params: dict) -> None:
        for step, p in zip(steps(model), params["steps"], strict=True):
            adapter_for(step).set_params(step, p)

    def get_at(self, model: Any, keys: Any) -> dict | None:
        parts = [adapter_for(s).get_at(s, keys) for s in steps(model)]
        return None if any(p is None for p in parts) else {"steps": parts}

    def set_at(self, model: Any, params: dict, keys: Any) -> bool:
        if not all(adapter_for(s).in_place(s) for s in steps(model)):
            return False  # (nothing written unless every step can take it)
        return all([adapter_for(s).set_at(s, p, keys) for s, p in zip(steps(model), params["steps"], strict=True)])

    def step_adapters(self, model: Any) -> list[Adapter]:
        return [adapter_for(s) for s in steps(model)]

    def delta(self, model: Any, params: dict, base: dict | None, journaled: bool = False,
              at: Any = None) -> dict:
        bases = base["steps"] if base else [None] * len(params["steps"])
        pairs = zip(self.step_adapters(model), steps(model), params["steps"], bases, strict=True)
        return {"steps": [a.delta(s, p, b, journaled, at) for a, s, p, b in pairs]}

    def scale_learned(self, model: Any, delta: dict, factor: float) -> dict:
        pairs = zip(self.step_adapters(model), steps(model), delta["steps"], strict=True)
        return {"steps": [a.scale_learned(s, d, factor) for a, s, d in pairs]}

    def add_learned(self, model: Any, a: dict, b: dict, factor: float) -> dict:
        pairs = zip(self.step_adapters(model), steps(model), a["steps"], b["steps"], strict=True)
        return {"steps": [ad.add_learned(s, x, y, factor) for ad, s, x, y in pairs]}

    def derive(self, model: Any, params: dict, deltas: Sequence[dict]) -> dict:
        pairs = zip(self.step_adapters(model), steps(model), params["steps"], strict=True)
        return {"steps": [a.derive(s, p, [d["steps"][i] for d in deltas]) for i, (a, s, p) in enumerate(pairs)]}

    def sum_deltas(self, model: Any, deltas: Sequence[dict]) -> dict:
        return {
            "steps": [
                a.sum_deltas(s, [d["steps"][i] for d in deltas])
                for i, (a, s) in enumerate(zip(self.step_adapters(model), steps(model)))
            ]
        }

    def apply(
        self, model: Any, base: dict | None, deltas: Sequence[dict], weights: Sequence[float], policy: MergePolicy
    ) -> dict:
        out = []
        for i, (a, s) in enumerate(zip(self.step_adapters(model), steps(model))):
            step_base = base["steps"][i] if base else None
            out.append(a.apply(s, step_base, [d["steps"][i] for d in deltas], weights, policy))
        return {"steps": out}


PIPELINE = register(PipelineAdapter())
