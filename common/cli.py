"""The `conduit-fleet` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from .errors import FleetError, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except (SettingsError, FleetError, ValueError) as exc:
        print(f"conduit-fleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`conduit-fleet channels list | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conduit-fleet", description="Run Twitch EventSub conduits as a worker fleet.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    emulator = commands.add_parser("emulator", help="run the local Twitch emulator (EMULATOR_* settings)")
    emulator.add_argument("--port", type=int, help="port to listen on (default EMULATOR_PORT or 8090)")
    emulator.add_argument("--time-scale", type=float, help="multiplies every Twitch timer (default 1.0)")
    emulator.set_defaults(handler=_run_emulator)

    coordinator = commands.add_parser("coordinator", help="run a coordinator replica (CF_* settings)")
    coordinator.set_defaults(handler=_run_coordinator)

    worker = commands.add_parser("worker", help="run a shard worker (CF_* settings)")
    worker.set_defaults(handler=_run_worker)

    channels = commands.add_parser("channels", help="edit the desired channels")
    channel_commands = channels.add_subparsers(title="channel commands", metavar="ACTION")
    add = channel_commands.add_parser("add", help="add or update channels")
    add.add_argument("broadcaster_ids", nargs="+", help="numeric Twitch user ids")
    add.add_argument("--types", default="", help="event types as type:version,... (default CF_DEFAULT_EVENT_TYPES)")
    add.add_argument("--login", default="", help="login name (only with one id)")
    add.add_argument("--mode", default="conduit", choices=("websocket", "both", "conduit"), help="transport mode")
    add.set_defaults(handler=_channels_add)
    remove = channel_commands.add_parser("remove", help="remove channels")
    remove.add_argument("broadcaster_ids", nargs="+")
    remove.set_defaults(handler=_channels_remove)
    listing = channel_commands.add_parser("list", help="list channels")
    listing.set_defaults(handler=_channels_list)
    load = channel_commands.add_parser("import", help="import channels from CSV or JSON lines")
    load.add_argument("file", type=Path)
    load.set_defaults(handler=_channels_import)
    progress = channel_commands.add_parser(
        "progress", help="show the reconciler's progress (a live bar on a terminal)")
    progress.add_argument("--once", action="store_true", help="print one line and exit, even on a terminal")
    progress.add_argument("--interval", type=float, default=1.0, help="seconds between updates of the live bar")
    progress.set_defaults(handler=_channels_progress)
    problems = channel_commands.add_parser(
        "problems", help="list subscriptions that failed, need re-consent or are blocked by cost, with the reason")
    problems.set_defaults(handler=_channels_problems)
    clear = channel_commands.add_parser(
        "clear", help="clear the failed or needs-re-consent state of channels so the reconciler tries again")
    clear.add_argument("broadcaster_ids", nargs="+", help="numeric Twitch user ids")
    clear.set_defaults(handler=_channels_clear)
    mode = channel_commands.add_parser(
        "mode", help="set the transport mode of stored channels (websocket and both use the legacy connections)")
    mode.add_argument("mode", choices=("websocket", "both", "conduit"), help="new transport mode")
    mode.add_argument("broadcaster_ids", nargs="+", help="numeric Twitch user ids of stored channels")
    mode.set_defaults(handler=_channels_mode)

    conduit = commands.add_parser("conduit", help="show or resize the fleet's conduit")
    conduit_commands = conduit.add_subparsers(title="conduit commands", metavar="ACTION")
    show = conduit_commands.add_parser("show", help="print the conduit id and shard counts")
    show.set_defaults(handler=_conduit_show)
    resize = conduit_commands.add_parser("resize", help="ask the leader to change the shard count")
    resize.add_argument("shard_count", type=int, help="new shard count, 1 to 20000")
    resize.set_defaults(handler=_conduit_resize)

    _add_migrate_parser(commands)

    status = commands.add_parser("status", help="show conduit stats, workers and shards")
    status.set_defaults(handler=_status)

    tail = commands.add_parser("tail", help="print the newest stream entries")
    tail.add_argument("--count", type=int, default=10, help="entries to print (default 10)")
    tail.set_defaults(handler=_tail)

    settings = commands.add_parser("settings", help="print the settings in effect (secrets hidden)")
    settings.add_argument("--markdown", action="store_true", help="print the settings table for the README")
    settings.set_defaults(handler=_settings)

    from .dev import add_dev_parser
    add_dev_parser(commands)
    return parser


def _add_migrate_parser(commands) -> None:
    migrate = commands.add_parser(
        "migrate", help="run and inspect the migration from the legacy WebSocket mode to the conduit")
    migrate_commands = migrate.add_subparsers(title="migration commands", metavar="ACTION")
    status = migrate_commands.add_parser(
        "status", help="show the phase, batch, channels per mode, legacy capacity and the transport comparison")
    status.add_argument("--json", action="store_true", help="print the full status report as JSON")
    status.set_defaults(handler=_migrate_status)
    start = migrate_commands.add_parser("start", help="start the migration, or run it again after a pause")
    start.add_argument("--phase", type=_phase_number, default=0,
                       help="pause after this phase, 1 to the number of CF_MIGRATION_PHASES (default: run through the last)")
    pause = migrate_commands.add_parser("pause", help="pause the migration; the current batch stays where it is")
    resume = migrate_commands.add_parser("resume", help="resume a paused migration")
    rollback = migrate_commands.add_parser(
        "rollback", help="move the channels of the parallel run (both) back to websocket and pause the migration")
    rollback.add_argument("--all", action="store_true",
                          help="also move the channels already on the conduit back to websocket")
    for name, parser in (("start", start), ("pause", pause), ("resume", resume), ("rollback", rollback)):
        parser.add_argument("--timeout", type=float, default=30.0,
                            help="seconds to wait for the leader's response (default 30)")
        parser.set_defaults(handler=_migrate_command, command=name)


def run_until_signal(runner) -> int:
    """Run `runner(settings, stop)` until SIGTERM or SIGINT sets `stop`."""
    from .log import setup_logging
    from .settings import Settings

    settings = Settings.from_env()
    setup_logging(settings.log_level, settings.log_format)

    async def body() -> None:
        stop = asyncio.Event()
        stop.signal_name = ""  # which signal set it: a worker drains on SIGTERM only

        def on_signal(name: str) -> None:
            stop.signal_name = stop.signal_name or name
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        await runner(settings, stop)

    asyncio.run(body())
    return 0


def _run_emulator(args) -> int:
    import dataclasses
    import logging

    from emulator import EmulatorSettings, serve

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    settings = EmulatorSettings.from_env()
    if args.port is not None:
        settings = dataclasses.replace(settings, port=args.port)
    if args.time_scale is not None:
        settings = dataclasses.replace(settings, time_scale=args.time_scale)

    async def body() -> None:
        task = asyncio.create_task(serve(settings))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(body())
    return 0


def _run_coordinator(args) -> int:
    from coordinator import run_coordinator
    return run_until_signal(run_coordinator)


def _run_worker(args) -> int:
    from shard_worker import run_worker
    return run_until_signal(run_worker)


def _with_redis(body):
    from .keys import Keys
    from .redisconn import control_redis
    from .settings import Settings

    settings = Settings.from_env()

    async def run():
        client = control_redis(settings)
        try:
            return await body(settings, client, Keys(settings.key_prefix))
        finally:
            await client.aclose()

    return asyncio.run(run())


def _channels_add(args) -> int:
    from .channels import ChannelStore, make_channel
    types = [t for t in args.types.split(",") if t.strip()]
    if args.login and len(args.broadcaster_ids) > 1:
        raise ValueError("--login names one channel: pass a single broadcaster id with it")
    channels = [make_channel(b, login=args.login, types=types, transport_mode=args.mode) for b in args.broadcaster_ids]

    async def body(settings, client, keys):
        count = await ChannelStore(client, keys, settings).add(channels)
        print(f"stored {count} channels")
    _with_redis(body)
    return 0


def _channels_remove(args) -> int:
    from .channels import ChannelStore

    async def body(settings, client, keys):
        count = await ChannelStore(client, keys, settings).remove(args.broadcaster_ids)
        print(f"removed {count} channels")
    _with_redis(body)
    return 0


def _channels_list(args) -> int:
    from .channels import ChannelStore

    async def body(settings, client, keys):
        for channel in await ChannelStore(client, keys, settings).list():
            types = ",".join(channel.types) or "(defaults)"
            # A fallen-back channel is on the legacy connections only until the Conduits API works again.
            mode = f"{channel.transport_mode} (fallback)" if channel.fallback else channel.transport_mode
            print(f"{channel.broadcaster_user_id}\t{channel.login or '-'}\t{mode}\t{types}")
    _with_redis(body)
    return 0


def _channels_import(args) -> int:
    from .channels import ChannelStore, parse_file
    if not args.file.is_file():
        raise ValueError(f"file not found: {args.file}")
    channels = parse_file(args.file)

    async def body(settings, client, keys):
        count = await ChannelStore(client, keys, settings).add(channels)
        print(f"imported {count} channels from {args.file}")
    _with_redis(body)
    return 0


def _channels_progress(args) -> int:
    from .progressbar import format_progress, watch_progress

    async def body(settings, client, keys):
        if args.once or not sys.stdout.isatty():
            raw = await client.hgetall(keys.reconcile)
            print(format_progress({k.decode(): v.decode() for k, v in raw.items()}))
            return
        await watch_progress(client, keys, args.interval)
    _with_redis(body)
    return 0


def _channels_problems(args) -> int:
    import orjson

    from .channels import EntryStateStore

    async def body(settings, client, keys):
        states = await EntryStateStore(client, keys).load()
        for state in sorted(states.values(), key=lambda s: (s.state, s.broadcaster_user_id, s.type)):
            who = state.broadcaster_user_id or orjson.dumps(state.condition).decode()
            print(f"{state.state}\t{who}\t{state.type}:{state.version}\t{state.reason}")
        if not states:
            print("no failed, revoked or cost-blocked subscriptions")
    _with_redis(body)
    return 0


def _channels_clear(args) -> int:
    from .channels import EntryStateStore, make_channel
    ids = [make_channel(b).broadcaster_user_id for b in args.broadcaster_ids]

    async def body(settings, client, keys):
        count = await EntryStateStore(client, keys).clear(ids)
        print(f"cleared {count} subscription states; the reconciler tries them again")
    _with_redis(body)
    return 0


def _channels_mode(args) -> int:
    from .channels import ChannelStore, make_channel
    ids = list(dict.fromkeys(make_channel(b).broadcaster_user_id for b in args.broadcaster_ids))

    async def body(settings, client, keys):
        # A manual change clears the fallback mark, so the controller leaves the channel where it is put.
        changed = await ChannelStore(client, keys, settings).set_mode(ids, args.mode, fallback=False)
        print(f"set {len(changed)} channels to {args.mode} ({len(ids) - len(changed)} already were)")
    _with_redis(body)
    return 0


def _phase_number(text: str) -> int:
    """Parse `--phase`: a phase number from 1 (the range check against CF_MIGRATION_PHASES comes later)."""
    try:
        phase = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid phase {text!r}: expected a whole number from 1") from None
    if phase < 1:
        raise argparse.ArgumentTypeError(f"invalid phase {phase}: expected a whole number from 1")
    return phase


def _migrate_status(args) -> int:
    import orjson

    from .migration import status_report

    async def body(settings, client, keys):
        report = await status_report(client, settings)
        if args.json:
            print(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
        else:
            print(format_migration_status(report))
    _with_redis(body)
    return 0


def _migrate_command(args) -> int:
    from .migration import send_command
    if args.timeout <= 0:
        raise ValueError(f"invalid --timeout {args.timeout:g}: expected a number of seconds above 0")

    async def body(settings, client, keys):
        return await send_command(client, settings, args.command, phase=getattr(args, "phase", 0),
                                  all_channels=getattr(args, "all", False), timeout_s=args.timeout)
    try:
        answer = _with_redis(body)
    except TimeoutError as exc:
        print(f"conduit-fleet: error: {exc}", file=sys.stderr)
        return 1
    print(answer.get("message", "done"))
    return 0


def _format_time(ms: int) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms else "-"


def format_migration_status(report: dict) -> str:
    """Render `common.migration.status_report` as the text of `conduit-fleet migrate status`."""
    lines = [_format_progress(report)]
    counts = report["channels"]
    lines.append(f"channels: {counts['total']} in all; websocket {counts['websocket']}, both {counts['both']}, "
                 f"conduit {counts['conduit']} ({report['conduit_percent']:g} % on the conduit), "
                 f"fell back {counts['fallback']}")
    lines.extend(_format_legacy(report["legacy"]))
    comparison = report["comparison"]
    if comparison["current_batch"] is None:
        lines.append("comparison, current batch: none (no batch is soaking)")
    else:
        lines.extend(_format_comparison("comparison, current batch", comparison["current_batch"]))
    lines.extend(_format_comparison("comparison, all time", comparison["all_time"]))
    copies = comparison.get("copies_dropped") or {}
    lines.append("second copies dropped by the dedup: "
                 + ", ".join(f"{transport} {count}" for transport, count in copies.items()))
    lines.append(_format_rollback(report["rollback"]))
    lines.append(_format_fallback(report["fallback"]))
    return "\n".join(lines)


def _format_progress(report: dict) -> str:
    phases = report["phases"]
    text = f"migration: {report['status']}"
    if report["phase"]:
        text += (f", phase {report['phase']} of {len(phases)} (target {report['phase_target_percent']} % "
                 f"on the conduit), step {report['step']}")
    if report["stop_after_phase"]:
        text += f", pauses after phase {report['stop_after_phase']}"
    if report["paused_reason"]:
        text += f"\n  {report['paused_reason']}"
    batch = report["batch"]
    if batch["number"]:
        text += f"\nbatch {batch['number']}: {batch['channels']} channels, started {_format_time(batch['started_at_ms'])}"
        if batch["soak_started_at_ms"]:
            text += (f", soaking since {_format_time(batch['soak_started_at_ms'])} (soak {batch['soak_seconds']:g} s, "
                     f"{batch.get('soak_remaining_s', 0):.0f} s left)")
    return text


def _format_legacy(legacy: dict) -> list[str]:
    lines = [f"legacy capacity: {legacy['used']} / {legacy['capacity']} subscriptions placed "
             f"({legacy['per_connection']} per connection)"]
    connections = {int(c.get("slot", -1)): c for c in legacy["connections"]}
    for slot, placed in sorted((int(slot), count) for slot, count in legacy["load"].items()):
        connection = connections.get(slot)
        text = f"  legacy-{slot}: {placed} / {legacy['per_connection']} placed"
        if connection is None:
            text += ", no worker has reported this connection"
        else:
            text += (f", {connection.get('subscriptions', 0)} subscribed, {connection.get('state', '?')} on "
                     f"{connection.get('worker_id') or '-'}, {connection.get('disconnects', 0)} disconnects")
            if connection.get("last_error"):
                text += f", last error: {connection['last_error']}"
        lines.append(text)
    return lines


def _format_comparison(title: str, section: dict) -> list[str]:
    lines = [f"{title} ({section['compared']} events compared):",
             f"  {'transport':<10} {'seen':>8} {'missed':>8} {'loss %':>7} {'mean ms':>8} {'p95 ms':>8} "
             f"{'disconnects/h':>13} {'Helix failure streak':>20}"]
    for transport, figures in section["transports"].items():
        mean = figures["mean_latency_ms"]
        lines.append(
            f"  {transport:<10} {figures['seen']:>8} {figures['missed']:>8} {100 * figures['loss_ratio']:>7.1f} "
            f"{'-' if mean is None else f'{mean:.0f}':>8} {figures.get('p95_latency_ms', 0):>8.0f} "
            f"{figures.get('disconnects_last_hour', 0):>13} {figures.get('helix_failure_streak', 0):>20}")
    return lines


def _format_rollback(rollback: dict) -> str:
    if not rollback:
        return "last rollback: none"
    kind = "automatic" if rollback.get("automatic") else "manual"
    # A manual rollback before the first batch has no phase or batch to name.
    where = f"phase {rollback.get('phase', 0)} batch {rollback['batch']}, " if rollback.get("batch") else ""
    return (f"last rollback: {_format_time(rollback.get('at_ms', 0))}, {kind}, {where}"
            f"{rollback.get('channels', 0)} channels: {rollback.get('reason', '')}")


def _format_fallback(fallback: dict) -> str:
    state = fallback.get("state", "idle")
    if state == "active":
        return (f"fallback: active since {_format_time(fallback.get('since_ms', 0))}: {fallback.get('channels', 0)} "
                f"channels on the legacy connections, {fallback.get('left_on_conduit', 0)} did not fit and stay on "
                "the conduit")
    if state == "returning":
        return (f"fallback: returning: {len(fallback.get('returning', []))} channels run on both transports until "
                "their conduit subscriptions exist")
    text = "fallback: not active"
    if fallback.get("down_since_ms"):
        text += f"; the Conduits API has failed since {_format_time(fallback['down_since_ms'])}"
    if fallback.get("returned_at_ms"):
        text += f"; the last fallback ended {_format_time(fallback['returned_at_ms'])}"
    return text


def _conduit_show(args) -> int:
    async def body(settings, client, keys):
        stored = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.conduit)).items()}
        if not stored:
            print("no conduit yet: start a coordinator")
            return
        desired = stored.get("desired_shard_count") or f"{settings.shard_count} (CF_SHARD_COUNT)"
        print(f"conduit {stored.get('id')}: {stored.get('shard_count')} shards, desired {desired}")
    _with_redis(body)
    return 0


def _conduit_resize(args) -> int:
    if not 1 <= args.shard_count <= 20_000:
        raise ValueError(f"invalid shard count {args.shard_count}: Twitch allows 1 to 20000 shards per conduit")

    async def body(settings, client, keys):
        await client.hset(keys.conduit, "desired_shard_count", args.shard_count)
        listeners = await client.publish(keys.resize_channel, str(args.shard_count))
        note = "" if listeners else " (no leader is listening now; it applies the count when it starts)"
        print(f"requested {args.shard_count} shards{note}")
    _with_redis(body)
    return 0


def _status(args) -> int:
    import orjson

    async def body(settings, client, keys):
        stats = await client.get(keys.stats)
        print("stats:", orjson.loads(stats) if stats else "none yet (is a coordinator running?)")
        workers = await client.zrange(keys.workers, 0, -1)
        assignment = await client.hgetall(keys.assignment)
        print(f"workers: {len(workers)}")
        for worker in workers:
            count = sum(1 for owner in assignment.values() if owner == worker)
            print(f"  {worker.decode()}: {count} shards")
        leader = await client.get(keys.leader)
        epoch = await client.get(keys.leader_epoch)
        print(f"leader: {leader.decode() if leader else 'none'} (epoch {int(epoch or 0)})")
    _with_redis(body)
    return 0


def _tail(args) -> int:
    from .redisconn import events_redis
    from .keys import Keys
    from .settings import Settings

    settings = Settings.from_env()

    async def run():
        client = events_redis(settings)
        keys = Keys(settings.key_prefix)
        entries = []
        try:
            for partition in range(settings.stream_partitions):
                for entry_id, fields in await client.xrevrange(keys.events(partition), count=args.count):
                    entries.append((entry_id, fields))
        finally:
            await client.aclose()
        entries.sort(key=lambda item: tuple(int(part) for part in item[0].split(b"-")), reverse=True)
        for entry_id, fields in reversed(entries[: args.count]):
            shown = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
            print(entry_id.decode(), shown.get("type"), shown.get("broadcaster_user_id"), shown.get("event", "")[:160])

    asyncio.run(run())
    return 0


def _settings(args) -> int:
    from .settings import Settings, settings_table
    if args.markdown:
        print(settings_table())
        return 0
    for name, value in Settings.from_env().redacted().items():
        print(f"{name} = {value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
