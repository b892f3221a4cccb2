"""The ``sglang`` backend: SGLang's OpenAI-compatible server on the cluster's GPUs, one per replica, started on Ray.

SGLang is never imported by Matrix: its server runs as a subprocess, so it may live in the nodes' environment with
its own pins (it pins an older ``openai``) through ``backend.server_command``.

SGLang takes its key only as ``--api-key`` (no environment variable), so each server gets it in a YAML file it reads
with ``--config FILE`` (SGLang 0.5.3 and later): 0600, in the replica's private directory, removed once the server
is healthy. With ``api-key`` set, SGLang requires the key on every route but ``/health`` and ``/metrics``, weight
loading and cache control included; with no ``admin-api-key``, releases that have admin-only routes refuse those to
everyone.
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
class SGLangConfig(InferenceServerConfig):
    """``backend.*`` for ``type=sglang``: ``backend.engine_args`` are ``sglang.launch_server`` flags
    (``mem_fraction_static``, ``context_length``, ``dp_size``, ...)."""


class SGLangBackend(InferenceServerBackend):
    """Starts ``backend.replicas`` SGLang servers on Ray and spreads the agents' chats over them."""

    config_schema = SGLangConfig
    config: SGLangConfig
    backend_type = "sglang"
    module = "sglang.launch_server"
    package = "sglang"
    install = "pip install 'matrix-core[sglang]' (or point backend.server_command at an environment that has it)"
    reserved = ("model_path", "model", "host", "port", "tp", "tp_size", "tensor_parallel_size", "config")
    key_config = "api-key"

    def launch_args(self) -> list[str]:
        """``--model-path M --host H --port P --tp N`` and ``backend.engine_args`` (SGLang's boolean flags have
        no ``--no-`` form: a false one is left out)."""
        config = self.config
        assert config.model is not None
        return [
            "--model-path",
            config.model,
            *address_args(),
            "--tp",
            str(config.tensor_parallel_size),
            *server_flags(config.engine_args, negate_false=False),
        ]
