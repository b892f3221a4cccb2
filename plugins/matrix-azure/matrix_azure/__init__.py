"""matrix-azure: Azure OpenAI deployments as a Matrix backend (``backend.type=azure``)."""

from matrix_azure.backend import AzureBackend
from matrix_core import Register, hookimpl


@hookimpl
def matrix_register_backends(register: Register) -> None:
    register("azure", AzureBackend)
