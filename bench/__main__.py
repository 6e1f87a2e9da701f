"""Run every benchmark and write bench/results.json and docs/benchmarks.md.

    python -m bench            # full run, about 10 minutes on 2 cores
    BENCH_QUICK=1 python -m bench   # smoke run: one round each, smaller shard counts

BENCH_LOG_DIR keeps the process logs in a folder of your choice (default: a new temp folder).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from . import report, startup
from .stack import REPO_ROOT, Stack
from .throughput import ThroughputBench

CHAT_TEXT_BYTES = 100
RECEIVERS = ["fleet", "bare", "tio_empty", "tio_redis"]
PACKAGES = ["aiohttp", "redis", "hiredis", "msgspec", "orjson", "twitchio", "psutil", "arq"]


def plan(quick: bool) -> dict:
    if quick:
        return {"quick": True, "rounds": 1, "trial_s": 1.5, "latency_rates": [1000, 10000], "latency_s": 2.0,
                "latency_rounds": 1, "scaling_workers": [1, 2], "memory_shards": [100, 500], "memory_rounds": 1,
                "bind_shards": 300, "bind_workers": 2, "bind_rounds": 1}
    return {"quick": False, "rounds": 5, "trial_s": 4.0, "latency_rates": [1000, 5000, 10000], "latency_s": 5.0,
            "latency_rounds": 3, "scaling_workers": [1, 2, 4], "memory_shards": [100, 1000, 2000], "memory_rounds": 3,
            "bind_shards": 1000, "bind_workers": 2, "bind_rounds": 3}


def machine() -> dict:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu_model": cpu_model, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "redis_server": redis_version, "packages": versions}


def summarize(trials: list[dict]) -> dict:
    keys = [k for k, v in trials[0].items() if isinstance(v, (int, float))]
    return {"runs": len(trials), **{k: statistics.median(t[k] for t in trials) for k in keys}}


async def throughput_section(log_dir: Path, settings: dict) -> dict:
    stack = Stack(log_dir, {"EMULATOR_RATE_LIMIT_PER_MIN": "1000000", "EMULATOR_MAX_CONDUITS": "10",
                            "EMULATOR_QUERY_FIELDS_AS_BODY": "true"})
    await stack.start()
    try:
        bench = ThroughputBench(stack, CHAT_TEXT_BYTES, settings["trial_s"])
        await bench.start_fleet()
        sizes = await bench.measure_sizes()
        await bench.start_bare(log_dir)
        await bench.start_twitchio("empty", log_dir)
        await bench.start_twitchio("redis", log_dir)
        print("throughput: receivers ready", flush=True)
        trials = await bench.run_rounds(RECEIVERS, settings["rounds"], with_ceiling=True)
        throughput = {name: {"summary": summarize(runs), "trials": runs} for name, runs in trials.items()}
        print("throughput:", {n: round(t["summary"]["events_per_s"]) for n, t in throughput.items()}, flush=True)

        latency = []
        for rate in settings["latency_rates"]:
            runs = [await bench.latency_trial(rate, settings["latency_s"]) for _ in range(settings["latency_rounds"])]
            latency.append({"rate": rate, "runs": runs, "summary": _latency_summary(runs)})
            print(f"latency at {rate}/s:", latency[-1]["summary"]["send_to_stream_ms"], flush=True)

        scaling = [{"workers": 1, "summary": throughput["fleet"]["summary"], "trials": throughput["fleet"]["trials"]}]
        fleet_count = throughput["fleet"]["trials"][0]["events"]
        for workers in settings["scaling_workers"][1:]:
            await bench.scale_fleet(workers)
            await bench.trial(bench.receivers["fleet"], 3000)
            runs = [await bench.trial(bench.receivers["fleet"], fleet_count) for _ in range(settings["rounds"])]
            scaling.append({"workers": workers, "summary": summarize(runs), "trials": runs})
            print(f"scaling: {workers} workers {scaling[-1]['summary']['events_per_s']:.0f}/s", flush=True)
        return {"sizes": sizes, "throughput": throughput, "latency": latency, "scaling": scaling}
    finally:
        await stack.close()


def _latency_summary(runs: list[dict]) -> dict:
    summary = {"achieved_per_s": statistics.median(r["achieved_per_s"] for r in runs)}
    for part in ("send_to_stream_ms", "send_to_receive_ms", "receive_to_stream_ms"):
        summary[part] = {q: statistics.median(r[part][q] for r in runs) for q in ("p50", "p99", "max")}
    return summary


async def memory_section(log_dir: Path, settings: dict) -> list[dict]:
    rows = []
    for shards in settings["memory_shards"]:
        runs = []
        for index in range(settings["memory_rounds"]):
            runs.append(await startup.memory_run(log_dir / f"memory-{shards}-{index}", shards))
        rows.append({"shards": shards, "runs": runs, "summary": summarize(runs)})
        print(f"memory at {shards} shards:", {k: v for k, v in rows[-1]["summary"].items()}, flush=True)
    return rows


async def bind_section(log_dir: Path, settings: dict) -> dict:
    shards, workers = settings["bind_shards"], settings["bind_workers"]
    fleet_runs, tio_runs = [], []
    for index in range(settings["bind_rounds"]):
        fleet_runs.append(await startup.bind_fleet_run(log_dir / f"bind-fleet-{index}", shards, workers))
        tio_runs.append(await startup.bind_twitchio_run(log_dir / f"bind-twitchio-{index}", shards))
    result = {"shards": shards, "workers": workers,
              "fleet": {"runs": fleet_runs, "summary": _bind_summary(fleet_runs)},
              "twitchio": {"runs": tio_runs, "summary": _bind_summary(tio_runs)}}
    print("bind:", result["fleet"]["summary"], result["twitchio"]["summary"], flush=True)
    return result


def _bind_summary(runs: list[dict]) -> dict:
    summary = {q: statistics.median(r["welcome_to_enabled_ms"][q] for r in runs) for q in ("p50", "p99", "max")}
    for key in ("start_to_all_enabled_s", "first_welcome_to_all_enabled_s", "update_shards_calls", "sessions_opened",
                "failed_binds_logged", "bind_enqueue_too_many_connections"):
        if key in runs[0]:
            summary[key] = statistics.median(r[key] for r in runs)
    return summary


async def run(settings: dict, log_dir: Path) -> dict:
    results: dict = {"settings": settings, "machine": machine(), "chat_text_bytes": CHAT_TEXT_BYTES,
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "load_average_start": os.getloadavg()}
    began = time.monotonic()
    results.update(await throughput_section(log_dir / "throughput", settings))
    results["memory"] = await memory_section(log_dir, settings)
    results["bind"] = await bind_section(log_dir, settings)
    results["load_average_end"] = os.getloadavg()
    results["duration_s"] = time.monotonic() - began
    results["command"] = "BENCH_QUICK=1 make bench" if settings["quick"] else "make bench"
    return results


def main() -> int:
    settings = plan(os.environ.get("BENCH_QUICK", "") not in ("", "0"))
    log_dir = Path(os.environ.get("BENCH_LOG_DIR") or tempfile.mkdtemp(prefix="conduit-fleet-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"benchmark logs in {log_dir}", flush=True)
    results = asyncio.run(run(settings, log_dir))
    (REPO_ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    report.write(results, REPO_ROOT / "docs" / "benchmarks.md")
    print(f"wrote bench/results.json and docs/benchmarks.md in {results['duration_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
