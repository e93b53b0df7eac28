"""Node CPU per MB produced against the SDK's batch size (a diagnostic).

    python -m bench.batch_sizes [--sizes 65536,262144,1048576] [--seconds 10] [--dir DIR] [--out FILE]

Beside ``python -m bench``, run by hand: one 3-node cluster, one
16-partition topic per size, each filled flat out with 1 KiB records by a
producer whose ``max_batch_bytes`` is that size (everything else the SDK's
defaults). Prints and writes, per size, the acknowledged MB/s, batches/s,
the three nodes' CPU per MB and the Raft transport batches the nodes sent;
the file also holds the commit and the machine (load average at the start
included), as ``python -m bench``'s report does.
It is how the split of the nodes' produce cost into a per-batch and a
per-byte part was measured (bench/README.md, "What bounds the targets").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from bench import report
from bench.cluster_access import NodeAdmin, running_cluster
from bench.cluster_figures import produce_flat_out
from harness.local_cluster import TopicSpec

PARTITIONS = 16
RECORD_BYTES = 1024
WARMUP_S = 2.0


async def measure(
    root: Path, sizes: list[int], seconds: float, warmup_s: float = WARMUP_S
) -> list[dict[str, Any]]:
    topics = [TopicSpec(f"batch-{size}", PARTITIONS) for size in sizes]
    async with running_cluster(root, topics) as cluster:
        admin = NodeAdmin(cluster)
        try:
            await admin.wait_for_leaders(PARTITIONS * len(sizes) + 1)
            rows = []
            for size, topic in zip(sizes, topics, strict=True):
                before = await admin.stats()
                run = await produce_flat_out(
                    cluster, admin, topic.name, RECORD_BYTES, warmup_s, seconds, max_batch_bytes=size
                )
                after = await admin.stats()
                sent = sum(after[n].transport_batches_sent - before[n].transport_batches_sent for n in after)
                rows.append(
                    {
                        "max_batch_bytes": size,
                        "mb_s": run["mb_s"],
                        "batches_s": run["batches_s"],
                        "records_per_batch": run["records_per_batch"],
                        "nodes_cpu_ms_per_mb": run["nodes_cpu_ms_per_mb"],
                        "client_cpu_pct": run["client_cpu_pct"],
                        # Over the warm-up and the measured seconds both.
                        "transport_batches_sent": sent,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
            return rows
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_sizes", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="65536,262144,1048576", help="max_batch_bytes values, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per size")
    parser.add_argument("--dir", type=Path, default=Path("bench/out"), help="where the cluster's files go")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    # Read before the run, like python -m bench: the load average shows other work.
    meta = {**report.commit(), "machine": report.machine()}
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        rows = asyncio.run(measure(Path(root), sizes, args.seconds))
    if args.out is not None:
        document = {"rows": rows, "record_bytes": RECORD_BYTES, **meta}
        args.out.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
