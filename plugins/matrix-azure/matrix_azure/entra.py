"""Microsoft Entra ID tokens for Azure OpenAI, from ``azure-identity`` (the optional extra ``matrix-azure[entra]``).
The backend imports this module only when ``backend.auth=entra``."""

from __future__ import annotations

import logging

from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

from matrix_core import BackendError, first_line

logger = logging.getLogger(__name__)


class EntraTokens:
    """Bearer tokens for ``scope`` from ``DefaultAzureCredential`` (environment, workload or managed identity,
    Azure CLI, ...), cached and refreshed by ``azure-identity``. The ``openai`` client calls it before each request."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self._credential = DefaultAzureCredential()
        self._token = get_bearer_token_provider(self._credential, scope)

    async def __call__(self) -> str:
        """A valid token; :class:`BackendError` when no credential of the chain can give one."""
        try:
            return await self._token()
        except ClientAuthenticationError as error:
            logger.debug("Entra ID token for %s: %s", self.scope, error)  # every credential tried, and why it failed
            raise BackendError(
                f"Microsoft Entra ID gave no token for {self.scope}: {first_line(error)}",
                hint="sign in with `az login`, or run with a managed identity or AZURE_CLIENT_ID/AZURE_TENANT_ID/..."
                " set; `matrix -v` lists every credential tried",
            ) from None

    async def close(self) -> None:
        """Close the credential's HTTP sessions."""
        await self._credential.close()
