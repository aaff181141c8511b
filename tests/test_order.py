"""The one order strategies and frameworks are listed in (``suite.order``), and the framework
facts the harness reads from the adapters instead of spelling framework names."""

from __future__ import annotations

import pandas as pd

import backends
from suite import fingerprint, gate
from suite.frameworks import registry as framework_registry
from suite.order import framework_rank, sort_rows, sorted_frameworks, strategy_rank


def test_the_registries_list_torch_first_and_only_existing_strategies():
    assert list(framework_registry())[:2] == ["torch", "jax"]
    assert "ift-minres" not in backends._ORDER
    assert set(backends._ORDER) <= set(backends.registry())
    names = list(backends.registry())
    assert names[:3] == ["unrolled", "forward", "forward-batched"]
    assert [strategy_rank(n) for n in names] == list(range(len(names)))
    assert strategy_rank("no-such-strategy") == len(names)
    assert framework_rank("torch") < framework_rank("jax") < framework_rank("other")


def test_sort_rows_ranks_strategy_and_framework_columns_by_the_registries():
    frame = pd.DataFrame({"problem": ["gd"] * 4,
                          "backend": ["ift-cg", "unrolled", "ift-cg", "unrolled"],
                          "framework": ["jax", "jax", "torch", "torch"]})
    out = sort_rows(frame, ["problem", "backend", "framework"])
    assert list(zip(out["backend"], out["framework"], strict=True)) == [
        ("unrolled", "torch"), ("unrolled", "jax"), ("ift-cg", "torch"), ("ift-cg", "jax")]
    assert list(out.columns) == list(frame.columns)
    by_name = sort_rows(frame, ["framework", "backend"], ranked=("backend",))
    assert list(by_name["framework"]) == ["jax", "jax", "torch", "torch"]
    assert sorted_frameworks(["jax", "zz", "torch", "jax"]) == ["torch", "jax", "zz"]


def test_version_keys_come_from_the_adapters():
    assert fingerprint.VERSION_KEYS == ("python", "torch", "jax", "jaxlib")
    assert fingerprint.PACKAGES[:3] == ("torch", "jax", "jaxlib")
    assert gate.VERSION_KEYS == {"torch": ("torch", "python"),
                                 "jax": ("jax", "jaxlib", "python")}
