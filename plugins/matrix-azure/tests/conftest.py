"""Fixtures of matrix-azure's tests: the installed plugin, loaded strictly, with no Azure credentials from the
environment of whoever runs them."""

from __future__ import annotations

import pytest

AZURE_VARIABLES = (
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture(autouse=True)
def strict_plugins(matrix_strict_plugins: None) -> None:
    """Every test loads the plugins anew, strictly (matrix_core.testing.pytest_plugin)."""


@pytest.fixture(autouse=True)
def no_azure_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the Azure variables it means to use, and only those."""
    for variable in AZURE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
