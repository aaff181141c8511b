"""Peer libraries as rows: the established libraries researchers use, measured by the same harness
on the same instances as the suite's own strategies. One module per library; each row is a
:class:`backends.peers.base.PeerStrategy` naming the strategy of ours it corresponds to."""
