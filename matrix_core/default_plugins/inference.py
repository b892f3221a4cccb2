"""The built-in ``inference`` workflow."""

from matrix_core import hookimpl
from matrix_core.hookspecs import Register
from matrix_core.workflows.inference import InferenceAgent, InferenceTask


@hookimpl
def matrix_register_orchestrators(register: Register) -> None:
    register("inference", InferenceTask)


@hookimpl
def matrix_register_agents(register: Register) -> None:
    register("inference.model", InferenceAgent)
