"""`perpchain checkpoint | maintenance`: through a running node's admin RPC (`--admin URL`,
bearer token from `--token-file` or HOME/admin.token), or for checkpoints on a stopped node's
store (`--home` alone)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from node.cli.common import CliError, admin_client, open_store, print_json
from node.client import RpcCallError


def _checkpoint_line(info: dict[str, Any]) -> str:
    return f"checkpoint {info['name']} at height {info['height']}, state root {info['state_root']}"


def _created_text(created_ms: str | None) -> str:
    if created_ms is None:
        return "-"
    import datetime

    moment = datetime.datetime.fromtimestamp(int(created_ms) / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _checkpoint_offline(args: argparse.Namespace) -> Any:
    from node.ops import checkpoints

    locked = (
        f"the node is running (it holds {args.home}/data): use --admin URL --token-file "
        "FILE (admin RPC) instead"
    )
    with open_store(args.home, locked=locked) as store:
        try:
            if args.action == "create":
                return checkpoints.create_checkpoint(
                    store,
                    args.name,
                    created_ms=time.time_ns() // 1_000_000,
                    height=args.height,
                    reason=args.reason,
                ).to_json()
            if args.action == "list":
                return [info.to_json() for info in checkpoints.list_checkpoints(store)]
            return checkpoints.delete_checkpoint(store, args.name).to_json()
        except checkpoints.CheckpointError as error:
            raise CliError(str(error)) from None


def _checkpoint_online(args: argparse.Namespace) -> Any:
    client = admin_client(args, timeout_s=30)
    if args.action == "create":
        params: dict[str, Any] = {"name": args.name, "reason": args.reason}
        if args.height is not None:
            params["height"] = str(args.height)
        return client.call("admin_checkpointCreate", **params)
    if args.action == "list":
        return client.call("admin_checkpointList")["checkpoints"]
    return client.call("admin_checkpointDelete", name=args.name)


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """create | list | delete, through the admin RPC (--admin) or on the stopped node's store."""
    if args.admin:
        result = _checkpoint_online(args)
    elif args.home:
        result = _checkpoint_offline(args)
    else:
        raise CliError("give --home DIR (node stopped) or --admin URL (running node)")
    if args.json:
        print_json(result)
    elif args.action == "create":
        print(f"created {_checkpoint_line(result)}")
    elif args.action == "delete":
        print(f"deleted {_checkpoint_line(result)}")
    elif not result:
        print("no checkpoints")
    else:
        rows = [
            (c["name"], c["height"], c["state_root"], _created_text(c["created_ms"]), c["reason"])
            for c in result
        ]
        header = ("NAME", "HEIGHT", "STATE ROOT", "CREATED (UTC)", "REASON")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            cells = [str(cell).ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
            print("  ".join([*cells, row[4]]).rstrip())
    return 0


def cmd_maintenance(args: argparse.Namespace) -> int:
    """maintenance begin | job | end through the running node's admin RPC."""
    client = admin_client(args, timeout_s=600)
    if args.action == "begin":
        result = client.call("admin_maintenanceBegin", reason=args.reason)
        if args.json:
            print_json(result)
            return 0
        print(
            f"maintenance: producing stopped at height {result['height']}, markets CANCEL_ONLY, "
            f"checkpoint {result['checkpoint']} (root {result['state_root']}), "
            f"fencing epoch {result['epoch']}"
        )
        return 0
    if args.action == "job":
        result = client.call("admin_maintenanceJob", kind=args.kind)
        if args.json:
            print_json(result)
            return 0
        print(f"maintenance job {result['job']} done in {result['seconds']} s")
        return 0
    params = {"expect_root": args.expect_root} if args.expect_root else {}
    try:
        result = client.call("admin_maintenanceEnd", **params)
    except RpcCallError as error:
        print(f"perpchain: {error.message}", file=sys.stderr)
        for line in (error.data or {}).get("differences", []):
            print(f"  {line}", file=sys.stderr)
        if isinstance(error.data, dict) and error.data.get("restore"):
            print(f"to restore: {error.data['restore']}", file=sys.stderr)
        return 3
    if args.json:
        print_json(result)
        return 0
    print(
        f"maintenance ended: verified, producing from height {result['height']} "
        f"(root {result['state_root']}); markets stay CANCEL_ONLY until reopened: "
        "admin_setMarketMode POST_ONLY, then OPEN"
    )
    return 0
