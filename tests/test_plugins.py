"""Plugin discovery, registration, collisions and isolation of broken plugins."""

from __future__ import annotations

import types
from dataclasses import dataclass

import pytest

from matrix_core import hookimpl
from matrix_core.agent import Agent
from matrix_core.errors import PluginError
from matrix_core.orchestrator import DONE, Orchestrator
from matrix_core.plugins import BUILTIN_PLUGINS, load_plugins
from matrix_core.sinks.jsonl import JsonlSink
from matrix_core.testing import register_plugin

BUILTINS = [module.rsplit(".", 1)[-1] for module in BUILTIN_PLUGINS]


class Shouter(Agent):
    """Upper-cases the row's text."""

    async def step(self, task):
        task.row["text"] = task.row["text"].upper()
        return task


@dataclass
class ShoutOrchestrator(Orchestrator):
    """Shouts."""

    roles = {"shouter": "test.shouter"}

    def next_role(self):
        return "shouter" if self.status is None else DONE


class Unfinished(Agent):
    """Forgets to implement step()."""


def plugin(**hooks) -> types.SimpleNamespace:
    """A plugin object whose hooks register the given ``{hook_suffix: [(name, cls), ...]}``."""
    namespace = types.SimpleNamespace()
    for kind, items in hooks.items():

        def hook(register, items=items):
            for name, cls in items:
                register(name, cls)

        hook.__name__ = f"matrix_register_{kind}"
        setattr(namespace, hook.__name__, hookimpl(hook))
    return namespace


def info(loaded, name):
    return next(i for i in loaded.infos if i.name == name)


def test_builtins_register_through_the_hooks():
    loaded = load_plugins()
    sinks = info(loaded, "sinks")
    assert (sinks.source, sinks.status, sinks.hooks) == ("builtin", "ok", ["matrix_register_sinks"])
    assert loaded.registry.get("sinks", "jsonl").cls is JsonlSink


def test_in_process_plugin_registers_every_kind():
    with register_plugin(
        plugin(agents=[("test.shouter", Shouter)], orchestrators=[("shout", ShoutOrchestrator)]), "t"
    ) as loaded:
        record = info(loaded, "t")
        assert record.status == "ok"
        assert record.components == {"orchestrators": ["shout"], "agents": ["test.shouter"]}
        assert record.hooks == ["matrix_register_agents", "matrix_register_orchestrators"]
        assert loaded.registry.get("orchestrators", "shout").target == "test_plugins:ShoutOrchestrator"
    assert "shout" not in load_plugins().registry.names("orchestrators")


def test_a_taken_name_is_an_error_naming_both_plugins():
    with (
        register_plugin(plugin(agents=[("test.shouter", Shouter)]), "first"),
        register_plugin(plugin(agents=[("test.shouter", Shouter)], sinks=[("other", JsonlSink)]), "second") as loaded,
    ):
        second = info(loaded, "second")
        assert second.status == "error"
        assert "'second' registers agent 'test.shouter', already registered by plugin 'first'" in second.error
        assert second.components == {}
        assert "other" not in loaded.registry.names("sinks"), "a failed plugin keeps none of its components"
        assert info(loaded, "first").status == "ok"


def test_a_builtin_name_cannot_be_taken():
    with register_plugin(plugin(sinks=[("jsonl", JsonlSink)]), "mine") as loaded:
        assert "already registered by plugin 'sinks'" in info(loaded, "mine").error
        assert loaded.registry.get("sinks", "jsonl").plugin == "sinks"


def test_a_name_twice_in_one_plugin_is_an_error():
    with register_plugin(plugin(sinks=[("a", JsonlSink), ("a", JsonlSink)]), "twice") as loaded:
        assert "already registered by plugin 'twice'" in info(loaded, "twice").error


def local_class():
    class Local(Agent):
        async def step(self, task):
            return task

    return Local


@pytest.mark.parametrize(
    ("name", "component", "message"),
    [
        ("x", object(), "must be a subclass of matrix_core.agent.Agent"),
        ("x", ShoutOrchestrator, "must be a subclass of matrix_core.agent.Agent"),
        ("", Shouter, "name must be a non-empty word"),
        ("has space", Shouter, "name must be a non-empty word"),
        (3, Shouter, "name must be a non-empty word"),
        ("x", Unfinished, "does not implement step"),
        ("x", local_class(), "is not importable by that name"),
    ],
)
def test_garbage_registrations_are_recorded_not_raised(name, component, message):
    with register_plugin(plugin(agents=[(name, component)]), "garbage") as loaded:
        record = info(loaded, "garbage")
        assert record.status == "error"
        assert message in record.error
        assert info(loaded, "sinks").status == "ok"


def test_a_plugin_raising_in_a_hook_is_isolated():
    @hookimpl
    def matrix_register_agents(register):
        register("test.shouter", Shouter)
        raise RuntimeError("boom")

    with register_plugin(types.SimpleNamespace(matrix_register_agents=matrix_register_agents), "raiser") as loaded:
        record = info(loaded, "raiser")
        assert (record.status, record.error) == ("error", "RuntimeError: boom")
        assert "test.shouter" not in loaded.registry.names("agents")


def test_unknown_hook_names_are_reported_with_a_suggestion():
    @hookimpl
    def matrix_register_agent(register):
        pass

    with register_plugin(types.SimpleNamespace(matrix_register_agent=matrix_register_agent), "typo") as loaded:
        assert (
            "unknown hook 'matrix_register_agent' (did you mean 'matrix_register_agents'?)"
            in info(loaded, "typo").error
        )


def test_a_hook_with_wrong_arguments_is_reported():
    @hookimpl
    def matrix_register_agents(registry):
        pass

    with register_plugin(types.SimpleNamespace(matrix_register_agents=matrix_register_agents), "args") as loaded:
        assert "registry" in info(loaded, "args").error


def test_entry_point_plugins_load_in_isolation(make_distribution):
    make_distribution(
        "broken-import", {"broken_import": "raise ImportError('missing dependency xyz')"}, {"broken": "broken_import"}
    )
    make_distribution(
        "good-plugin",
        {
            "good_plugin": """
                from matrix_core import hookimpl
                from matrix_core.sinks.jsonl import JsonlSink

                class GoodSink(JsonlSink):
                    '''A sink.'''

                @hookimpl
                def matrix_register_sinks(register):
                    register("good", GoodSink)
            """
        },
        {"good": "good_plugin"},
        version="2.5",
    )
    loaded = load_plugins()
    names = [i.name for i in loaded.infos]
    assert names[: len(BUILTINS)] == BUILTINS, "builtins first"
    assert names.index("broken") < names.index("good"), "then entry points by distribution name"
    broken = info(loaded, "broken")
    assert (broken.status, broken.version, broken.source) == ("error", "1.0", "entry point")
    assert broken.error == "ImportError: missing dependency xyz"
    good = info(loaded, "good")
    assert (good.status, good.version, good.components) == ("ok", "2.5", {"sinks": ["good"]})


def test_strict_mode_makes_plugin_errors_fatal(make_distribution, monkeypatch):
    make_distribution("strict-broken", {"strict_broken": "1/0"}, {"strictly": "strict_broken"})
    monkeypatch.setenv("MATRIX_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'strictly' failed: ZeroDivisionError"):
        load_plugins()


def test_disabled_plugins_are_listed_but_not_loaded(make_distribution, monkeypatch):
    make_distribution(
        "never-imported", {"never_imported": "raise SystemExit('imported!')"}, {"never": "never_imported"}
    )
    monkeypatch.setenv("MATRIX_DISABLE_PLUGINS", "never, sinks")
    loaded = load_plugins()
    assert info(loaded, "never").status == "disabled"
    assert info(loaded, "sinks").status == "disabled"
    assert not {"jsonl", "parquet"} & set(loaded.registry.names("sinks")), "the core's sinks plugin is off"


def test_plugins_load_once_per_process():
    calls = []

    @hookimpl
    def matrix_register_sinks(register):
        calls.append(1)

    with register_plugin(types.SimpleNamespace(matrix_register_sinks=matrix_register_sinks), "counted") as loaded:
        assert load_plugins() is loaded
        load_plugins()
        assert calls == [1]


def test_in_process_plugins_load_after_entry_points(make_distribution):
    make_distribution("zzz-last-by-name", {"zzz_plugin": ""}, {"zzz": "zzz_plugin"})
    with register_plugin(types.SimpleNamespace(), "aaa") as loaded:
        names = [i.name for i in loaded.infos]
        assert names[: len(BUILTINS)] == BUILTINS and names[-1] == "aaa", "in-process plugins come last"
        assert "zzz" in names
