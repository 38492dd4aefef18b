"""The Ray room: synthgen on a cluster, and the only code that imports `ray`.

    connect   reach a cluster (or start a local one) from this process
    replica   the actor that runs one `vllm serve` (the launcher's own command line and
              health check) on whatever node Ray places it, and dies with it
    fleet     N replicas as detached actors: start, look up, stop
    shards    N client actors, each calling generate() on its own shard store

Ray is the `synthgen[ray]` extra: the rest of synthgen never imports it, and the CLI
imports this room only when a command asks for Ray.
"""
