"""Who leads each partition group, known on every node (issue 13: a node
with no replica of a partition must still route its requests).

- ``leader_map``: the pure merge rules of leader claims and why they hold;
- ``leader_routing``: ``LeaderRouting``, the node's glue: announces the
  groups this node leads over the Raft transport, merges its peers'
  announcements, drops deleted groups, answers ``leader_of(group)``.
"""
