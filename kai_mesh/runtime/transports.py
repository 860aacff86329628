"""The node's transports, built by name from its config.

`BUILDERS` maps a transport's name to what builds it; `enabled_transports(config)` says which names
a config turns on, in the order they must start (LXMF rides on Reticulum's instance, so it comes
after it); `open_transports` builds them and takes them down again. It runs on the main thread
before `trio.run`: RNS and LXMF install signal handlers and start threads, which they may only do
there (LAB.md), and their teardown must follow trio's. Imports of RNS and LXMF stay inside the
builders, so a node with Reticulum off never loads them. Nostr (`[nostr] relays`) needs no
main-thread start: it is one more builder, independent of Reticulum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from kai_mesh.config.nodefiles import NodeFiles
from kai_mesh.config.settings import Config, NodePaths
from transports.base import Transport

RNS_LOG_LEVELS = {"debug": 5, "info": 3, "warning": 2, "error": 1}


@dataclass(frozen=True, slots=True)
class Built:
    """A started transport and what takes it down after trio has finished."""

    transport: Transport
    stop: Callable[[], None]


Builder = Callable[[NodePaths, Config, NodeFiles], Built]


def _reticulum(paths: NodePaths, config: Config, files: NodeFiles) -> Built:
    from kai_mesh.config.interfaces import check_rnode_ports, render_rns_config
    from transports.reticulum.transport import ReticulumTransport

    check_rnode_ports(config.interfaces)
    transport = ReticulumTransport(
        configdir=paths.data_dir / "reticulum",
        config_text=render_rns_config(
            config.reticulum, config.interfaces, loglevel=RNS_LOG_LEVELS[config.log_level]
        ),
        rns_private=files.secrets.rns_private,
        mesh_id=files.genesis.mesh_id,
        node_id=files.secrets.node_id,
        member=files.member,
        trusted_keys=files.members,
        announce_interval=config.reticulum.announce_interval,
    )
    transport.start_rns()
    return Built(transport, transport.shutdown_rns)


def _lxmf(paths: NodePaths, config: Config, files: NodeFiles) -> Built:
    """LXMF on the Reticulum instance `_reticulum` started."""
    from transports.lxmf import LxmfTransport

    transport = LxmfTransport(
        storagedir=paths.data_dir,  # LXMF adds "lxmf/": its files go to DATA/lxmf
        rns_private=files.secrets.rns_private,
        mesh_id=files.genesis.mesh_id,
        node_id=files.secrets.node_id,
        member=files.member,
        trusted_keys=files.members,
        propagation_node=config.lxmf.propagation_node,
        stamp_cost=config.lxmf.stamp_cost,
        node_announce_delay=config.lxmf.node_announce_delay,
        guest_intents=config.lxmf.guest_intents,
        announce_interval=config.reticulum.announce_interval,
    )
    transport.start_lxmf()
    return Built(transport, transport.shutdown_lxmf)


def _nostr(paths: NodePaths, config: Config, files: NodeFiles) -> Built:
    """Relays over trio-websocket: nothing to start before trio, nothing to stop after it."""
    from transports.nostr import NostrTransport

    transport = NostrTransport(
        relays=config.nostr.relays,
        markers=config.nostr.markers,
        nostr_secret=files.secrets.nostr_secret,
        mesh_id=files.genesis.mesh_id,
        node_id=files.secrets.node_id,
        member=files.member,
        trusted_keys=files.members,
        hello_interval=config.nostr.hello_interval,
        gift_wrap=config.nostr.gift_wrap,
    )
    return Built(transport, lambda: None)


BUILDERS: dict[str, Builder] = {"reticulum": _reticulum, "lxmf": _lxmf, "nostr": _nostr}


def enabled_transports(config: Config) -> list[str]:
    """The names of the transports `config` turns on, in the order they start."""
    names = []
    if config.reticulum.enabled:
        names.append("reticulum")
        if config.lxmf.enabled:
            names.append("lxmf")
    if config.nostr.enabled:
        names.append("nostr")
    return names


@contextmanager
def open_transports(
    paths: NodePaths, config: Config, files: NodeFiles
) -> Iterator[list[Transport]]:
    """Build the enabled transports (main thread, before trio); on exit, take them down in the
    reverse order, whatever happened. A builder that fails takes down those built before it."""
    with ExitStack() as stack:
        built: list[Transport] = []
        for name in enabled_transports(config):
            one = BUILDERS[name](paths, config, files)
            stack.callback(one.stop)
            built.append(one.transport)
        yield built
