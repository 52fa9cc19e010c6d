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
  otherwise recompile every imported module on every start), and the modules
  of the direct path are also written into one code cache file
  (``cni/codecache.py``), which the plugin loads when it serves a request
  itself: one read instead of the import system's search for each of some
  fifty modules.

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


def _package_dir() -> str:
    import topoipam

    return os.path.dirname(os.path.abspath(topoipam.__file__))


def _paths() -> list[str]:
    """What the launcher puts first on ``sys.path``: topoipam's parent and this installation's site-packages."""
    import sysconfig

    prefix = _venv_prefix()
    found = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix}) if prefix else sysconfig.get_paths()
    paths = [os.path.dirname(_package_dir())]
    for key in ("purelib", "platlib"):  # the datastore clients (etcd: grpc, protobuf) live there
        directory = found[key]
        if directory not in paths:
            paths.append(directory)
    return paths


def _venv_prefix() -> str | None:
    """The virtual environment this interpreter belongs to, as ``site`` would find it (its
    ``pyvenv.cfg``); also when ``site`` did not run, as under the launcher's own ``-S``, where
    ``sys.prefix`` is the base interpreter's."""
    executable_dir = os.path.dirname(os.path.abspath(sys.executable))
    for directory in (executable_dir, os.path.dirname(executable_dir)):
        if os.path.isfile(os.path.join(directory, "pyvenv.cfg")):
            return directory
    return None


def launcher_text(python: str | None = None) -> str:
    """The launcher for ``python`` (default: this interpreter) and this topoipam installation."""
    return TEMPLATE.format(python=python or sys.executable, paths=_paths())


def install(path: str, python: str | None = None) -> str:
    """Write the launcher at ``path`` (atomically, mode 0755), byte-compile topoipam and build the code
    cache with the launcher's interpreter; returns what became of the code cache, for the user."""
    import compileall

    text = launcher_text(python)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    compileall.compile_dir(_package_dir(), quiet=1)
    return build_code_cache(python or sys.executable)


def build_code_cache(python: str) -> str:
    """Build the code cache in a fresh ``python -IS`` (its own byte code, and only the modules a request
    imports); a failure is reported, not raised: the launcher works without the cache, only slower."""
    import subprocess

    script = (f"import sys; sys.path[:0] = {_paths()!r}\n"
              "from topoipam.cni import codecache\n"
              f"path = codecache.cache_path({_package_dir()!r})\n"
              "print(codecache.build(path), path)\n")
    proc = subprocess.run([python, "-IS", "-c", script], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no code cache ({reason}): the plugin works, about 1.5 ms slower per exec"
    count, cache = proc.stdout.split(maxsplit=1)
    return f"code cache of {count} modules in {cache.strip()}"


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
        cache = install(path, python)
    except OSError as exc:
        sys.stderr.write(f"topoipam-cni install-launcher: cannot write {path}: {exc.strerror or exc}\n")
        return 1
    sys.stdout.write(f"wrote the topoipam-cni launcher {path} ({python or sys.executable} -IS); {cache}\n")
    return 0
