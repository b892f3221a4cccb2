"""fair-matrix's LLM client with its endpoint given instead of looked up in a Matrix (Ray Serve) cluster.

Imported only inside fair-matrix's own virtual environment, by :mod:`fair_matrix_coral` and its Ray workers.
"""

from __future__ import annotations

from typing import Any

from matrix.agents.orchestrator import BaseResourceClient
from matrix.agents.resource_client import LLMResourceClient


class FixedEndpoint:
    """Stands in for fair-matrix's ``EndpointCache``: always the same URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def __call__(self, force_update: bool = False) -> list[str]:
        return [self.base_url]


class DirectLLM(LLMResourceClient):
    """``LLMResourceClient`` minus the cluster lookup: its requests go through fair-matrix's own ``query_llm``."""

    def __init__(self, resource_id: str, matrix_cli: Any, base_url: str, model: str, **kwargs: Any) -> None:
        BaseResourceClient.__init__(self, resource_id)  # LLMResourceClient's own __init__ asks the cluster
        self.sampling_params = kwargs.get("sampling_params") or {}
        self.tools_params = kwargs.get("tools_params") or {}
        self.exec_params = kwargs.get("exec_params") or {}
        self.llm_metadata = {"model_name": model, "name": "simulated-gpu"}
        self.endpoint_cache = FixedEndpoint(base_url)
