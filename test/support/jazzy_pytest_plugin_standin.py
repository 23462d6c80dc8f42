"""Stand-in for the pytest hooks ROS 2 Jazzy's launch_testing plugin declares, loaded by every test run.

A ROS 2 Jazzy install loads launch_testing's and launch_pytest's pytest plugins into every pytest
session. launch_testing implements `pytest_pycollect_makemodule(path, parent)` with the py.path
`path` argument that pytest 9 removed: under pytest 9 the whole session aborts at start-up
(PluginValidationError, exit status 3). test/conftest.py registers this module, which implements the
same hook with the same signature and changes nothing (it returns None), so a test dependency that
would break a Jazzy install breaks CI here first. Where the real plugins are installed both load
side by side.
"""


def pytest_pycollect_makemodule(path, parent):  # noqa: ARG001 - the signature is the point
    return None
