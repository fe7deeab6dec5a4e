"""The machine a bench ran on: :mod:`agents.run.machine`, under the name the benches import."""

from agents.run.machine import machine, machine_kind

__all__ = ["machine", "machine_kind"]
