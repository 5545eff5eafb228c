"""The `minicloud` command line.

Exit status: 0 success, 1 the function raised or returned an error, 2 a
platform error (not found, throttled, timed out, broker unreachable,
invalid input), 64 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from minicloud import __version__, protocol
from minicloud.acl import CLOUD_USER, grants_anyone, load_acl, render_acl
from minicloud.bus import CA_FILE_VARIABLE, connect, default_broker_url, parse_broker_url
from minicloud.client import AsyncClient, InvocationError
from minicloud.energy import load_energy_model
from minicloud.errors import BusError
from minicloud.passwords import load_password_file, set_password

EXIT_OK = 0
EXIT_FUNCTION_ERROR = 1
EXIT_PLATFORM_ERROR = 2
EXIT_USAGE = 64

# (option, EnergyModel field, help) for `minicloud up`
ENERGY_OPTIONS = (
    ("--idle-watts-per-vcpu", "idle_watts_per_vcpu", "watts of one idle vCPU (default: 0.74)"),
    ("--max-watts-per-vcpu", "max_watts_per_vcpu", "watts of one vCPU at full load (default: 3.5)"),
    ("--watts-per-gb", "watts_per_gb", "watts of one GB of memory (default: 0.392)"),
    ("--pue", "pue", "power usage effectiveness (default: 1.0; 1.135 for an AWS-like figure)"),
    ("--baseline-vcpus", "baseline_vcpus", "vCPUs of the always-on server compared with (default: 2)"),
    ("--baseline-memory-gb", "baseline_memory_gb", "GB of memory of the always-on server (default: 4)"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minicloud", description="A single-host serverless cloud over MQTT.")
    parser.add_argument("--version", action="version", version=f"minicloud {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        return command

    def broker_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--broker", metavar="URL", default=None,
            help="broker URL, mqtt://[user:password@]host:port (default: $MINICLOUD_BROKER or mqtt://127.0.0.1:1883)",
        )
        command.add_argument("--namespace", metavar="NS", default=protocol.DEFAULT_NAMESPACE, help="topic namespace (default: minicloud)")
        ca_file_option(command)

    def ca_file_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--ca-file", metavar="FILE", default=None,
            help=f"for mqtts:// URLs, trust only the CA certificates in FILE (default: ${CA_FILE_VARIABLE}, else the system's)",
        )

    tui = add("tui", "open the terminal UI; start an embedded cloud when none answers at the broker")
    broker_option(tui)

    up = add("up", "run the cloud in the foreground until SIGINT or SIGTERM")
    up.add_argument("--host", default="127.0.0.1", help="address of the embedded broker (default: 127.0.0.1)")
    up.add_argument("--port", type=int, default=1883, help="port of the embedded broker (default: 1883)")
    up.add_argument("--broker", metavar="URL", default=None, help="use this broker and start none")
    ca_file_option(up)
    up.add_argument("--auth", metavar="FILE", type=Path, default=None,
                    help="embedded broker: accept only the users in this password file (made with 'minicloud passwd' or mosquitto_passwd)")
    up.add_argument("--acl", metavar="FILE", type=Path, default=None,
                    help="embedded broker: check every topic against this ACL file, in Mosquitto's format (see 'minicloud acl'); needs --auth")
    up.add_argument("--functions", metavar="DIR", action="append", type=Path, default=[],
                    help="a folder of function folders; repeatable (default: ./functions, else the bundled samples)")
    up.add_argument("--namespace", metavar="NS", default=protocol.DEFAULT_NAMESPACE, help="topic namespace (default: minicloud)")
    up.add_argument("--deploy-root", metavar="DIR", action="append", type=Path, default=[],
                    help="deploy over the bus only from folders under DIR; repeatable (default: any folder this user can read)")
    up.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default: INFO)")
    up.add_argument("--exit-on-stdin-eof", action="store_true",
                    help="stop, as on SIGTERM, when standard input closes (the TUI starts its embedded cloud so)")
    up.add_argument("--config", metavar="FILE", type=Path, help="cloud config file (TOML) with an [energy] table")
    energy_options = up.add_argument_group("energy model (each overrides the config file)")
    for option, key, help_text in ENERGY_OPTIONS:
        energy_options.add_argument(option, dest=f"energy_{key}", type=float, metavar="N", help=help_text)

    invoke = add("invoke", "invoke a function and print its result as JSON")
    invoke.add_argument("name", help="function name")
    invoke.add_argument("event", nargs="?", default="{}", help="event as JSON text; - reads it from stdin (default: {})")
    invoke.add_argument("--timeout", type=float, metavar="S", default=None, help="seconds to wait for the reply")
    invoke.add_argument("--report", action="store_true", help="also print the report on stderr")
    broker_option(invoke)

    ls = add("ls", "list functions with their config and pool")
    ls.add_argument("--json", action="store_true", help="print the pools state as JSON")
    broker_option(ls)

    deploy = add("deploy", "deploy or update a function folder (a path on the cloud's host)")
    deploy.add_argument("directory", help="function folder with a function.toml")
    broker_option(deploy)

    scale = add("scale", "set the kept-warm floor and the concurrency ceiling of a function")
    scale.add_argument("name", help="function name")
    scale.add_argument("--min", type=int, dest="min_warm", metavar="N", help="workers kept warm (provisioned concurrency)")
    scale.add_argument("--max", type=int, dest="max_concurrency", metavar="M", help="most workers at once; 0 disables the function")
    broker_option(scale)

    remove = add("remove", "remove a function and stop its workers")
    remove.add_argument("name", help="function name")
    broker_option(remove)

    energy = add("energy", "print the energy report: estimated joules and watts, and the always-on baseline")
    energy.add_argument("--json", action="store_true", help="print the energy state as JSON")
    broker_option(energy)

    logs = add("logs", "print a function's captured stdout and stderr lines")
    logs.add_argument("name", help="function name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl+C")
    logs.add_argument("-n", "--lines", type=int, default=200, help="how many past lines to print (default: 200)")
    broker_option(logs)

    passwd = add("passwd", "add a user to a password file, or change its password (Mosquitto's format, for either broker)")
    passwd.add_argument("file", type=Path, help="password file; created with mode 0600 when missing")
    passwd.add_argument("user", help="user name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin instead of prompting")

    acl = add("acl", "print an ACL file for the cloud, admins and clients, in Mosquitto's acl_file format")
    acl.add_argument("--namespace", metavar="NS", default=protocol.DEFAULT_NAMESPACE, help="topic namespace (default: minicloud)")
    acl.add_argument("--cloud-user", metavar="NAME", default=CLOUD_USER, help=f"user name of the cloud process (default: {CLOUD_USER})")
    acl.add_argument("--admin", metavar="NAME", action="append", default=[], help="a user who may deploy, scale and remove; repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "tui"
    if command == "tui" and not hasattr(args, "broker"):
        args = parser.parse_args(["tui", *(argv if argv is not None else sys.argv[1:])])

    if getattr(args, "ca_file", None):
        # Every connection this process makes, and an embedded cloud the TUI
        # starts, reads the CA file from the environment.
        os.environ[CA_FILE_VARIABLE] = str(Path(args.ca_file).resolve())
    broker = getattr(args, "broker", None)
    if broker is not None:
        try:
            parse_broker_url(broker)
        except ValueError as exc:
            print(f"minicloud: {exc}", file=sys.stderr)
            return EXIT_USAGE

    if command == "passwd":
        return _passwd(args)
    if command == "acl":
        print(render_acl(args.namespace, cloud_user=args.cloud_user, admins=args.admin), end="")
        return EXIT_OK
    try:
        if command == "up":
            return _run_up(args)
        if command == "tui":
            from tui.app import run_tui

            return run_tui(broker_url=args.broker or default_broker_url(), namespace=args.namespace)
        return asyncio.run(_run_client_command(command, args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away, as `minicloud ls | head` does. Point
        # stdout at /dev/null so that the exit's flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run_up(args: argparse.Namespace) -> int:
    from minicloud.cloud import Cloud, CloudOptions

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.broker is None and not 0 < args.port < 65536:
        print(f"minicloud: invalid --port {args.port}; use 1 to 65535", file=sys.stderr)
        return EXIT_USAGE
    problem = _check_up_options(args)
    if problem:
        print(f"minicloud: {problem}", file=sys.stderr)
        return EXIT_USAGE
    overrides = {key: getattr(args, f"energy_{key}") for _, key, _ in ENERGY_OPTIONS if getattr(args, f"energy_{key}") is not None}
    if "baseline_vcpus" in overrides:
        overrides["baseline_vcpus"] = int(overrides["baseline_vcpus"])
    try:
        energy_model = load_energy_model(args.config, overrides)
    except ValueError as exc:
        print(f"minicloud: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = CloudOptions(
        energy_model=energy_model,
        host=args.host,
        port=args.port,
        broker_url=args.broker,
        function_dirs=args.functions,
        namespace=args.namespace,
        exit_on_stdin_eof=args.exit_on_stdin_eof,
        password_file=args.auth,
        acl_file=args.acl,
        deploy_roots=args.deploy_root,
    )
    return asyncio.run(Cloud(options).run())


def _check_up_options(args: argparse.Namespace) -> str | None:
    """Return why the security options of `up` are unsafe, contradictory or invalid, or None."""
    if args.broker is not None and (args.auth or args.acl):
        return (
            "--auth and --acl configure the embedded broker, and --broker uses another one; "
            "give that broker the files instead (Mosquitto: password_file and acl_file in mosquitto.conf)"
        )
    if args.acl and not args.auth:
        return "--acl needs --auth: without passwords every client is anonymous, so no user rule could apply"
    if args.broker is None and not args.auth and not _is_loopback(args.host):
        # A deploy over the bus loads code onto this host, so an open listener
        # would let anyone who reaches it run code here.
        return (
            f"refusing to bind the embedded broker to {args.host} without authentication: anyone who reaches it "
            "could deploy code to this host; bind 127.0.0.1, or pass --auth FILE (and --acl FILE) to require passwords"
        )
    for root in args.deploy_root:
        if not root.is_dir():
            return f"--deploy-root {root} is not a folder; create it, or give the folder that holds your functions"
    try:
        if args.auth:
            load_password_file(args.auth)
        acl = load_acl(args.acl) if args.acl else None
    except ValueError as exc:
        return str(exc)
    invoke_topic = protocol.Topics(args.namespace).invoke("any-function")
    if acl is not None and not grants_anyone(acl, invoke_topic, "write"):
        # The cloud's own connection passes any ACL, so nothing else would show that no client can invoke.
        return (
            f"the ACL {args.acl} lets no user publish on {invoke_topic}, so no client could invoke anything; "
            f"write one for this namespace with 'minicloud acl --namespace {args.namespace}'"
        )
    return None


def _passwd(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        try:
            password = getpass.getpass(f"password for {args.user}: ")
            repeated = getpass.getpass("again: ")
        except EOFError:
            print("minicloud passwd: no terminal to read the password from; pass --password-stdin and pipe it in", file=sys.stderr)
            return EXIT_USAGE
        if repeated != password:
            print("minicloud passwd: the two passwords differ; nothing changed", file=sys.stderr)
            return EXIT_USAGE
    if not password:
        print("minicloud passwd: the password is empty; nothing changed", file=sys.stderr)
        return EXIT_USAGE
    try:
        set_password(args.file, args.user, password)
    except (OSError, ValueError) as exc:
        print(f"minicloud passwd: {exc}", file=sys.stderr)
        return EXIT_PLATFORM_ERROR
    print(f"{args.user} set in {args.file}", file=sys.stderr)
    return EXIT_OK


async def _run_client_command(command: str, args: argparse.Namespace) -> int:
    broker_url = args.broker or default_broker_url()
    # A command fails on the first refused connection, and its error names
    # the cause and the fix, so the bus's "retrying" warning would mislead.
    logging.getLogger("minicloud.bus").setLevel(logging.ERROR)
    if args.ca_file and not broker_url.startswith("mqtts://"):
        print(f"minicloud: warning: --ca-file applies only to mqtts:// URLs, and the broker URL is {parse_broker_url(broker_url)}", file=sys.stderr)
    try:
        if command == "invoke":
            return await _invoke(args, broker_url)
        if command == "logs" and args.follow:
            return await _follow_logs(args, broker_url)
        async with AsyncClient(broker_url, namespace=args.namespace) as client:
            return await _control_command(command, args, client)
    except InvocationError as exc:
        print(json.dumps(exc.error, indent=2), file=sys.stderr)
        return EXIT_FUNCTION_ERROR if exc.is_function_error else EXIT_PLATFORM_ERROR
    except BusError as exc:
        print(json.dumps({"type": "Unavailable", "message": str(exc), "source": "platform"}, indent=2), file=sys.stderr)
        return EXIT_PLATFORM_ERROR


async def _invoke(args: argparse.Namespace, broker_url: str) -> int:
    text = sys.stdin.read() if args.event == "-" else args.event
    try:
        event = protocol.loads(text)
    except ValueError as exc:
        error = {"type": "InvalidRequest", "message": f"EVENT is not valid JSON: {exc}", "source": "platform"}
        print(json.dumps(error, indent=2), file=sys.stderr)
        return EXIT_PLATFORM_ERROR
    if args.timeout is not None and args.timeout <= 0:
        print("minicloud: --timeout must be more than 0 seconds", file=sys.stderr)
        return EXIT_USAGE

    async with AsyncClient(broker_url, namespace=args.namespace) as client:
        try:
            outcome = await client.invoke(args.name, event, timeout=args.timeout)
        except InvocationError as exc:
            if args.report and exc.report:
                print(json.dumps(exc.report, indent=2), file=sys.stderr)
            raise
    print(json.dumps(outcome.result, indent=2))
    if args.report:
        print(json.dumps(outcome.report, indent=2), file=sys.stderr)
    return EXIT_OK


async def _control_command(command: str, args: argparse.Namespace, client: AsyncClient) -> int:
    if command == "ls":
        state = await client.ls()
        print(json.dumps(state, indent=2) if args.json else format_pools(state))
    elif command == "deploy":
        path = Path(args.directory).resolve()
        result = await client.deploy(str(path))
        print(f"{result['function']} {result['status']} from {path}")
    elif command == "scale":
        if args.min_warm is None and args.max_concurrency is None:
            print("minicloud scale: give --min N, --max M or both", file=sys.stderr)
            return EXIT_USAGE
        result = await client.scale(args.name, min_warm=args.min_warm, max_concurrency=args.max_concurrency)
        config = result["config"]
        print(f"{args.name}: min_warm={config['min_warm']} max_concurrency={config['max_concurrency']}")
    elif command == "remove":
        await client.control("remove", {"function": args.name})
        print(f"{args.name} removed")
    elif command == "energy":
        state = await client.energy()
        print(json.dumps(state, indent=2) if args.json else format_energy(state))
    elif command == "logs":
        for line in await client.logs(args.name, limit=args.lines):
            print(format_log_line(line))
    return EXIT_OK


async def _follow_logs(args: argparse.Namespace, broker_url: str) -> int:
    topics = protocol.Topics(args.namespace)
    async with AsyncClient(broker_url, namespace=args.namespace) as client:
        for line in await client.logs(args.name, limit=args.lines):
            print(format_log_line(line), flush=True)
    async with connect(broker_url) as connection:
        await connection.subscribe(topics.logs(args.name), qos=0)
        async for message in connection.messages():
            try:
                batch = protocol.loads(message.payload)
            except ValueError:
                continue
            for line in batch.get("lines", []):
                print(format_log_line(line), flush=True)
    return EXIT_OK


def format_log_line(line: dict[str, Any]) -> str:
    import time

    stamp = time.strftime("%H:%M:%S", time.localtime(line.get("ts", 0)))
    request = (line.get("request_id") or "init")[:8]
    return f"{stamp} {request} {line.get('stream', '')[:6]:6} {line.get('line', '')}"


def format_pools(state: dict[str, Any]) -> str:
    header = f"{'FUNCTION':20} {'STARTING':>8} {'IDLE':>5} {'BUSY':>5} {'DRAINING':>8} {'QUEUED':>6} {'MIN':>4} {'MAX':>4} {'MEMORY':>7} {'TIMEOUT':>8}"
    rows = [header]
    for name, pool in sorted(state.get("functions", {}).items()):
        counts = {"starting": 0, "idle": 0, "busy": 0, "draining": 0}
        for worker in pool.get("workers", []):
            counts[worker["state"]] = counts.get(worker["state"], 0) + 1
        config = pool["config"]
        rows.append(
            f"{name:20} {counts['starting']:>8} {counts['idle']:>5} {counts['busy']:>5} {counts['draining']:>8} "
            f"{pool.get('queued', 0):>6} {config['min_warm']:>4} {config['max_concurrency']:>4} "
            f"{str(config['memory_mb']) + ' MB':>7} {config['timeout_s']:>7g}s"
        )
        if pool.get("init_error"):
            rows.append(f"  init failed: {pool['init_error'].get('type')}: {pool['init_error'].get('message')}")
    return "\n".join(rows)


def format_energy(state: dict[str, Any]) -> str:
    baseline = state.get("baseline", {})
    joules = state.get("joules", 0.0)
    baseline_joules = baseline.get("joules", 0.0)
    lines = [
        f"now:        {state.get('watts', 0.0):.3f} W (estimated)",
        f"total:      {joules:.3f} J since the cloud started",
        f"always-on:  {baseline_joules:.3f} J ({baseline.get('watts', 0.0):.2f} W) for a dedicated server doing the same work",
    ]
    if joules > 0:
        lines.append(f"ratio:      the always-on server spends {baseline_joules / joules:.1f} times as much")
    measured = state.get("measured")
    if measured:
        lines.append(f"measured:   {measured['joules']:.3f} J, {measured['watts']:.2f} W now ({measured['source']}, whole machine)")
    else:
        lines.append("measured:   not available here (no readable RAPL counters); the figures above are estimates")
    lines.append("")
    lines.append(f"{'FUNCTION':20} {'INVOCATIONS':>11} {'CPU MS':>10} {'JOULES':>10}")
    for name, totals in sorted(state.get("by_function", {}).items()):
        lines.append(f"{name:20} {totals['invocations']:>11} {totals['cpu_ms']:>10.1f} {totals['joules']:>10.4f}")
    return "\n".join(lines)
