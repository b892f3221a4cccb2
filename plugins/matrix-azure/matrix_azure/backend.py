"""The ``azure`` backend: Azure OpenAI deployments through the official SDK's ``AsyncAzureOpenAI`` client.

Everything but the addressing, the credentials, the start-up check and the content filter is the core ``openai``
backend's: the same pooled client settings, request building, response parsing and failure classification. As
there, the SDK makes one attempt per request: the engine tries a step again (``run.max_retries``), waiting at least
as long as a 429's ``retry-after-ms`` (Azure's) or ``Retry-After`` header tells.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import openai

from matrix_core import (
    Backend,
    BackendError,
    ChatResponse,
    ConfigError,
    ContentFilterError,
    OpenAIBackend,
    OpenAIConfig,
    Sampling,
)

if TYPE_CHECKING:
    from matrix_azure.entra import EntraTokens

CONTENT_FILTER = "content_filter"
"""Azure's word for its content filter: the error code of a refused prompt, the finish reason of a cut answer."""


class AzureAuth(Enum):
    """How requests prove who sends them."""

    key = "key"
    """An ``api-key`` header: ``backend.api_key``, else the variable ``backend.api_key_env`` names."""
    entra = "entra"
    """``Authorization: Bearer`` tokens from Microsoft Entra ID (``DefaultAzureCredential``)."""


@dataclass
class AzureConfig(OpenAIConfig):
    """``backend.*`` for ``type=azure``."""

    endpoint: str | None = None
    """The resource's endpoint, e.g. ``https://my-resource.openai.azure.com``."""
    deployment: str | None = None
    """The deployment's name (default: ``backend.model``)."""
    api_version: str = "2024-10-21"
    api_key_env: str | None = "AZURE_OPENAI_API_KEY"
    auth: AzureAuth = AzureAuth.key
    entra_scope: str = "https://cognitiveservices.azure.com/.default"


class AzureBackend(OpenAIBackend):
    """Chat with one Azure OpenAI deployment through one pooled ``AsyncAzureOpenAI`` client."""

    config_schema = AzureConfig
    config: AzureConfig

    def __init__(self, config: AzureConfig) -> None:
        # Not OpenAIBackend.__init__: it requires backend.base_url, which backend.endpoint replaces here.
        Backend.__init__(self, config)
        if config.base_url:
            raise ConfigError(
                "backend.base_url is not used by backend.type=azure", hint="set backend.endpoint to the resource's URL"
            )
        if not config.endpoint:
            raise ConfigError("backend.endpoint is not set", hint="e.g. backend.endpoint=https://NAME.openai.azure.com")
        deployment = config.deployment or config.model
        if not deployment:
            raise ConfigError("backend.deployment is not set", hint="the name you gave the model's deployment in Azure")
        self._deployment = deployment
        self._url = f"{config.endpoint.rstrip('/')}/openai/deployments/{deployment}"
        self._model = config.model or deployment  # Azure routes by the path's deployment and ignores this one
        self._api_key = _api_key(config)
        self._entra = _entra_tokens() if config.auth is AzureAuth.entra else None
        self._client: openai.AsyncAzureOpenAI | None = None
        self._tokens: EntraTokens | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Open the client and check once that the endpoint answers, accepts the credentials and has the deployment,
        so that a wrong endpoint, key or deployment name fails the run at start-up instead of every task.

        The check sends a chat request with no messages: the deployment refuses it (HTTP 400) without generating or
        billing anything, while a missing deployment answers 404 and a rejected key 401.
        """
        async with self._starting:
            if self._client is not None:
                return  # started already (concurrent first chats wait here for one check)
            client = self._open()
            try:
                await client.chat.completions.create(model=self._model, messages=[], max_tokens=1)
            except (openai.BadRequestError, openai.RateLimitError):
                pass  # the deployment answered (a 429 outlasting the SDK's retries: it exists, and is busy)
            except BaseException as error:
                await self._close(client)
                if isinstance(error, openai.APIError):
                    raise self._error(error) from error
                raise  # an Entra ID token that could not be had is a BackendError already
            self._client = client

    def _open(self) -> openai.AsyncAzureOpenAI:
        """A client for the deployment, and with Entra ID the credential it takes tokens from."""
        if self._entra is not None:
            self._tokens = self._entra(self.config.entra_scope)
        return openai.AsyncAzureOpenAI(
            azure_endpoint=self.config.endpoint,
            azure_deployment=self._deployment,
            api_version=self.config.api_version,
            api_key=self._api_key,
            azure_ad_token_provider=self._tokens,
            timeout=self.config.timeout_s,
            max_retries=0,  # the engine retries steps, as with the openai backend
            http_client=self._pool(),  # the openai backend's pool: same transport, limits and keep-alive
        )

    async def chat(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: list[dict[str, Any]] | None = None,
        *,
        task_id: str | None = None,
    ) -> ChatResponse:
        """Send one chat completion request. A prompt or an answer that Azure's content filter blocks raises
        :class:`ContentFilterError` (not retried); any other failure after the retries, :class:`BackendError`."""
        response = await super().chat(messages, sampling, tools, task_id=task_id)
        if response.finish_reason == CONTENT_FILTER:
            raise ContentFilterError(f"{self._url}: Azure's content filter cut the answer")
        return response

    async def close(self) -> None:
        """Close the client, its connections and the Entra ID credential."""
        if self._client is not None:
            await self._close(self._client)
            self._client = None

    async def _close(self, client: openai.AsyncAzureOpenAI) -> None:
        await client.close()
        if self._tokens is not None:
            await self._tokens.close()
            self._tokens = None

    unreachable_hint = "is backend.endpoint right, and reachable from here?"

    @property
    def where(self) -> str:
        """The deployment's URL, which errors name."""
        return self._url

    def status_hint(self, status: int) -> str | None:
        """What to check when the start-up check or a request is answered ``status``."""
        if status in (401, 403):
            return "check the key (backend.api_key_env names its variable) or the Entra ID identity's role"
        if status == 404:
            return "check backend.endpoint, backend.deployment (the deployment's name) and backend.api_version"
        return None

    def _error(self, error: openai.APIError) -> BackendError:
        """As the ``openai`` backend's, and a prompt Azure's content filter blocked is a :class:`ContentFilterError`."""
        if isinstance(error, openai.APIStatusError) and error.code == CONTENT_FILTER:
            return ContentFilterError(f"{self._url}: Azure's content filter blocked the prompt{_categories(error)}")
        return super()._error(error)


def _api_key(config: AzureConfig) -> str | None:
    """``backend.api_key``, else the variable ``backend.api_key_env`` names; ``None`` with Entra ID."""
    if config.auth is AzureAuth.entra:
        if config.api_key:
            raise ConfigError("backend.api_key is set, but backend.auth=entra sends Entra ID tokens instead")
        return None
    if config.api_key:
        return config.api_key
    if not config.api_key_env:
        raise ConfigError("backend.api_key_env: no Azure OpenAI key", hint=_NO_KEY)
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ConfigError(f"backend.api_key_env: environment variable {config.api_key_env} is not set", hint=_NO_KEY)
    return key


def _entra_tokens() -> type[EntraTokens]:
    """The Entra ID token provider, whose module needs azure-identity: imported only when ``backend.auth=entra``."""
    try:
        from matrix_azure.entra import EntraTokens
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("azure"):
            raise
        raise ConfigError(
            "backend.auth=entra needs the azure-identity package", hint="pip install 'matrix-azure[entra]'"
        ) from None
    return EntraTokens


_NO_KEY = "export the key, name its variable with backend.api_key_env, or use Entra ID with backend.auth=entra"


def _categories(error: openai.APIStatusError) -> str:
    """`` (violence, hate)``: the categories Azure's content filter flagged, from the error's ``innererror``."""
    body = error.body if isinstance(error.body, dict) else {}
    results = (body.get("innererror") or {}).get("content_filter_result") or {}
    flagged = [name for name, result in results.items() if isinstance(result, dict) and result.get("filtered")]
    return f" ({', '.join(flagged)})" if flagged else ""
