"""Built-in LLM backends."""

from matrix_core import hookimpl
from matrix_core.backends.local import LocalBackend
from matrix_core.backends.openai import OpenAIBackend
from matrix_core.hookspecs import Register


@hookimpl
def matrix_register_backends(register: Register) -> None:
    register("openai", OpenAIBackend)
    register("local", LocalBackend)
