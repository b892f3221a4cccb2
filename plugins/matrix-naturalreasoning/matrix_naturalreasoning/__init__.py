"""matrix-naturalreasoning: NaturalReasoning's web-document curation as a Matrix workflow (``matrix run
naturalreasoning``)."""

from matrix_core import Register, hookimpl
from matrix_naturalreasoning.agents import Filter, Question, Score
from matrix_naturalreasoning.workflow import NROrchestrator


@hookimpl
def matrix_register_orchestrators(register: Register) -> None:
    register("naturalreasoning", NROrchestrator)


@hookimpl
def matrix_register_agents(register: Register) -> None:
    register("naturalreasoning.filter", Filter)
    register("naturalreasoning.score", Score)
    register("naturalreasoning.question", Question)
