"""The peer-to-peer runtime on Ray: agent actors, routing, admission, offload, progress."""
