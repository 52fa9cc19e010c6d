"""CNI requests -> IPAM service calls -> CNI results, in-process.

``handle(req, store, service)`` serves one decoded ``CniRequest`` against an
open datastore and ``IpamService`` and returns the result object (ADD) or None.
It is the seam the node agent (issue 5) calls for requests that reach it over
its unix socket; ``respond(env, stdin, open_backend)`` adds decoding and the
mapping of every failure to the spec's error object, and ``cni.main`` is the
exec/stdin/stdout edge around it.

What a request does:

* An attachment (network, CNI_CONTAINERID, CNI_IFNAME) holds its addresses under
  the handle ``<network>.<CNI_CONTAINERID>:<CNI_IFNAME>`` (``handle_id``). A
  handle written before attachments had interfaces, ``<network>.<CNI_CONTAINERID>``,
  is the attachment of the interface its ``interface`` attribute names (any, if
  it names none): every command reads both forms (``_attachment``).
* ADD takes ``assign_ipv4``/``assign_ipv6`` addresses (or the ``IP=`` ones) for the
  attachment with attributes node, namespace, pod, container, interface,
  timestamp. The first attempt asks the service for a new handle
  (``AssignRequest.exclusive``): its one commit also checks that neither handle
  form exists, so a new attachment costs no read. If one exists, or the attempt
  fails, the attachment is read (``_attachment``): one that already holds
  exactly what the request asks for gets those addresses again (a retried ADD
  is idempotent); one holding something else is refused (the runtime must DEL
  first); an empty one is assigned, so that a failure can release the whole
  handle and leave nothing behind (invariant 5). A commit
  whose outcome is unknown (code 11 errors) is resolved by reading the handle
  back (``_resolve``) before answering.
* DEL releases the attachment's handle; an unknown one is success (DEL is
  idempotent). It needs only the datastore from the ``ipam`` section.
* CHECK verifies that the attachment holds every address of ``prevResult``.
* GC releases every handle of this network whose attachment is not listed in
  ``cni.dev/valid-attachments``; it goes on past failures and reports them all.
* Gateways: ``_segment`` turns the ``ipam`` section into the request's
  ``L2Segment`` rule (core/block.py) under an L2 main plugin; results carry the
  gateway the rule or the routed default gives (docs/cni.md).
* STATUS is ready when the datastore answers and some enabled pool for
  workloads selects the node (or every requested pool exists and is enabled).
"""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Callable, Mapping

from topoipam import errors as E
from topoipam.cni import protocol as P
from topoipam.cni.netconf import ROUTED_GATEWAYS, CniArgs, IpamConf, parse_args, parse_ipam, parse_release
from topoipam.core.block import FIRST_USABLE, L2Segment
from topoipam.model import USE_WORKLOAD
from topoipam.store.base import Store

TYPE_CHECKING = False  # typing's own flag, without importing typing on the plugin's start-up path
if TYPE_CHECKING:  # the service is imported when a request needs it: VERSION and errors stay cheap
    from topoipam.ipam import IpamService

VALID_ATTACHMENTS = "cni.dev/valid-attachments"
OpenBackend = Callable[[str | None], "tuple[Store, IpamService]"]
RESOLVE_DEADLINE = 6.0  # seconds an ADD spends reading back a commit whose outcome is unknown
RESOLVE_PAUSE = 0.2  # seconds between those reads


def handle_id(network: str, container_id: str, ifname: str) -> str:
    """The attachment's handle. ``:`` is in neither a container id nor an interface name (libcni)."""
    return f"{network}.{container_id}:{ifname}"


def legacy_handle_id(network: str, container_id: str) -> str:
    """The handle written before attachments had interfaces (read, never written)."""
    return f"{network}.{container_id}"


def go_timestamp(ns: int) -> str:
    """Go's ``time.Now().UTC().String()``, as Calico records it: ``2024-01-02 03:04:05.123456789 +0000 UTC``."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    digits = f"{frac:09d}".rstrip("0")
    return f"{text}.{digits} +0000 UTC" if digits else f"{text} +0000 UTC"


def handle(req: P.CniRequest, store: Store, service: IpamService, *,
           now_ns: Callable[[], int] = time.time_ns, default_nodename: str | None = None,
           conf: IpamConf | None = None, args: CniArgs | None = None) -> dict | None:
    """Serve one request; raise ``CniError`` or ``TopoipamError`` on failure. ``conf`` and ``args``:
    the request's IPAM configuration and CNI_ARGS if the caller has parsed them already (else they
    are parsed here)."""
    if req.command == "VERSION":
        return P.version_object(req.version)
    if conf is None:
        conf = (parse_release if req.command == "DEL" else parse_ipam)(req.config, default_nodename)
    if req.command == "ADD":
        return _add(req, conf, service, now_ns, args)
    if req.command == "DEL":
        _del(req, service)
    elif req.command == "CHECK":
        _check(req, service)
    elif req.command == "GC":
        _gc(req, service, now_ns() / 1e9)
    elif req.command == "STATUS":
        _status(conf, store)
    return None


def _add(req: P.CniRequest, conf: IpamConf, service: IpamService, now_ns: Callable[[], int],
         args: CniArgs | None = None) -> dict:
    if args is None:
        args = parse_args(req.args)
    handle = handle_id(req.network, req.container_id, req.ifname)
    attrs = {"node": conf.nodename, "container": req.container_id, "interface": req.ifname,
             "timestamp": go_timestamp(now_ns())}
    if args.namespace:
        attrs["namespace"] = args.namespace
    if args.pod:
        attrs["pod"] = args.pod
    if not args.ips:  # the common case, a new attachment: its commit checks that it is new (no read first)
        addresses = _assign_new(service, req, conf, args, handle, attrs)
        if addresses is not None:
            return _result(req, conf, addresses)
    held_handle, held = _attachment(service, req)
    if held:
        if _answers(held, conf, args):  # a retried ADD (say after an answer 11 whose commit landed)
            return _result(req, conf, held)
        raise P.CniError(E.CNI_TOPOIPAM_ERROR,
                         f"container {req.container_id} interface {req.ifname} already holds "
                         f"{', '.join(str(i.ip) for i in held)} on network {req.network} (handle {held_handle})",
                         "a runtime must DEL before it repeats an ADD that asks for other addresses")
    return _result(req, conf, _assign(service, conf, args, handle, attrs))


def _assign_new(service: IpamService, req: P.CniRequest, conf: IpamConf, args: CniArgs, handle: str,
                attrs: dict) -> list | None:
    """The attachment's addresses if it is new (neither handle form exists, checked by the commit
    itself) and they landed; None when the caller must decide on a read of what the attachment holds:
    it holds a handle already (HandleInUseError, nothing written), or the attempt failed. The service
    has given back what a failed attempt took, and only that read can tell whether the handle held
    something before, so a failure here never releases by handle; the caller's second attempt, on a
    handle it read empty, reports the failure and cleans up as every ADD does."""
    legacy = legacy_handle_id(req.network, req.container_id)
    try:
        return _auto_assign(service, conf, handle, attrs, _segment(conf), args.namespace, exclusive=(legacy,))
    except Exception:  # noqa: BLE001 - decided again below on what the datastore holds
        return None


def _assign(service: IpamService, conf: IpamConf, args: CniArgs, handle: str, attrs: dict) -> list:
    """The attachment's addresses, assigned under ``handle``, which the caller has read empty. A failure
    releases what this ADD took."""
    segment = _segment(conf)
    try:
        if args.ips:
            addresses = [_assign_one(service, ip, handle, attrs, conf.nodename, segment) for ip in args.ips]
        else:
            addresses = _auto_assign(service, conf, handle, attrs, segment, args.namespace)
    except BaseException as exc:
        if not _outcome_unknown(exc):
            _undo(service, handle, exc)
            raise
        landed = _resolve(service, handle, conf, args)
        # On stderr (the runtime's or the agent's log): what the datastore said about the unknown outcome.
        sys.stderr.write(f"topoipam-cni: ADD {handle}: {exc}; read back: "
                         f"{'landed, answered as a success' if landed else 'not landed or unreadable, answer 11'}\n")
        if landed:
            return landed
        _undo(service, handle, exc)
        raise
    return addresses


def _result(req: P.CniRequest, conf: IpamConf, addresses: list) -> dict:
    """The ADD result; a route without its own ``gw`` takes the gateway of its family's address (a
    route of a family the request did not assign is left out)."""
    ips = [(str(a), _gateway(conf, a)) for a in sorted(addresses, key=lambda a: a.version)]
    family_gw = {6 if ":" in address else 4: gw for address, gw in reversed(ips)}
    routes = [dict(r, gw=r["gw"] or family_gw.get(6 if ":" in r["dst"] else 4)) for r in conf.routes]
    return P.format_result(req.version, ips, [r for r in routes if r["gw"]])


def _attachment(service: IpamService, req: P.CniRequest) -> tuple[str | None, list]:
    """(the handle that holds the request's attachment, the interfaces it holds): the attachment's
    own handle, else a legacy ``<network>.<container>`` one whose interface attribute is this
    interface (or absent); (None, []) when neither holds anything."""
    own, legacy = handle_id(req.network, req.container_id, req.ifname), legacy_handle_id(req.network, req.container_id)
    found = service.holdings([own, legacy])
    if found.get(own, ((), None))[0]:
        return own, found[own][0]
    held, attrs = found.get(legacy, ([], {}))
    if held and attrs.get("interface", req.ifname) == req.ifname:
        return legacy, held
    return None, []


def _answers(held: list, conf: IpamConf, args: CniArgs) -> bool:
    """Whether what an attachment holds is exactly what this ADD asks for."""
    if args.ips:
        return sorted(map(str, args.ips)) == sorted(str(i.ip) for i in held)
    return (sum(1 for i in held if i.version == 4), sum(1 for i in held if i.version == 6)) == \
        (int(conf.assign_ipv4), int(conf.assign_ipv6))


def _outcome_unknown(exc: BaseException) -> bool:
    """A failure after which a write may still have landed (timeouts, lost connections, busy)."""
    return isinstance(exc, E.TopoipamError) and exc.cni_code == E.CNI_TRY_AGAIN_LATER


def _resolve(service: IpamService, handle: str, conf: IpamConf, args: CniArgs,
             deadline: float = RESOLVE_DEADLINE) -> list | None:
    """What the handle holds once it can be read (within ``deadline`` seconds), if that is the whole
    request: then the ADD landed and is answered as a success. None: it did not, or the datastore
    did not answer in time; the caller then releases what it can and answers 11, and a retried ADD
    of this attachment gets whatever landed late (``_answers``) instead of "already holds"."""
    end = time.monotonic() + deadline
    while True:
        try:
            held = service.holdings([handle]).get(handle, ([], None))[0]
            return held if held and _answers(held, conf, args) else None
        except E.TopoipamError:
            if time.monotonic() + RESOLVE_PAUSE >= end:
                return None
            time.sleep(RESOLVE_PAUSE)


def _segment(conf: IpamConf) -> L2Segment | None:
    """The request's rule for unusable ordinals: under an L2 main plugin, the network, broadcast and
    gateway addresses of each block (the gateway: the configured one, else the block's first usable
    address); None under a routed one, where every address is usable."""
    if not conf.l2:
        return None
    return L2Segment(conf.gateways.get(4, FIRST_USABLE), conf.gateways.get(6, FIRST_USABLE))


def _auto_assign(service: IpamService, conf: IpamConf, handle: str, attrs: dict, segment,
                 namespace: str | None, exclusive: tuple | None = None) -> list:
    from topoipam.ipam import AssignRequest

    num4, num6 = int(conf.assign_ipv4), int(conf.assign_ipv6)
    res = service.auto_assign(AssignRequest(node=conf.nodename, handle=handle, num4=num4, num6=num6,
                                            pools4=conf.ipv4_pools, pools6=conf.ipv6_pools, namespace=namespace,
                                            namespace_labels=_namespace_labels(service, conf, namespace),
                                            attrs=attrs, use=USE_WORKLOAD, unusable=segment,
                                            exclusive=exclusive))
    got = list(res.ipv4) + list(res.ipv6)
    if len(res.ipv4) < num4 or len(res.ipv6) < num6:
        # The service is meant to raise here; should it ever report a partial
        # result instead, it must not reach the runtime as a success.
        raise E.ExhaustedError(
            f"assigned {len(res.ipv4)} of {num4} IPv4 and {len(res.ipv6)} of {num6} IPv6 addresses "
            f"for node {conf.nodename}", details="; ".join(getattr(res, "messages", ()) or ()))
    return got


def _namespace_labels(service: IpamService, conf: IpamConf, namespace: str | None) -> dict | None:
    """The labels of the pod's namespace (K8S_POD_NAMESPACE), read only when a pool could use them:
    some pool has a namespace selector and some family assigned has no requested pools (those
    bypass selectors).
    The topology read here is the one the assignment then decides on (the service keeps it)."""
    families = ((conf.assign_ipv4, conf.ipv4_pools), (conf.assign_ipv6, conf.ipv6_pools))
    if not namespace or all(pools for wanted, pools in families if wanted):
        return None
    if not any(p.spec.namespace_selector for p in service.assign_snapshot(conf.nodename).pools):
        return None
    from topoipam.resources import repo  # not at the top: DEL never reads a resource

    return repo.namespace_labels(service.store, namespace)


def _assign_one(service: IpamService, ip, handle: str, attrs: dict, node: str, segment):
    """Assign exactly ``ip``; return it with the prefix of the block it lies in. An address outside
    every enabled pool, or one the L2 segment cannot give, is bad input in CNI_ARGS: invalid
    environment (4). Any other refusal (an invalid handle, say) keeps its own code."""
    try:
        return service.assign_ip(ip, handle, attrs, node, segment)
    except (E.NotInPoolError, E.UnusableAddressError) as exc:
        raise P.CniError(E.CNI_INVALID_ENV, exc.message, exc.details) from None


def _undo(service: IpamService, handle: str, exc: BaseException) -> None:
    """Release what a failing ADD took (the handle was empty when it started)."""
    try:
        service.release_by_handle(handle)
    except E.NotFoundError:
        pass
    except Exception as undo_exc:  # the datastore went away mid-ADD: the runtime's DEL will retry
        note = f"releasing handle {handle} after the failure also failed ({undo_exc}); DEL will release it"
        if isinstance(exc, E.TopoipamError):
            exc.details = f"{exc.details}; {note}" if exc.details else note
        elif isinstance(exc, P.CniError):
            exc.details = f"{exc.details}; {note}" if exc.details else note


def _gateway(conf: IpamConf, address) -> str | None:
    """The gateway a result gives ``address`` (an interface with its block's prefix)."""
    version = address.version
    if conf.l2:
        gw = _segment(conf).gateway_of(address.network)
    else:
        gw = conf.gateways.get(version, ROUTED_GATEWAYS[version])
    return str(gw) if gw else None


def _release(service: IpamService, handle: str) -> bool:
    try:
        service.release_by_handle(handle)
    except E.NotFoundError:
        return False  # DEL of an unknown container succeeds (SPEC.md: DEL is idempotent)
    return True


def _del(req: P.CniRequest, service: IpamService) -> None:
    """Release the attachment's own handle, else the legacy handle if it is this attachment's."""
    if _release(service, handle_id(req.network, req.container_id, req.ifname)):
        return
    handle, _ = _attachment(service, req)
    if handle is not None:
        _release(service, handle)


def _check(req: P.CniRequest, service: IpamService) -> None:
    handle, interfaces = _attachment(service, req)
    held = {i.ip for i in interfaces}
    if not held:
        raise P.CniError(E.CNI_TOPOIPAM_ERROR, f"container {req.container_id} interface {req.ifname} holds no "
                         f"address on network {req.network} "
                         f"(handle {handle_id(req.network, req.container_id, req.ifname)})")
    prev = req.config.get("prevResult")
    entries = prev.get("ips", []) if isinstance(prev, dict) else []
    for entry in entries:
        try:
            ip = ipaddress.ip_interface(entry["address"]).ip
        except (TypeError, KeyError, ValueError):
            raise P.CniError(E.CNI_DECODE_FAILURE, f"prevResult ips entry {entry!r} has no valid address") from None
        if ip not in held:
            raise P.CniError(E.CNI_TOPOIPAM_ERROR, f"address {ip} of prevResult is not held by container "
                             f"{req.container_id} on network {req.network} (handle {handle})",
                             f"it holds {', '.join(sorted(map(str, held)))}")


def _valid_attachments(config: Mapping[str, object]) -> set[tuple[str, str]]:
    value = config.get(VALID_ATTACHMENTS, [])
    if not isinstance(value, list) or not all(isinstance(a, dict) and isinstance(a.get("containerID"), str)
                                              for a in value):
        raise P.CniError(E.CNI_INVALID_NETCONF, f"{VALID_ATTACHMENTS} must be a list of "
                         '{"containerID": ..., "ifname": ...}')
    return {(a["containerID"], str(a.get("ifname", ""))) for a in value}


def _gc(req: P.CniRequest, service: IpamService, now: float) -> None:
    """Release this network's allocations whose attachment the runtime no longer lists: the one
    decision ``ipam gc`` and the agent share (``ipam.gc.judge``), with no grace (the runtime's list
    is authoritative) and each address fenced by its sequence number."""
    from topoipam.ipam import gc

    valid = gc.Attachments(req.network, frozenset(_valid_attachments(req.config)))
    _verdict, done = gc.collect(service, now, 0.0, attachments=valid)
    failures = [f"{g.ip} ({g.handle}): {outcome}" for g, outcome in done if outcome.startswith("failed")]
    if failures:
        raise P.CniError(E.CNI_TRY_AGAIN_LATER, f"GC released {len(done) - len(failures)} of {len(done)} "
                         f"stale addresses of network {req.network}", "; ".join(failures))


def _status(conf: IpamConf, store: Store) -> None:
    try:
        reason = _not_ready_reason(conf, store)
    except E.TopoipamError as exc:
        raise P.CniError(P.STATUS_NOT_AVAILABLE, f"datastore {store.url or ''} does not answer: {exc}") from None
    if reason:
        raise P.CniError(P.STATUS_NOT_AVAILABLE, reason)


def _not_ready_reason(conf: IpamConf, store: Store) -> str:
    from topoipam.resources import repo
    from topoipam.selector import parse as parse_selector

    node = repo.get_node(store, conf.nodename)
    if node is None:
        return f"node {conf.nodename} is not registered in the datastore: ADD would fail"
    pools = repo.list_pools(store)
    labels = node.labels
    families = [v for v, on in ((4, conf.assign_ipv4), (6, conf.assign_ipv6)) if on]
    for version in families:
        requested = conf.ipv4_pools if version == 4 else conf.ipv6_pools
        usable = [p for p in pools if p.version == version and not p.spec.disabled
                  and USE_WORKLOAD in p.spec.allowed_uses]
        if requested:
            missing = [r for r in requested if not any(r in (p.name, p.spec.cidr) for p in usable)]
            if missing:
                return f"requested IPv{version} pools {missing} do not exist, are disabled or not for workloads"
        elif not any(parse_selector(p.spec.node_selector).evaluate(labels) for p in usable):
            return (f"no enabled IPv{version} pool for workloads selects node {conf.nodename} "
                    f"(labels {labels}; {len(pools)} pools in the datastore)")
    return ""


def _error_version(stdin: bytes, req: P.CniRequest | None) -> str:
    if req is not None and req.version in P.SUPPORTED_VERSIONS:
        return req.version
    marker = stdin.find(b'"cniVersion"')
    if marker >= 0:
        for version in P.SUPPORTED_VERSIONS:
            if f'"{version}"'.encode() in stdin[marker:marker + 40]:
                return version
    return P.LATEST


def respond(env: Mapping[str, str], stdin: bytes, open_backend: OpenBackend, *,
            now_ns: Callable[[], int] = time.time_ns, default_nodename: str | None = None) -> tuple[int, bytes]:
    """Decode, serve, encode: (exit code, stdout bytes). Never raises for a request's failure.

    ``default_nodename``: the node when the netconf names none (the agent passes its own)."""
    req = None
    try:
        req = P.parse_request(env, stdin)
        if req.command == "VERSION":
            return 0, P.dumps(P.version_object(req.version))
        # once: handed to handle(). DEL needs only the datastore: what ADD would refuse does not stop it.
        conf = (parse_release if req.command == "DEL" else parse_ipam)(req.config, default_nodename)
        args = None
        if req.command in ("ADD", "CHECK"):
            args = parse_args(req.args)  # refuse bad input before the datastore is even opened
        try:
            store, service = open_backend(conf.datastore)
        except E.TopoipamError as exc:
            if req.command == "STATUS":  # STATUS has its own codes: 50 = cannot serve ADD
                raise P.CniError(P.STATUS_NOT_AVAILABLE, f"datastore does not answer: {exc}") from None
            if req.command == "DEL" and isinstance(exc, E.DatastoreMissingError):
                return 0, b""  # a datastore that cannot exist holds no attachment: nothing to release
            raise
        result = handle(req, store, service, now_ns=now_ns, default_nodename=default_nodename, conf=conf,
                        args=args)
        return 0, (P.dumps(result) if result is not None else b"")
    except P.CniError as exc:
        err = exc
    except E.TopoipamError as exc:
        err = P.CniError.from_topoipam(exc)
    except Exception as exc:  # a bug: still answer in the protocol, with the trace on stderr
        import traceback

        traceback.print_exc(file=sys.stderr)
        err = P.CniError(E.CNI_TOPOIPAM_ERROR, f"internal error: {type(exc).__name__}: {exc}")
    return 1, P.dumps(P.error_object(err, _error_version(stdin, req)))
