"""`waypostctl`: Waypost from a shell or a pipeline (grammar close to EPR's `epr-cli`).

Exit codes (documented in `waypostctl --help`):
  0  done (`gate wait`: the gate is complete; its status is printed)
  1  `gate wait` ran out of time; or the server refused or failed the request
  2  usage errors (bad arguments, a file that cannot be read) and credential errors
     (401, 403)
  3  the server could not be reached within the retry budget
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any, NoReturn, TextIO

from waypost_client import __version__
from waypost_client._core import Config, ConfigError
from waypost_client.client import Client, split_ref
from waypost_client.errors import (
    ApiError,
    ConnectionFailed,
    Forbidden,
    GateTimeout,
    NotFound,
    Unauthorized,
)
from waypost_client.models import Message, Nvrpp
from waypost_client.watcher import FileCheckpoint, MessageFilter, Watcher

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
BATCH = 1000

EPILOG = """\
environment: WAYPOST_URL (default http://127.0.0.1:8042), WAYPOST_API_KEY, or
WAYPOST_USERNAME + WAYPOST_PASSWORD (+ WAYPOST_TENANT) instead of a key.
Receivers and groups may be named by id or by name@version.

exit codes: 0 done (gate wait: complete); 1 gate wait timed out, or the server
refused or failed the request; 2 usage or credential (401/403) errors; 3 the
server could not be reached."""


class UsageError(Exception):
    """Bad arguments or input files: exit 2."""


# --- output -----------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """JSON-ready: dataclasses as their server JSON (`raw`) or fields, times as RFC 3339."""
    if is_dataclass(value) and not isinstance(value, type):
        raw = getattr(value, "raw", None)
        if isinstance(raw, dict):
            return raw
        return {f.name: plain(getattr(value, f.name)) for f in fields(value) if f.repr}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class Output:
    def __init__(self, form: str, out: TextIO) -> None:
        self.form = form
        self.out = out

    def one(self, value: Any) -> None:
        data = plain(value)
        if self.form == "table" and isinstance(data, dict):
            width = max((len(k) for k in data), default=0)
            for key, item in data.items():
                text = item if isinstance(item, str) else json.dumps(item, sort_keys=True)
                print(f"{key:<{width}}  {text}", file=self.out)
        elif self.form == "table" and isinstance(data, str):
            print(data, file=self.out)
        else:
            print(json.dumps(data, indent=2, sort_keys=True), file=self.out)

    def many(self, values: Iterable[Any], columns: Sequence[str]) -> None:
        rows = [plain(v) for v in values]
        if self.form == "table":
            table = [list(columns)] + [[_cell(r.get(c)) for c in columns] for r in rows]
            widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
            for row in table:
                print(
                    "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
                    file=self.out,
                )
        else:
            print(json.dumps(rows, indent=2, sort_keys=True), file=self.out)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


# --- parsing helpers -------------------------------------------------------------------------


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def duration(text: str) -> float:
    """`90`, `90s`, `30m`, `1h`, `500ms` -> seconds."""
    found = _DURATION.match(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90s, 30m, 1h)")
    number, unit = float(found.group(1)), found.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def json_value(text: str) -> Any:
    """JSON text, or @FILE holding it."""
    if text.startswith("@"):
        try:
            text = pathlib.Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {text[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"not JSON: {exc}") from None


def load_items(path: str) -> list[dict[str, Any]]:
    """Events from a JSON (object or array), JSON Lines or YAML file (`-`: stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    suffix = pathlib.Path(path).suffix.lower()
    items: Any
    if suffix in {".yaml", ".yml"}:
        items = _yaml(text)
    elif suffix in {".jsonl", ".ndjson"}:
        items = _json_lines(text)
    else:
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            try:
                items = _json_lines(text)
            except UsageError:
                items = _yaml(text)
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UsageError(f"{path}: expected an event object or a list of them")
    return items


def _json_lines(text: str) -> list[Any]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(f"line {number}: not JSON: {exc.msg}") from None
    return items


def _yaml(text: str) -> Any:
    try:
        import yaml  # noqa: PLC0415 - an optional dependency (the `yaml` extra)
    except ImportError:
        raise UsageError(
            "reading YAML needs PyYAML: pip install 'waypost-client[yaml]' (JSON and JSON "
            "Lines need nothing)"
        ) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UsageError(f"not JSON, JSON Lines or YAML: {exc}") from None
    if len(documents) == 1:
        return documents[0]
    return documents


def key_of(args: argparse.Namespace) -> Nvrpp:
    return Nvrpp(args.name, args.version, args.release, args.platform_id, args.package)


# --- commands ---------------------------------------------------------------------------------

Handler = Callable[[Client, argparse.Namespace, Output], int]


def receiver_id(client: Client, ref: str) -> str:
    return ref if split_ref(ref) is None else client.find_receiver(ref).id


def group_id(client: Client, ref: str) -> str:
    return ref if split_ref(ref) is None else client.find_group(ref).id


RECEIVER_COLUMNS = ("id", "name", "type", "version", "created_at")
EVENT_COLUMNS = ("id", "name", "version", "release", "platform_id", "package", "success")
GROUP_COLUMNS = ("id", "name", "type", "version", "enabled", "event_receiver_ids")


def cmd_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    try:
        ready = client.ready()
    except ApiError as exc:
        out.one({"url": client.config.url, "ready": False, "detail": str(exc)})
        return EXIT_FAILED
    out.one({"url": client.config.url, "ready": ready.get("status") == "ok", **ready})
    return EXIT_OK


def cmd_receiver_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    schema = json_value(args.schema)
    if not isinstance(schema, dict):
        raise UsageError("--schema must be a JSON object")
    made = client.create_receiver(
        args.name, args.type, args.version, description=args.description, schema=schema
    )
    out.one({"id": made})
    return EXIT_OK


def cmd_receiver_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.one(client.find_receiver(args.ref))
    return EXIT_OK


def cmd_receiver_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.list_receivers(name=args.name, type=args.type, version=args.version)
    out.many(_first(found, args.limit), RECEIVER_COLUMNS)
    return EXIT_OK


def cmd_event_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    payload = json_value(args.payload)
    if not isinstance(payload, dict):
        raise UsageError("--payload must be a JSON object")
    made = client.create_event(
        name=args.name,
        version=args.version,
        release=args.release,
        platform_id=args.platform_id,
        package=args.package,
        event_receiver_id=receiver_id(client, args.receiver),
        success=args.success,
        payload=payload,
        description=args.description,
    )
    out.one({"id": made})
    return EXIT_OK


def cmd_event_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.one(client.get_event(args.id))
    return EXIT_OK


def cmd_event_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.list_events(
        name=args.name,
        version=args.version,
        release=args.release,
        platform_id=args.platform_id,
        package=args.package,
        success=args.success,
        event_receiver_id=None if args.receiver is None else receiver_id(client, args.receiver),
    )
    out.many(_first(found, args.limit), EVENT_COLUMNS)
    return EXIT_OK


def cmd_event_generate(client: Client, args: argparse.Namespace, out: Output) -> int:
    items = load_items(args.file)
    resolved: dict[str, str] = {}
    for item in items:
        ref = item.pop("event_receiver", None) or args.receiver
        if "event_receiver_id" not in item and ref is not None:
            if ref not in resolved:
                resolved[ref] = receiver_id(client, ref)
            item["event_receiver_id"] = resolved[ref]
        elif "event_receiver_id" in item and split_ref(str(item["event_receiver_id"])):
            ref = str(item["event_receiver_id"])
            if ref not in resolved:
                resolved[ref] = receiver_id(client, ref)
            item["event_receiver_id"] = resolved[ref]
        item.setdefault("description", "")
    size = max(1, min(BATCH, args.batch_size))
    progress = sys.stderr.isatty() and not args.quiet
    ids: list[str] = []
    for start in range(0, len(items), size):
        batch = items[start : start + size]
        try:
            ids.extend(client.create_events(batch))
        except ApiError as exc:
            if progress:
                print(file=sys.stderr)
            for error in exc.errors:  # /events/<i>/... -> the item's number in the file
                found = re.match(r"^/events/(\d+)(.*)$", error.field)
                if found:
                    index = start + int(found.group(1))
                    error_at = f"item {index}{found.group(2)}"
                    print(f"waypostctl: {error_at}: {error.message}", file=sys.stderr)
            print(
                f"waypostctl: batch {start // size + 1} (items {start}..{start + len(batch) - 1})"
                f" refused, none of it recorded; {len(ids)} events recorded before it",
                file=sys.stderr,
            )
            out.one({"recorded": len(ids), "ids": ids})
            raise
        if progress:
            print(f"\rrecorded {len(ids)}/{len(items)} events", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    out.one({"recorded": len(ids), "ids": ids})
    return EXIT_OK


def cmd_group_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    members = [receiver_id(client, r) for r in _split(args.receivers)]
    if args.if_absent:
        for group in client.list_groups(name=args.name, type=args.type, version=args.version):
            out.one({"id": group.id, "created": False})
            return EXIT_OK
    made = client.create_group(
        args.name,
        args.type,
        args.version,
        members,
        description=args.description,
        enabled=not args.disabled,
    )
    out.one({"id": made, "created": True} if args.if_absent else {"id": made})
    return EXIT_OK


def cmd_group_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.one(client.find_group(args.ref))
    return EXIT_OK


def cmd_group_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.list_groups(
        name=args.name, type=args.type, version=args.version, enabled=args.enabled
    )
    out.many(_first(found, args.limit), GROUP_COLUMNS)
    return EXIT_OK


def cmd_group_enable(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.one(client.enable_group(group_id(client, args.ref)))
    return EXIT_OK


def cmd_group_disable(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.one(client.disable_group(group_id(client, args.ref)))
    return EXIT_OK


def cmd_group_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.one(client.group_status(group_id(client, args.group), key_of(args)))
    return EXIT_OK


def cmd_group_completions(client: Client, args: argparse.Namespace, out: Output) -> int:
    found = client.list_completions(
        group_id(client, args.group),
        name=args.name,
        version=args.version,
        release=args.release,
        platform_id=args.platform_id,
        package=args.package,
    )
    columns = ("id", "name", "version", "release", "platform_id", "package", "completed_at")
    out.many(_first(found, args.limit), columns)
    return EXIT_OK


def cmd_gate_wait(client: Client, args: argparse.Namespace, out: Output) -> int:
    try:
        ident = group_id(client, args.group)
        client.get_group(ident)
    except NotFound as exc:  # a gate that does not exist is a mistake in the pipeline
        raise UsageError(str(exc)) from None
    try:
        status = client.wait_for_gate(ident, key_of(args), timeout=args.timeout)
    except GateTimeout as exc:
        print(f"waypostctl: {exc}", file=sys.stderr)
        out.one(exc.status)
        return EXIT_FAILED
    out.one(status)
    return EXIT_OK


def cmd_watch(client: Client, args: argparse.Namespace, out: Output) -> int:
    def emit(message: Message) -> None:
        line = json.dumps({**message.raw, "position": message.position}, sort_keys=True)
        try:
            print(line, file=out.out, flush=True)
        except BrokenPipeError:  # the reader went away (| head): stop, this one not done
            watcher.stop()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.out.fileno())
            raise

    watcher = Watcher(
        client,
        emit,
        filter=MessageFilter(
            types=tuple(args.type or ()),
            subjects=tuple(args.subject or ()),
            name=args.name,
            version=args.version,
            release=args.release,
            platform_id=args.platform_id,
            package=args.package,
            success=args.success,
        ),
        checkpoint=None if args.checkpoint is None else FileCheckpoint(args.checkpoint),
        after=args.after,
    )
    watcher.run()
    return EXIT_OK


def cmd_subscription_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    filter_ = json_value(args.filter) if args.filter else None
    made = client.create_subscription(
        args.name,
        args.target,
        description=args.description,
        enabled=not args.disabled,
        filter=filter_,
        ordering=args.ordering,
    )
    out.one({"id": made})
    return EXIT_OK


def cmd_subscription_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    columns = ("id", "name", "url", "enabled", "ordering", "disabled_reason")
    out.many(_first(client.list_subscriptions(), args.limit), columns)
    return EXIT_OK


def cmd_subscription_deliveries(client: Client, args: argparse.Namespace, out: Output) -> int:
    columns = ("id", "message_type", "position", "status", "attempts", "last_status_code")
    found = client.list_deliveries(args.id, status=args.status)
    out.many(_first(found, args.limit), columns)
    return EXIT_OK


def cmd_subscription_redrive(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.one({"requeued": client.redrive(args.id, since=args.since, until=args.until)})
    return EXIT_OK


def _first(items: Iterator[Any], limit: int | None) -> Iterator[Any]:
    for number, item in enumerate(items):
        if limit is not None and number >= limit:
            return
        yield item


def _split(values: Sequence[str]) -> list[str]:
    return [part for value in values for part in re.split(r"[\s,]+", value) if part]


# --- the grammar ------------------------------------------------------------------------------


def _add_key(parser: argparse.ArgumentParser, *, required: bool) -> None:
    for flag in ("--name", "--version", "--release", "--platform-id", "--package"):
        parser.add_argument(flag, required=required, help="part of the artifact's NVRPP")


def _add_success(parser: argparse.ArgumentParser, default: bool | None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--success", dest="success", action="store_true", default=default)
    group.add_argument("--failure", dest="success", action="store_false")


def _limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=None, help="at most this many")


SUBSCRIPTIONS_HELP = (
    "webhook subscriptions and their deliveries (needs a server with subscriptions: "
    "older servers answer 404)"
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="waypostctl",
        description="Waypost from a shell or a pipeline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"waypostctl {__version__}")
    top.add_argument("--url", help="the server (WAYPOST_URL)")
    top.add_argument("--api-key", help="an API key (WAYPOST_API_KEY)")
    top.add_argument("--tenant", help="a user's tenant slug (WAYPOST_TENANT)")
    top.add_argument(
        "--output", "-o", choices=("json", "table"), default="json", help="default json"
    )
    top.add_argument(
        "--request-timeout", type=duration, default=30.0, help="per request (default 30s)"
    )
    top.add_argument("--debug", action="store_true", help="log requests and retries")
    nouns = top.add_subparsers(dest="noun", required=True, metavar="COMMAND")

    def verb(noun: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = noun.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    sub = verb(nouns, "status", cmd_status, "the server's readiness")

    receiver = nouns.add_parser("receiver", help="event receivers").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sub = verb(receiver, "create", cmd_receiver_create, "register a receiver (idempotent)")
    sub.add_argument("--name", required=True)
    sub.add_argument("--type", required=True)
    sub.add_argument("--version", required=True)
    sub.add_argument("--description", default="")
    sub.add_argument("--schema", default="{}", help="JSON Schema, or @FILE (default {})")
    sub = verb(receiver, "get", cmd_receiver_get, "a receiver by id or name@version")
    sub.add_argument("ref")
    sub = verb(receiver, "list", cmd_receiver_list, "receivers, newest first")
    for flag in ("--name", "--type", "--version"):
        sub.add_argument(flag)
    _limit(sub)

    event = nouns.add_parser("event", help="events").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sub = verb(event, "create", cmd_event_create, "record an event")
    _add_key(sub, required=True)
    sub.add_argument("--receiver", "--event-receiver-id", required=True, help="id or name@version")
    sub.add_argument("--payload", default="{}", help="JSON object, or @FILE (default {})")
    sub.add_argument("--description", default="")
    _add_success(sub, True)
    sub = verb(event, "get", cmd_event_get, "an event by id")
    sub.add_argument("id")
    sub = verb(event, "list", cmd_event_list, "events, newest first")
    _add_key(sub, required=False)
    sub.add_argument("--receiver", help="id or name@version")
    _add_success(sub, None)
    _limit(sub)
    sub = verb(
        event,
        "generate",
        cmd_event_generate,
        "record the events of a JSON, JSON Lines or YAML file, in batches of up to 1000 "
        "(each batch all or nothing)",
    )
    sub.add_argument("file", help="the file (- for stdin)")
    sub.add_argument("--receiver", help="for items without event_receiver_id")
    sub.add_argument("--batch-size", type=int, default=BATCH)
    sub.add_argument("--quiet", action="store_true", help="no progress on the terminal")

    group = nouns.add_parser("group", help="receiver groups (gates)").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sub = verb(group, "create", cmd_group_create, "create a group")
    sub.add_argument("--name", required=True)
    sub.add_argument("--type", required=True)
    sub.add_argument("--version", required=True)
    sub.add_argument("--description", default="")
    sub.add_argument(
        "--receivers",
        "--event-receiver-ids",
        nargs="+",
        required=True,
        help="member ids or name@version (space or comma separated)",
    )
    sub.add_argument("--disabled", action="store_true", help="create it disabled")
    sub.add_argument(
        "--if-absent",
        action="store_true",
        help="answer the existing group of this name, type and version instead",
    )
    sub = verb(group, "get", cmd_group_get, "a group by id or name@version")
    sub.add_argument("ref")
    sub = verb(group, "list", cmd_group_list, "groups, newest first")
    for flag in ("--name", "--type", "--version"):
        sub.add_argument(flag)
    state = sub.add_mutually_exclusive_group()
    state.add_argument("--enabled", dest="enabled", action="store_true", default=None)
    state.add_argument("--disabled", dest="enabled", action="store_false")
    _limit(sub)
    for name, handler in (("enable", cmd_group_enable), ("disable", cmd_group_disable)):
        sub = verb(group, name, handler, f"{name} a group")
        sub.add_argument("ref")
    sub = verb(group, "status", cmd_group_status, "the gate for one artifact, member by member")
    sub.add_argument("--group", "--id", required=True, help="id or name@version")
    _add_key(sub, required=True)
    sub = verb(group, "completions", cmd_group_completions, "every time the group fired")
    sub.add_argument("--group", "--id", required=True, help="id or name@version")
    _add_key(sub, required=False)
    _limit(sub)

    gate = nouns.add_parser("gate", help="wait on a gate").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sub = verb(
        gate,
        "wait",
        cmd_gate_wait,
        "wait until the gate is complete for the artifact (long polls, no tight loop); "
        "exit 0 with its status when it is, 1 at the timeout",
    )
    sub.add_argument("--group", "--id", required=True, help="id or name@version")
    _add_key(sub, required=True)
    sub.add_argument(
        "--timeout",
        type=duration,
        default=1800.0,
        help="how long to wait (90s, 30m, 1h; default 30m)",
    )

    sub = verb(
        nouns,
        "watch",
        cmd_watch,
        "the tenant's messages as JSON Lines on stdout (each a CloudEvent with its log "
        "position as `position`), as they come; at least once, resumable with --checkpoint",
    )
    sub.add_argument("--type", action="append", help="a message type (repeatable)")
    sub.add_argument("--subject", action="append", help="a receiver or group id (repeatable)")
    sub.add_argument("--after", type=int, help="start after this log position (0: all)")
    sub.add_argument("--checkpoint", help="a file keeping the position (resume from it)")
    _add_key(sub, required=False)
    _add_success(sub, None)

    subscription = nouns.add_parser(
        "subscription", help=SUBSCRIPTIONS_HELP, description=SUBSCRIPTIONS_HELP
    ).add_subparsers(dest="verb", required=True, metavar="VERB")
    sub = verb(subscription, "create", cmd_subscription_create, "create a webhook subscription")
    sub.add_argument("--name", required=True)
    sub.add_argument("--url", dest="target", required=True, help="where to POST messages")
    sub.add_argument("--description")
    sub.add_argument("--filter", help='JSON, e.g. {"types": ["waypost.group.completed"]}')
    sub.add_argument("--ordering", choices=("none", "artifact"))
    sub.add_argument("--disabled", action="store_true")
    sub = verb(subscription, "list", cmd_subscription_list, "subscriptions")
    _limit(sub)
    sub = verb(
        subscription, "deliveries", cmd_subscription_deliveries, "a subscription's deliveries"
    )
    sub.add_argument("id")
    sub.add_argument("--status", choices=("pending", "succeeded", "dead"))
    _limit(sub)
    sub = verb(subscription, "redrive", cmd_subscription_redrive, "dead deliveries back to pending")
    sub.add_argument("id")
    sub.add_argument("--since")
    sub.add_argument("--until")
    return top


def fail(code: int, message: str) -> NoReturn:
    print(f"waypostctl: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="waypostctl: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = Config.load(
            args.url, args.api_key, tenant=args.tenant, timeout=args.request_timeout
        )
    except ConfigError as exc:
        fail(EXIT_USAGE, str(exc))
    out = Output(args.output, sys.stdout)
    try:
        with Client(config=config) as client:
            code: int = args.handler(client, args, out)
            return code
    except UsageError as exc:
        fail(EXIT_USAGE, str(exc))
    except (Unauthorized, Forbidden) as exc:
        fail(EXIT_USAGE, f"credential refused: {exc}")
    except NotFound as exc:
        if args.noun == "subscription":
            fail(EXIT_FAILED, f"{exc} (does this server have subscriptions?)")
        fail(EXIT_FAILED, str(exc))
    except ValueError as exc:
        fail(EXIT_USAGE, str(exc))
    except ApiError as exc:
        fail(EXIT_FAILED, str(exc))
    except ConnectionFailed as exc:
        fail(EXIT_UNREACHABLE, str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
