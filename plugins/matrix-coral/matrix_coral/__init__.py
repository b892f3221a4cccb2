"""matrix-coral: Collaborative Reasoner as a Matrix workflow (``matrix run coral``)."""

from matrix_coral.agents import Collaborator, Extractor
from matrix_coral.workflow import CoralTask
from matrix_core import hookimpl
from matrix_core.hookspecs import Register


@hookimpl
def matrix_register_orchestrators(register: Register) -> None:
    register("coral", CoralTask)


@hookimpl
def matrix_register_agents(register: Register) -> None:
    register("coral.collaborator", Collaborator)
    register("coral.extractor", Extractor)
