"""Routing: the YAML routing table compiled into user and mailbox referrals.

Pure code: no file, socket or YAML access; these modules import the
standard library, each other and `refd.config.tree` only (a test checks). `url`
also holds the one ``host[:port]`` reader (`split_host_port`). The daemon
reads the files, parses them with `refd.config.yamltree`, and hands the tree
to `load_table`; the session asks the resulting `RoutingTable` for
`Referral` values. See `refd.routing.load` for the two-phase load and
``config/routing.yaml`` for the file format.
"""

from refd.routing.load import RoutingError, load_table, parse_user_map, read_user_map_name
from refd.routing.match import RoutingTable
from refd.routing.model import (
    LoginMode,
    Namespaces,
    Referral,
    RemoteMailbox,
    RenameReferral,
    Server,
    UserRoute,
    is_inbox,
    normalise_user,
)
from refd.routing.url import ImapUrl, door_url, imap_url, parse_imap_url, url_can_name

__all__ = [
    "ImapUrl",
    "LoginMode",
    "Namespaces",
    "Referral",
    "RemoteMailbox",
    "RenameReferral",
    "RoutingError",
    "RoutingTable",
    "Server",
    "UserRoute",
    "door_url",
    "imap_url",
    "is_inbox",
    "load_table",
    "normalise_user",
    "parse_imap_url",
    "parse_user_map",
    "read_user_map_name",
    "url_can_name",
]
