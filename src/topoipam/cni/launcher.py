"""The lean launcher: the executable a container runtime execs for every pod.

``topoipam-cni install-launcher [PATH]`` (default: the running ``topoipam-cni``
itself) writes a small script that starts this interpreter with ``-I -S``
(``#!<python> -IS``) and names topoipam's own directory (and the
site-packages it was installed into) on ``sys.path`` itself, then
byte-compiles the package. Why those options:

* ``-S``: no ``site`` import. ``site`` reads ``pyvenv.cfg``, scans
  site-packages for ``.pth`` files and runs them (setuptools' distutils hook,
  an editable install's path hook): about 3 ms of a 14 ms interpreter start on
  the development machine, more on a busy node. The launcher puts back the
  only directories the plugin needs, as found at install time, so it works
  for editable installs (the source tree) and normal ones (site-packages)
  alike.
* ``-I``: isolated mode: ``PYTHON*`` variables of whatever environment the
  runtime passes (``PYTHONPATH``, ``PYTHONSTARTUP``, ...) and the user's site
  directory are ignored, and the script's own directory is not put on
  ``sys.path``: safer for a program run as root by the runtime, and no slower.
  It also ignores ``PYTHONDONTWRITEBYTECODE``, so byte code is used and kept.
* Byte-compiled: the package is compiled on install (pip already does so for
  a normal install; an editable one under ``PYTHONDONTWRITEBYTECODE=1`` would
  otherwise recompile every imported module on every start).

pip's own console script stays usable (it imports ``re`` and runs ``site``:
slower, same behaviour); the launcher replaces it when PATH is that script,
and is what deploy/ installs into ``/opt/cni/bin``.
"""

from __future__ import annotations

import os
import sys

TEMPLATE = """#!{python} -IS
# topoipam-cni launcher, written by `topoipam-cni install-launcher` (topoipam/cni/launcher.py).
# -IS: no site import, no PYTHON* variables; the directories below replace what site would add.
import sys
sys.path[:0] = {paths!r}
from topoipam.cni.main import main
main()
"""


def launcher_text(python: str | None = None) -> str:
    """The launcher for ``python`` (default: this interpreter) and this topoipam installation."""
    import sysconfig

    import topoipam

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(topoipam.__file__)))
    paths = [package_root]
    for key in ("purelib", "platlib"):  # the datastore clients (etcd: grpc, protobuf) live there
        directory = sysconfig.get_paths()[key]
        if directory not in paths:
            paths.append(directory)
    return TEMPLATE.format(python=python or sys.executable, paths=paths)


def install(path: str, python: str | None = None) -> None:
    """Write the launcher at ``path`` (atomically, mode 0755) and byte-compile topoipam."""
    import compileall

    import topoipam

    text = launcher_text(python)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    compileall.compile_dir(os.path.dirname(os.path.abspath(topoipam.__file__)), quiet=1)


def install_main(argv: list[str]) -> int:
    """``topoipam-cni install-launcher [PATH] [--python PYTHON]``: exit 0, or 2 with a message."""
    python = None
    if "--python" in argv:
        at = argv.index("--python")
        if at + 1 >= len(argv):
            sys.stderr.write("topoipam-cni install-launcher: --python needs an interpreter path\n")
            return 2
        python = argv[at + 1]
        argv = argv[:at] + argv[at + 2:]
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        sys.stderr.write("usage: topoipam-cni install-launcher [PATH] [--python PYTHON]\n")
        return 2
    path = argv[0] if argv else sys.argv[0]
    if python is not None and not os.access(python, os.X_OK):
        sys.stderr.write(f"topoipam-cni install-launcher: {python} is not an executable interpreter\n")
        return 2
    try:
        install(path, python)
    except OSError as exc:
        sys.stderr.write(f"topoipam-cni install-launcher: cannot write {path}: {exc.strerror or exc}\n")
        return 1
    sys.stdout.write(f"wrote the topoipam-cni launcher {path} ({python or sys.executable} -IS)\n")
    return 0
