"""The default pools calico-node creates at startup, from its environment variables (reference 1.4).

Pure: the caller passes the environment as a mapping, the IP versions that
already have a pool, and the default CIDRs it chose (a host-interface-aware
IPv4 default, a random IPv6 ULA); nothing here reads the environment or the
host. Invalid values raise ``ValidationError`` (calico-node exits on them).
"""

from __future__ import annotations

from collections.abc import Mapping

from topoipam.errors import SelectorError, ValidationError
from topoipam.model.types import (
    MODE_ALWAYS,
    MODE_CROSS_SUBNET,
    MODE_NEVER,
    IPPool,
    IPPoolSpec,
    Metadata,
)

DEFAULT_IPV4_POOL_CIDR = "192.168.0.0/16"
DEFAULT_POOL_NAME = {4: "default-ipv4-ippool", 6: "default-ipv6-ippool"}
_BLOCK_RANGE = {4: (20, 32), 6: (116, 128)}
_DEFAULT_BLOCK = {4: 26, 6: 122}
_FALSE_WORDS = frozenset(("false", "0", "no", "n", "f"))


def parse_encap_mode(value: str | None, var: str, encap: str) -> str:
    """``""|off|never`` -> Never, ``crosssubnet|cross-subnet`` -> CrossSubnet, ``always`` -> Always (any case)."""
    word = (value or "").strip().lower()
    if word in ("", "off", "never"):
        return MODE_NEVER
    if word in ("crosssubnet", "cross-subnet"):
        return MODE_CROSS_SUBNET
    if word == "always":
        return MODE_ALWAYS
    raise ValidationError(f"Unrecognized {encap} mode specified in {var} '{value}'")


def parse_env_bool(value: str | None, default: bool) -> bool:
    """calico-node's rule: unset -> default; false/0/no/n/f (any case) -> False; any other value -> True."""
    if value is None:
        return default
    return value.strip().lower() not in _FALSE_WORDS


def _block_size(env: Mapping[str, str], version: int) -> int:
    var = f"CALICO_IPV{version}POOL_BLOCK_SIZE"
    text = env.get(var, "")
    if not text:
        return _DEFAULT_BLOCK[version]
    low, high = _BLOCK_RANGE[version]
    try:
        size = int(text)
    except ValueError:
        raise ValidationError(f"{var} must be an integer, got '{text}'") from None
    if not low <= size <= high:
        raise ValidationError(f"{var} must be between {low} and {high}, got {size}")
    return size


def _node_selector(env: Mapping[str, str], version: int) -> str:
    var = f"CALICO_IPV{version}POOL_NODE_SELECTOR"
    text = env.get(var, "") or "all()"
    from topoipam.selector import parse

    try:
        parse(text)
    except SelectorError as exc:
        raise ValidationError(f"{var} is not a valid selector '{text}': {exc}") from None
    return text


def _pool(env: Mapping[str, str], version: int, cidr: str) -> IPPool:
    prefix = f"CALICO_IPV{version}POOL_"
    spec = IPPoolSpec(
        cidr=cidr,
        vxlan_mode=parse_encap_mode(env.get(prefix + "VXLAN"), prefix + "VXLAN", "VXLAN"),
        ipip_mode=parse_encap_mode(env.get(prefix + "IPIP"), prefix + "IPIP", "IPIP") if version == 4 else MODE_NEVER,
        nat_outgoing=parse_env_bool(env.get(prefix + "NAT_OUTGOING"), version == 4),
        disable_bgp_export=parse_env_bool(env.get(prefix + "DISABLE_BGP_EXPORT"), False),
        block_size=_block_size(env, version),
        node_selector=_node_selector(env, version),
    )
    return IPPool(Metadata(DEFAULT_POOL_NAME[version]), spec)


def default_pools(env: Mapping[str, str], *, existing_versions=frozenset(), ipv4_cidr: str = DEFAULT_IPV4_POOL_CIDR,
                  ipv6_cidr: str | None = None) -> list[IPPool]:
    """The pools to create: one per IP version that has no pool yet (any name, even disabled).

    ``ipv4_cidr``/``ipv6_cidr`` are the caller's defaults for an unset
    ``CALICO_IPV{4,6}POOL_CIDR``; ``ipv6_cidr=None`` means no IPv6 default
    (e.g. the host has no IPv6). ``none`` as a CIDR skips that version.
    The pools are not validated here: the caller runs ``validate`` like any create.
    """
    cidr_env = {4: env.get("CALICO_IPV4POOL_CIDR", ""), 6: env.get("CALICO_IPV6POOL_CIDR", "")}
    if env.get("NO_DEFAULT_POOLS", "").strip().lower() == "true":
        for version, text in cidr_env.items():
            if text:
                raise ValidationError(f"Invalid configuration: NO_DEFAULT_POOLS=true and CALICO_IPV{version}POOL_CIDR "
                                      f"'{text}' are both set")
        return []
    pools = []
    for version, fallback in ((4, ipv4_cidr), (6, ipv6_cidr)):
        cidr = cidr_env[version] or fallback
        if version in existing_versions or not cidr or cidr.lower() == "none":
            continue
        pools.append(_pool(env, version, cidr))
    return pools
