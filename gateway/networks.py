"""Source allow-lists: the networks an account may sign in from.

Stored as the canonical CIDRs joined by commas (``10.1.0.0/16,2001:db8::/32``), so that
the sealed text has one spelling per list. Parsing is strict: a network with host bits
set (``10.1.2.3/16``) is refused rather than guessed at.
"""

from __future__ import annotations

import ipaddress

from gateway.errors import UsageError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Words that lift a restriction (``--allow-from any``).
ANYWHERE = ("any", "anywhere")


def parse(text: str) -> tuple[Network, ...]:
    """Parse ``CIDR[,CIDR…]`` (single addresses allowed); raise naming the bad entry."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        raise UsageError("no network given; use CIDR[,CIDR…], e.g. 10.1.0.0/16,192.0.2.7")
    networks: list[Network] = []
    for entry in entries:
        try:
            network = ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            raise UsageError(f"invalid network {entry!r}: {exc}") from None
        if network not in networks:
            networks.append(network)
    return tuple(sorted(networks, key=lambda n: (n.version, n)))


def render(networks: tuple[Network, ...]) -> str:
    """The stored (and sealed) spelling of a list."""
    return ",".join(str(network) for network in networks)


def stored(text: str | None) -> tuple[Network, ...] | None:
    """A stored list as networks; None means no restriction."""
    return None if text is None else parse(text)


def _address(source: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allows(networks: tuple[Network, ...] | None, source: str) -> bool:
    """Whether ``source`` (an address as the listener saw it) is inside ``networks``."""
    if networks is None:
        return True
    address = _address(source)
    return address is not None and any(address in network for network in networks)


def widens(old: tuple[Network, ...] | None, new: tuple[Network, ...] | None) -> bool:
    """Whether ``new`` allows any address ``old`` did not."""
    if old is None:
        return False
    if new is None:
        return True
    return not all(any(_within(network, held) for held in old) for network in new)


def _within(network: Network, other: Network) -> bool:
    if network.version != other.version:
        return False
    return network.subnet_of(other)  # type: ignore[arg-type]  # Same version, checked above.
