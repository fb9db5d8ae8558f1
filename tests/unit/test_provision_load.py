"""Reloading collections Milvus released (medsearch.provision.ensure_loaded / with_loaded) with a fake client."""

from __future__ import annotations

from typing import Any

import pytest
from pymilvus.client.types import LoadState

from medsearch.provision import ensure_loaded, is_not_loaded, with_loaded


class FakeClient:
    def __init__(self, state: LoadState) -> None:
        self.state = state
        self.loaded: list[str] = []

    def get_load_state(self, collection: str) -> dict[str, Any]:
        return {"state": self.state}

    def load_collection(self, collection: str) -> None:
        self.loaded.append(collection)
        self.state = LoadState.Loaded


@pytest.mark.parametrize(("state", "loads"), [
    (LoadState.NotLoad, True), (LoadState.Loaded, False), (LoadState.Loading, False), (LoadState.NotExist, False),
])  # fmt: skip
def test_ensure_loaded_loads_only_a_released_collection(state: LoadState, loads: bool) -> None:
    client = FakeClient(state)
    assert ensure_loaded(client, "c") is loads
    assert client.loaded == (["c"] if loads else [])


def test_with_loaded_retries_once_after_loading() -> None:
    client = FakeClient(LoadState.NotLoad)
    calls: list[int] = []

    def query() -> str:
        calls.append(1)
        if client.state is not LoadState.Loaded:
            raise RuntimeError("Collection 'c' is in state 'released'; call load() before search/get/query")
        return "rows"

    assert with_loaded(client, "c", query) == "rows"
    assert len(calls) == 2 and client.loaded == ["c"]


def test_with_loaded_passes_other_errors_through() -> None:
    client = FakeClient(LoadState.Loaded)

    def query() -> str:
        raise RuntimeError("connection refused")

    with pytest.raises(RuntimeError, match="refused"):
        with_loaded(client, "c", query)
    assert client.loaded == []
    assert is_not_loaded(RuntimeError("collection not loaded")) and not is_not_loaded(RuntimeError("timeout"))
