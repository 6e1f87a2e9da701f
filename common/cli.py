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

    conduit = commands.add_parser("conduit", help="show or resize the fleet's conduit")
    conduit_commands = conduit.add_subparsers(title="conduit commands", metavar="ACTION")
    show = conduit_commands.add_parser("show", help="print the conduit id and shard counts")
    show.set_defaults(handler=_conduit_show)
    resize = conduit_commands.add_parser("resize", help="ask the leader to change the shard count")
    resize.add_argument("shard_count", type=int, help="new shard count, 1 to 20000")
    resize.set_defaults(handler=_conduit_resize)

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
        count = await ChannelStore(client, keys).add(channels)
        print(f"stored {count} channels")
    _with_redis(body)
    return 0


def _channels_remove(args) -> int:
    from .channels import ChannelStore

    async def body(settings, client, keys):
        count = await ChannelStore(client, keys).remove(args.broadcaster_ids)
        print(f"removed {count} channels")
    _with_redis(body)
    return 0


def _channels_list(args) -> int:
    from .channels import ChannelStore

    async def body(settings, client, keys):
        for channel in await ChannelStore(client, keys).list():
            types = ",".join(channel.types) or "(defaults)"
            print(f"{channel.broadcaster_user_id}\t{channel.login or '-'}\t{channel.transport_mode}\t{types}")
    _with_redis(body)
    return 0


def _channels_import(args) -> int:
    from .channels import ChannelStore, parse_file
    if not args.file.is_file():
        raise ValueError(f"file not found: {args.file}")
    channels = parse_file(args.file)

    async def body(settings, client, keys):
        count = await ChannelStore(client, keys).add(channels)
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
