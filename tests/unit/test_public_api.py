"""The package root declares its API and version, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import traitflow


def test_every_public_name_resolves() -> None:
    for name in traitflow.__all__:
        assert getattr(traitflow, name) is not None, name


def test_unknown_names_raise_attribute_error() -> None:
    try:
        traitflow.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("an unknown attribute resolved")


def test_version_matches_the_installed_distribution() -> None:
    assert traitflow.__version__ == version("traitflow")


def test_importing_the_package_and_its_config_loads_no_numeric_stack() -> None:
    # The DAG files import traitflow.config at parse time: it must not pull in numpy/pandas/gensim.
    code = (
        "import sys, traitflow, traitflow.config; "
        "print(sorted(m for m in ('numpy', 'pandas', 'gensim', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_all_lists_exactly_the_lazy_exports() -> None:
    assert set(traitflow.__all__) == {"__version__", *traitflow._EXPORTS}
