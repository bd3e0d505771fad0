"""The source root `operator/` must never shadow the standard library's `operator` module."""

import operator
import sysconfig
from pathlib import Path


def test_operator_is_the_standard_library_module() -> None:
    assert Path(operator.__file__).parent == Path(sysconfig.get_paths()["stdlib"])
