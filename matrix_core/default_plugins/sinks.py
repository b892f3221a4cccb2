"""Built-in output sinks."""

from matrix_core import hookimpl
from matrix_core.hookspecs import Register
from matrix_core.sinks.jsonl import JsonlSink
from matrix_core.sinks.parquet import ParquetSink


@hookimpl
def matrix_register_sinks(register: Register) -> None:
    register("jsonl", JsonlSink)
    register("parquet", ParquetSink)
