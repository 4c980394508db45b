"""pyproject's filterwarnings: a deprecation attributed to our code fails the test, a library's own does not."""

import warnings

import pytest


def deprecated_in(module: str) -> None:
    warnings.warn_explicit("old API", DeprecationWarning, f"{module.replace('.', '/')}.py", 1, module=module)


@pytest.mark.parametrize("module", ["newsletter", "newsletter.cli.subscribers", "workers.tasks", "config",
                                    "tests.integration.test_import"])
def test_a_deprecation_from_our_code_is_an_error(module):
    with pytest.raises(DeprecationWarning, match="old API"):
        deprecated_in(module)


@pytest.mark.parametrize("module", ["click", "sqlalchemy.orm.session", "newsletterlib", "configparser"])
def test_a_deprecation_inside_a_library_is_ignored(module):
    with warnings.catch_warnings(record=True) as caught:
        deprecated_in(module)
    assert caught == []
