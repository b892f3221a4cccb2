"""matrix-tau2: tau2-bench simulations as a Matrix workflow (``matrix run tau2``)."""

from omegaconf import OmegaConf

from matrix_core import Register, hookimpl
from matrix_tau2.agents import Assistant, Reward, ToolExecutor, UserSimulator
from matrix_tau2.catalog import default_rows
from matrix_tau2.results import Tau2Sink
from matrix_tau2.workflow import Tau2Orchestrator

# tau2.yaml's default input: ``${tau2_tasks:domain,split,trials}`` is the list of the tasks to run, written on use.
OmegaConf.register_resolver(
    "tau2_tasks", lambda domain, split, trials: default_rows(str(domain), str(split), int(trials)), replace=True
)


@hookimpl
def matrix_register_orchestrators(register: Register) -> None:
    register("tau2", Tau2Orchestrator)


@hookimpl
def matrix_register_agents(register: Register) -> None:
    register("tau2.user", UserSimulator)
    register("tau2.assistant", Assistant)
    register("tau2.tool", ToolExecutor)
    register("tau2.reward", Reward)


@hookimpl
def matrix_register_sinks(register: Register) -> None:
    register("tau2", Tau2Sink)
