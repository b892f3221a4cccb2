"""matrix-coral: Collaborative Reasoner as a Matrix workflow (``matrix run coral``)."""

from matrix_coral.agents import Collaborator, Extractor
from matrix_coral.workflow import CoralOrchestrator
from matrix_core import Register, hookimpl


@hookimpl
def matrix_register_orchestrators(register: Register) -> None:
    register("coral", CoralOrchestrator)


@hookimpl
def matrix_register_agents(register: Register) -> None:
    register("coral.collaborator", Collaborator)
    register("coral.extractor", Extractor)
