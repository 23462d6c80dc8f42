"""One row of dpt_node's parameter table (ROS-free).

Its own module so that the table (dpt_ros.node_parameters) can include rows defined next to the
feature they configure (dpt_ros.alignment_parameters) without the two importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: object
    description: str
    # "restart": read-only, needs a restart; "reload": reloads the model; "live": next frame.
    applies: str = "live"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
