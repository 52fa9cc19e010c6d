"""Optional dependencies: which extra brings which module, and the message when one is missing.

The core (CLI, CNI plugin, SQLite) needs only PyYAML. The etcd backend (gRPC and
etcd's generated stubs) and the Prometheus output are extras, so a SQLite-only or
CNI-only host installs neither::

    pip install topoipam            # SQLite, CLI, CNI plugin
    pip install 'topoipam[etcd]'    # + etcd:// and etcds:// datastores, the agent on etcd
    pip install 'topoipam[metrics]' # + Prometheus output and /metrics endpoints
"""

from __future__ import annotations

import importlib

from topoipam.errors import MissingExtraError


def require(module: str, extra: str, feature: str):
    """Import ``module`` (a dependency of ``extra``) or raise ``MissingExtraError`` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs the optional dependencies of topoipam's '{extra}' extra "
            f"(module {exc.name or module} is not installed): pip install 'topoipam[{extra}]'"
        ) from None
