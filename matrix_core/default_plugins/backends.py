"""Built-in LLM backends."""

from matrix_core import hookimpl
from matrix_core.backends.local import LocalBackend
from matrix_core.backends.openai import OpenAIBackend
from matrix_core.backends.sglang import SGLangBackend
from matrix_core.backends.vllm import VLLMBackend
from matrix_core.hookspecs import Register


@hookimpl
def matrix_register_backends(register: Register) -> None:
    register("openai", OpenAIBackend)
    register("local", LocalBackend)
    register("vllm", VLLMBackend)
    register("sglang", SGLangBackend)
