"""The built-in ``inference`` workflow."""

from matrix_core import hookimpl
from matrix_core.hookspecs import Register
from matrix_core.workflows.inference import InferenceAgent, InferenceOrchestrator


@hookimpl
def matrix_register_orchestrators(register: Register) -> None:
    register("inference", InferenceOrchestrator)


@hookimpl
def matrix_register_agents(register: Register) -> None:
    register("inference.model", InferenceAgent)
