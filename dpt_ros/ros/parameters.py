"""dpt_node's parameters on an rclpy node: declarations with descriptors, reading, unknown names.

The table itself (names, defaults, ranges, validation) is ROS-free in dpt_ros.node_parameters.
"""
from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.parameter import Parameter

from dpt_ros import node_parameters as table

CAMERAS = "cameras"
# Declared by rclpy itself or by the middleware's QoS override mechanism, not by us.
_ROS_OWN_PREFIXES = ("qos_overrides.",)


class ParameterError(ValueError):
    """A parameter value given at start-up is unusable; the message says which and why."""


def descriptor_of(spec: table.ParameterSpec) -> ParameterDescriptor:
    restart = {"restart": " [restart needed]", "reload": " [reloads the model]", "live": ""}[spec.applies]
    descriptor = ParameterDescriptor(description=spec.description + restart,
                                     read_only=spec.applies == "restart",
                                     # doubles given as `:=10` (double arrays as `:=[0, 0, 1]`) arrive
                                     # as integers; validate() checks the type and value_of() converts.
                                     dynamic_typing=isinstance(spec.default, (float, list)))
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.minimum is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum),
                                                     step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum),
                                                                  to_value=float(spec.maximum), step=0.0)]
    return descriptor


def declare(node) -> list[str]:
    """Declare every dpt_node parameter on ``node`` and check the start-up values.

    Returns the camera namespaces (empty: one camera). Raises ParameterError with one line."""
    for spec in table.PARAMETERS:
        try:
            node.declare_parameter(spec.name, spec.default, descriptor_of(spec))
        except InvalidParameterTypeException as error:
            # A value of the wrong type (e.g. `-p input_size:=large`): one line, not a traceback.
            hint = (" (the command line reads values as YAML: quote it, e.g. -p 'name:=\"off\"')"
                    if isinstance(spec.default, str) else "")
            raise ParameterError(f"{spec.name} must be of type {type(spec.default).__name__}{hint}; "
                                 f"{str(error).split(': ')[0]}") from None
    cameras = _declare_cameras(node)
    for spec in table.PARAMETERS:
        # The value as given (value_of would convert a wrong type before validate could name it).
        problem = table.validate(spec.name, node.get_parameter(spec.name).value)
        if problem:
            raise ParameterError(problem)
    problem = table.validate_together(values_of(node, table.PARAMETERS_BY_NAME)) or table.validate_cameras(cameras)
    if problem:
        raise ParameterError(problem)
    return cameras


def _declare_cameras(node) -> list[str]:
    descriptor = ParameterDescriptor(
        description="Input namespaces served by this node, batched into one forward pass (e.g. "
                    "[front, left]); [] = one camera on image/camera_info [restart needed]",
        read_only=True)
    try:
        declared = node.declare_parameter(CAMERAS, Parameter.Type.STRING_ARRAY, descriptor)
    except InvalidParameterTypeException:
        raise ParameterError("cameras must be a list of strings, e.g. -p 'cameras:=[front, left]'") from None
    if declared.type_ == Parameter.Type.NOT_SET:
        # rclpy infers an empty list's type as a byte array, so [] cannot be the declared default;
        # left unset, one unset parameter makes every GetParameters reply that names it empty
        # (`ros2 param dump` printed `ros__parameters: {}`). Store a typed empty list instead.
        node._parameters[CAMERAS] = Parameter(CAMERAS, Parameter.Type.STRING_ARRAY, [])
        return []
    return list(declared.value)


def value_of(node, name: str):
    """A parameter's value, doubles as float and double arrays as lists of floats (they may have
    been given as integers)."""
    value = node.get_parameter(name).value
    spec = table.PARAMETERS_BY_NAME.get(name)
    if spec is not None and isinstance(spec.default, float):
        return float(value)
    if spec is not None and isinstance(spec.default, list):
        return [float(item) for item in value]
    return value


def values_of(node, names) -> dict:
    return {name: value_of(node, name) for name in names}


def unknown_names(node) -> list[tuple[str, str | None]]:
    """Parameters given to the node (--params-file, -p) that it does not have: (name, closest known
    name or None). A typo would otherwise be ignored silently and its default used."""
    given = getattr(node, "_parameter_overrides", {})  # rclpy keeps the overrides on the node
    known = [name for name in node._parameters]
    return [(name, table.closest_name(name, known)) for name in sorted(given)
            if not node.has_parameter(name) and not name.startswith(_ROS_OWN_PREFIXES)]
