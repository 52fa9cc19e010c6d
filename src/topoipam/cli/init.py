"""``topoipam init``: the default IP pools that installing Calico creates (reference 1.4).

Reads the environment variables calico-node reads (CALICO_IPV4POOL_CIDR,
_BLOCK_SIZE, _IPIP, _VXLAN, _NAT_OUTGOING, _NODE_SELECTOR, _DISABLE_BGP_EXPORT,
the CALICO_IPV6POOL_* twins, NO_DEFAULT_POOLS) and creates a family's default
pool only when no pool of that family exists, so running it again changes
nothing. A configuration calico-node would refuse to start with is an error
(exit 2) with calico-node's text.

Differences from calico-node, on purpose: IPIP defaults to ``Always`` (what
Calico's manifests set; calico-node's code default is Never); the IPv6 pool is
made only when asked for (CALICO_IPV6POOL_CIDR set, or FELIX_IPV6SUPPORT
true, which the manifests set to false), with a random ULA /48 when no CIDR is
given; the IPv4 default is always 192.168.0.0/16 (topoipam does not run on the
node, so it does not avoid host interface addresses).
"""

from __future__ import annotations

import ipaddress
import os
import re

from topoipam.errors import TopoipamError, ValidationError

DEFAULT_IPV4_POOL_CIDR = "192.168.0.0/16"
DEFAULT_POOL_NAME = {4: "default-ipv4-ippool", 6: "default-ipv6-ippool"}
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
DEFAULT_IPIP = "Always"


def register(subparsers) -> None:
    text = "Create the default IP pools (as installing Calico does), unless pools of that family exist."
    p = subparsers.add_parser("init", help=text, description=text + " Reads CALICO_IPV4POOL_* / CALICO_IPV6POOL_* "
                              "and NO_DEFAULT_POOLS from the environment.")
    p.set_defaults(run=run_init)


def _env_bool(env, name: str, default: bool) -> bool:
    """calico-node's evaluateENVBool: set and one of false/0/no/n/f -> False; any other set value -> True."""
    if name not in env:
        return default
    return env[name].lower() not in ("false", "0", "no", "n", "f")


def _mode(value: str, default: str, what: str) -> str:
    value = value.lower()
    if value == "":
        return default
    if value in ("off", "never"):
        return "Never"
    if value in ("crosssubnet", "cross-subnet"):
        return "CrossSubnet"
    if value == "always":
        return "Always"
    raise ValidationError(f"Unrecognized {what} '{value}'")


def _block_size(env, version: int) -> int:
    text = env.get(f"CALICO_IPV{version}POOL_BLOCK_SIZE", "")
    if text == "":
        return DEFAULT_BLOCK_SIZE[version]
    if not re.fullmatch(r"[+-]?[0-9]+", text):  # what Go's strconv.Atoi accepts
        raise ValidationError(f'Unable to convert blocksize to int: strconv.Atoi: parsing "{text}": invalid syntax')
    size = int(text)
    low, high = BLOCK_SIZE_RANGE[version]
    if not low <= size <= high:
        raise ValidationError(f"Invalid blocksize {size} for version {version}")
    return size


def _node_selector(env, version: int) -> str:
    text = env.get(f"CALICO_IPV{version}POOL_NODE_SELECTOR", "")
    from topoipam.errors import SelectorError
    from topoipam.selector import parse

    try:
        parse(text)
    except SelectorError as err:
        raise ValidationError(f"Invalid node selector '{text}' for version {version}: {err.message}") from None
    return text


def _cidr(text: str, version: int) -> str:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        net = None
    if net is None or net.version != version or "/" not in text:
        raise ValidationError(f"Invalid CIDR specified in CALICO_IPV{version}POOL_CIDR '{text}'")
    return str(net)


def _random_ula() -> str:
    """RFC 4193: fd00::/8 plus 40 random bits, as a /48."""
    import secrets

    return str(ipaddress.IPv6Network(((0xFD << 120) | (secrets.randbits(40) << 80), 48)))


def default_pools(env) -> list:
    """The pools calico-node would create for this environment (before looking at the datastore)."""
    from topoipam.model.types import IPPool, IPPoolSpec, Metadata

    v4, v6 = env.get("CALICO_IPV4POOL_CIDR", ""), env.get("CALICO_IPV6POOL_CIDR", "")
    if env.get("NO_DEFAULT_POOLS", "").lower() == "true":
        if v4 or v6:
            raise ValidationError("Invalid configuration with NO_DEFAULT_POOLS defined and "
                                  "CALICO_IPV4POOL_CIDR or CALICO_IPV6POOL_CIDR defined.")
        return []
    want = {4: v4 != "none", 6: v6 not in ("", "none") or (v6 == "" and _env_bool(env, "FELIX_IPV6SUPPORT", False))}
    pools = []
    for version in (4, 6):
        if not want[version]:
            continue
        size = _block_size(env, version)
        selector = _node_selector(env, version)
        given = v4 if version == 4 else v6
        cidr = _cidr(given, version) if given else (DEFAULT_IPV4_POOL_CIDR if version == 4 else _random_ula())
        ipip = _mode(env.get("CALICO_IPV4POOL_IPIP", ""), DEFAULT_IPIP,
                     "IPIP mode specified in CALICO_IPV4POOL_IPIP") if version == 4 else "Never"
        vxlan = _mode(env.get(f"CALICO_IPV{version}POOL_VXLAN", ""), "Never",
                      f"VXLAN mode specified in CALICO_IPV{version}POOL_VXLAN")
        spec = IPPoolSpec(
            cidr=cidr, ipip_mode=ipip, vxlan_mode=vxlan, block_size=size, node_selector=selector or "all()",
            nat_outgoing=_env_bool(env, f"CALICO_IPV{version}POOL_NAT_OUTGOING", version == 4),
            disable_bgp_export=_env_bool(env, f"CALICO_IPV{version}POOL_DISABLE_BGP_EXPORT", False),
        )
        pools.append(IPPool(Metadata(name=DEFAULT_POOL_NAME[version]), spec))
    return pools


def run_init(args, ctx) -> int:
    from topoipam.ipam.pool_blocks import PoolBlocks
    from topoipam.resources.service import ResourceService

    pools = default_pools(os.environ)
    if not pools:
        print("NO_DEFAULT_POOLS is true: no default IP pools created", file=ctx.out)
        return 0
    try:
        outcomes = ResourceService(ctx.store, PoolBlocks(ctx.store)).ensure_pools(pools)
    except TopoipamError as err:
        document = getattr(err, "document", None)
        failed = next((p for p in pools if document and p.name == document[2]), pools[0])
        err.message = f"Failed to create default IPv{failed.version} IP pool: {failed.spec.cidr}: {err.message}"
        raise
    for pool, outcome in outcomes:
        s = pool.spec
        if outcome == "created":
            print(f"Created default IPv{pool.version} pool {pool.name} ({s.cidr}) with NAT outgoing "
                  f"{str(s.nat_outgoing).lower()}. IPIP mode: {s.ipip_mode}, VXLAN mode: {s.vxlan_mode}, "
                  f"DisableBGPExport: {str(s.disable_bgp_export).lower()}", file=ctx.out)
        else:
            print(f"Not creating default IPv{pool.version} pool {pool.name}: {outcome}", file=ctx.out)
    return 0
