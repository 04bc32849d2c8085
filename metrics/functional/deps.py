"""Import an optional dependency, or fail with the pip extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from speechqe.errors import MissingDependencyError


def require(module: str, extra: str, what: str, package: str | None = None) -> ModuleType:
    """``import module``; if it is missing raise :class:`MissingDependencyError` naming
    ``speechqe[extra]`` (``package`` is the pip name when it differs from the module's)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of its own imports is broken: a real error
        raise MissingDependencyError(package or module, extra, what) from exc
