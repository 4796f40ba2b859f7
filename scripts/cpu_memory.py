"""A real-AASIST CPU server's memory under a load that keeps changing (docs/benchmarks.md).

    python scripts/cpu_memory.py CHECKPOINT_DIR [--engine fast] [--seconds 8]

Starts ``voxguard serve`` on the CPU, drives it with wrk at 16, 5, 11, 3, 13, 7 and 16 connections in
turn, so the batcher forms batches of many sizes, and prints the server's resident memory (VmRSS and
its peak, VmHWM) after each stage, with the requests per second.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from voxguard.benchmarks.loadgen import run_wrk
from voxguard.benchmarks.serve_bench import _process, free_port, upload_body, voxguard_command

STAGES = (16, 5, 11, 3, 13, 7, 16)


def resident_mb(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of ``pid``, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return tuple(int(fields[key].split()[0]) // 1024 for key in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("--engine", default="fast")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each stage")
    args = parser.parse_args()
    body, content_type = upload_body("wav")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    options = ["--device", "cpu", "--checkpoint-dir", str(args.checkpoint_dir), "--engine", args.engine]
    with _process(voxguard_command(port, options), {}, f"{url}/ready") as server:
        rss, peak = resident_mb(server.pid)
        print(f"ready: RSS {rss} MiB, peak {peak} MiB")
        served = 0.0
        for connections in STAGES:
            run = run_wrk(
                f"{url}/v1/predict", body, content_type, connections=connections, duration_s=args.seconds
            )
            served += run.throughput_rps * args.seconds
            rss, peak = resident_mb(server.pid)
            rate = f"{run.throughput_rps:.2f} req/s"
            print(f"{connections:>2} connections: {rate}, RSS {rss} MiB, peak {peak} MiB")
        print(f"overall: {served / (len(STAGES) * args.seconds):.2f} req/s")


if __name__ == "__main__":
    main()
