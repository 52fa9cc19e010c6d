"""``topoipam-cni``: the exec edge of the CNI IPAM plugin.

Reads the environment and stdin, lets ``cni.handler.respond`` serve the
request, writes the result or the spec's error object to stdout and exits 0 or
1. ``-v``/``--version`` prints the plugin and protocol versions (as the
reference plugins do when run without ``CNI_COMMAND``). When the node agent
serves the network (``ipam.agent_socket``, or the default socket exists) the
request is forwarded to it instead (``cni.agent_client``).

``install-launcher PATH`` writes the lean launcher (``cni.launcher``): the
executable a runtime should exec, which starts the interpreter without the
site machinery.

The plugin is exec'd once per pod, so this module imports only ``sys`` and
``posix`` at the top: in agent mode the rest of the path is ``cni.agent_client``
and ``cni.wire`` (no os, json, protocol or datastore code); on the direct path
it is the assignment path (standard library, errors, store base + SQLite,
model types and storage, selector, core, resources.repo/keys, ipam, cni).
tests/test_cni_lean.py runs the installed executable with ``-X importtime``
and fails if either grows.
"""

import posix
import sys

ABOUT = "topoipam-cni: topology-aware CNI IPAM plugin (topoipam)"


class _Backend:
    """Opens the datastore once per process and closes it when the request is done."""

    def __init__(self) -> None:
        self.store = None

    def __call__(self, url):
        import os

        url = url or os.environ.get("TOPOIPAM_DATASTORE")
        if not url:  # a private default file on every node would be an address space per node
            from topoipam.errors import ValidationError

            raise ValidationError('no datastore configured: set "datastore" in the ipam section (e.g. '
                                  '"sqlite:///var/lib/topoipam/topoipam.db" on one machine), TOPOIPAM_DATASTORE, '
                                  'or "agent_socket" for the node\'s agent; topoipam-cni never falls back to a '
                                  "local default file")
        from topoipam.store import open_store

        self.store = open_store(url)
        from topoipam.ipam import IpamService

        return self.store, IpamService(self.store)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _about() -> str:
    from topoipam.cni import protocol as P

    return f"{ABOUT}\nCNI protocol versions supported: {', '.join(P.SUPPORTED_VERSIONS)}\n"


def _direct(stdin: bytes, exec_d: bool) -> tuple:
    import os

    if exec_d:  # a process of its own: its imports may come from the code cache (cni/codecache.py)
        from topoipam.cni import codecache

        codecache.install(codecache.cache_path(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from topoipam.cni.handler import respond

    backend = _Backend()
    try:
        return respond(os.environ, stdin, backend)
    finally:
        # Closed explicitly: as the last connection on the file this checkpoints the
        # write-ahead log. Leaving it to the next process was measured slower: with no
        # connection open, that process must first rebuild the log's index from the log.
        backend.close()


def main(argv=None) -> int:
    """The console script's entry point. Called with ``argv`` (in-process) it returns the exit
    code; called without (as the installed script does) it ends the process itself."""
    argv_given, argv = argv, (sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-v", "--version", "version"):
        sys.stdout.write(_about())
        return 0
    if argv and argv[0] == "install-launcher":
        from topoipam.cni.launcher import install_main

        return install_main(argv[1:])
    from topoipam.cni import agent_client, wire

    env = wire.cni_environment()  # what agent mode sends; the direct path reads os.environ itself
    command = env.get("CNI_COMMAND")
    if not command:
        sys.stderr.write(_about())
    stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    agent = None if command == "VERSION" else agent_client.agent_socket_for(stdin)
    if command == "VERSION":  # answered here: no datastore code is imported
        from topoipam.cni import protocol as P

        code, out = 0, P.dumps(P.version_object(P.version_probe(stdin)))
    elif agent:  # the node agent serves it (cni/agent_client.py); no datastore code is imported
        code, out = agent_client.forward(agent, env, stdin)
    else:
        code, out = _direct(stdin, exec_d=argv_given is None)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    if argv_given is None:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the exec'd process without interpreter teardown.

    The answer is on stdout, every datastore write is committed and the store is
    closed: tearing down the hundreds of modules and objects the plugin loaded
    would only add to the runtime's wait.
    """
    sys.stderr.flush()
    posix._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
