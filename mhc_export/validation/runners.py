"""Runners: each backend that computes a model's outputs, kept apart from the comparison.

As in polygraphy, a runner has a ``name`` (the backend label reports use) and
``run(inputs) -> outputs`` by tensor name; :func:`compare_runners` feeds every
runner the same inputs and hands each one's outputs to the caller's comparator.
The ONNX Runtime runner is one provider; the eager and TensorRT runners wrap a
callable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

import torch

from . import ort_runner

Tensors = Mapping[str, torch.Tensor]


class Runner(Protocol):
    """A backend: ``name`` labels it in the report; ``run`` maps inputs to outputs."""

    name: str

    def run(self, inputs: Tensors) -> dict[str, torch.Tensor]: ...


class OrtRunner:
    """One ONNX Runtime provider on one ONNX file; the session is made when it runs (each
    runner runs once), so a provider that cannot load the graph fails inside the compare
    loop."""

    def __init__(self, path: str | os.PathLike[str], provider: str, *,
                 fold_constants: bool = True) -> None:
        self.path = Path(path)
        self.provider = provider
        self.fold_constants = fold_constants
        self.name = ort_runner.provider_label(provider)

    def run(self, inputs: Tensors) -> dict[str, torch.Tensor]:
        sess = ort_runner.session(self.path, self.provider, fold_constants=self.fold_constants)
        return ort_runner.run(sess, inputs)


class FunctionRunner:
    """A runner around a callable (an eager forward, a TensorRT engine's run)."""

    def __init__(self, name: str, fn: Callable[[Tensors], Mapping[str, torch.Tensor]]) -> None:
        self.name = name
        self._fn = fn

    def run(self, inputs: Tensors) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return dict(self._fn(inputs))


def ort_runners(path: str | os.PathLike[str], providers: Iterable[str] | None = None, *,
                fold_constants: bool = True) -> list[OrtRunner]:
    """One runner per ONNX Runtime provider (default: every available one, CUDA first)."""
    return [OrtRunner(path, p, fold_constants=fold_constants)
            for p in (providers or ort_runner.available_providers())]


def compare_runners(
    runners: Iterable[Runner],
    inputs: Tensors,
    compare: Callable[[str, dict[str, torch.Tensor]], None],
    on_error: Callable[[Runner, Exception], None] | None = None,
) -> None:
    """Run each runner on ``inputs`` and give its outputs to ``compare(name, outputs)``.

    ``on_error(runner, error)`` takes a runner that cannot run the model (the loop goes on
    with the next one); without it the error propagates.
    """
    for runner in runners:
        try:
            outs = runner.run(inputs)
        except Exception as e:  # backends raise their own exception types
            if on_error is None:
                raise
            on_error(runner, e)
            continue
        compare(runner.name, outs)


def first_line(e: BaseException) -> str:
    """The first line of an error's text (at most 300 characters), for a report note."""
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
