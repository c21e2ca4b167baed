"""Command line: `enapter-gateway run | status | token create|list|revoke | check-config | backup | restore`.

Exit codes: 0 ok; 78 (EX_CONFIG) bad configuration, so systemd's RestartPreventExitStatus=78 does not
loop on it; 69 (EX_UNAVAILABLE) a required program such as mosquitto is missing, or `status` finds no
running daemon; 65 (EX_DATAERR) `token revoke` of an unknown id, or a backup archive that is
unreadable, corrupt or does not fit; 75 (EX_TEMPFAIL) `backup`/`restore` cannot work on the state
directory now (the daemon runs on it, it is not empty, an archive cannot be written), or `run` finds
another daemon running on it; 1 a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway import __version__, backup, runtime
from gateway.api import control
from gateway.config import Config, ConfigError, load
from gateway.model import ApiToken, Role
from gateway.mqtt.broker import BrokerUnavailableError
from gateway.store.store import DATABASE_FILE, Store
from gateway.tokens import RANDOM_BYTES, format_token, hash_token

EX_CONFIG = 78
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
DEFAULT_CONFIG = Path("/etc/enapter-gateway/config.toml")
CONFIG_ENV = "ENAPTER_GATEWAY_CONFIG"

LOG = logging.getLogger("gateway")


# The daemon's SQLite threads give up the GIL around every row they step through and must win it
# back from the event loop's thread; with Python's default of 5 ms a read of a few dozen rows
# could wait a switch interval per row while the loop is busy.
GIL_SWITCH_INTERVAL_S = 0.0005


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enapter-gateway", description="A local, open Enapter Gateway.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = f"configuration file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})"

    run = commands.add_parser("run", help="run the gateway daemon")
    run.add_argument("--config", type=Path, help=config_help)
    run.add_argument("--verbose", action="store_true", help="debug logging")

    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser(
        "create", help="create an API token; it is printed once, only its hash is stored"
    )
    create.add_argument("--role", required=True, type=str.upper, choices=_token_roles())
    create.add_argument("--name", default="", help="what the token is for")
    create.add_argument("--config", type=Path, help=config_help)
    listing = token_commands.add_parser("list", help="list API tokens (never the tokens themselves)")
    listing.add_argument("--config", type=Path, help=config_help)
    revoke = token_commands.add_parser(
        "revoke", help="revoke an API token; a running gateway refuses it at once"
    )
    revoke.add_argument("id", help="the token's id, as `token list` shows it")
    revoke.add_argument("--config", type=Path, help=config_help)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path", type=Path)
    status = commands.add_parser("status", help="what the running daemon reports about itself")
    status.add_argument("--config", type=Path, help=config_help)
    status.add_argument("--json", action="store_true", help="the daemon's status document as JSON")
    _add_backup_commands(commands, config_help)
    return parser


def _add_backup_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], config_help: str
) -> None:
    save = commands.add_parser(
        "backup",
        help="save the database, the gateway CA and the config file to one archive",
        description="Write a .tar.gz (mode 0600: it holds the CA key) with a consistent snapshot of the"
        " database, the gateway's CA and certificates (pki/), the configuration file and a manifest"
        " with the checksum of each. Works while the gateway runs; the archive appears only once"
        " it is complete.",
    )
    save.add_argument("file", type=Path, help="the archive to write, e.g. gateway-backup.tar.gz")
    save.add_argument("--config", type=Path, help=config_help)
    load_back = commands.add_parser(
        "restore",
        help="replace the state directory with a backup (the gateway must be stopped)",
        description="The gateway must be stopped: restore refuses while anything has the database"
        " open. It checks the whole archive first (checksums, database integrity, schema version)"
        " and refuses it, changing nothing, if anything is wrong. Then the state directory"
        " (gateway.state_dir of the active config) becomes the backup's. The active config is not"
        " changed: ports and paths stay yours; the backup's config file is left as"
        f" <state_dir>/{backup.CONFIG_FROM_BACKUP} to compare.",
    )
    load_back.add_argument("file", type=Path, help="an archive written by `enapter-gateway backup`")
    load_back.add_argument(
        "--force",
        action="store_true",
        help="if the state directory is not empty, move it aside to <state_dir>.before-restore-<time>"
        " (it is never deleted) instead of refusing",
    )
    load_back.add_argument("--config", type=Path, help=config_help)


def _token_roles() -> list[str]:
    return [role.value for role in Role if role is not Role.SYSTEM]


def _config_path(given: Path | None) -> Path:
    if given is not None:
        return given
    from_env = os.environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else DEFAULT_CONFIG


def _configure_logging(verbose: bool) -> None:
    # Under systemd, journald stamps every line itself.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=stamp + "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_problems(error: ConfigError) -> None:
    for problem in error.problems:
        print(f"config error: {problem}", file=sys.stderr)


def _open_store(config: Config) -> contextlib.AbstractAsyncContextManager[Store]:
    return Store.open(config.gateway.state_dir / DATABASE_FILE)


async def _create_token(config: Config, role: Role, name: str) -> str:
    token = format_token(secrets.token_bytes(RANDOM_BYTES))
    async with _open_store(config) as store:
        await store.create_token(name=name, role=role, token_hash=hash_token(token))
    return token


async def _list_tokens(config: Config) -> list[ApiToken]:
    async with _open_store(config) as store:
        return await store.tokens()


async def _revoke_token(config: Config, token_id: str) -> ApiToken | None:
    async with _open_store(config) as store:
        return await store.revoke_token(token_id)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token_command(config: Config, args: argparse.Namespace) -> int:
    if args.token_command == "create":
        role = Role(args.role)
        secret = asyncio.run(_create_token(config, role, args.name))
        print(f"Created a {role.value} token. It is shown only this once; keep it secret:")
        print(secret)
        return 0
    if args.token_command == "list":
        print(f"{'ID':36}  {'ROLE':9}  {'CREATED':20}  {'REVOKED':20}  NAME")
        for token in asyncio.run(_list_tokens(config)):
            created, revoked_at = _when(token.created_at), _when(token.revoked_at)
            print(f"{token.id:36}  {token.role.value:9}  {created:20}  {revoked_at:20}  {token.name}")
        return 0
    revoked = asyncio.run(_revoke_token(config, args.id))
    if revoked is None:
        print(f"no token with id {args.id!r}; see `enapter-gateway token list`", file=sys.stderr)
        return EX_DATAERR
    print(f"Revoked token {revoked.id} ({revoked.role.value}, {revoked.name or 'no name'}).")
    return 0


def _backup_command(config: Config, config_path: Path, args: argparse.Namespace) -> int:
    state_dir = config.gateway.state_dir
    now = datetime.now(UTC)
    try:
        if args.command == "backup":
            saved = backup.create_backup(state_dir, config_path, args.file, now=now)
            manifest = saved.manifest
            print(
                f"Backed up {manifest.devices} device(s) of site {manifest.site_id} (schema version"
                f" {manifest.schema_version}) to {saved.path}: {saved.size / 1024 / 1024:.1f} MiB."
            )
            return 0
        restored = backup.restore_backup(args.file, state_dir, force=args.force, now=now)
    except backup.ArchiveError as error:
        print(f"{args.command} refused: {error}", file=sys.stderr)
        return EX_DATAERR
    except backup.BackupError as error:
        print(f"{args.command} refused: {error}", file=sys.stderr)
        return EX_TEMPFAIL
    manifest = restored.manifest
    print(
        f"Restored {manifest.devices} device(s) of site {manifest.site_id} into {restored.state_dir},"
        f" from a backup made {manifest.created_at} by enapter-gateway {manifest.gateway_version}."
    )
    if restored.moved_aside is not None:
        print(f"The previous state directory is now {restored.moved_aside}.")
    if restored.config_from_backup is not None:
        print(
            f"The backup's config file is {restored.config_from_backup}; {config_path} is unchanged"
            " and applies."
        )
    return 0


def _status_command(config: Config, args: argparse.Namespace) -> int:
    try:
        document = asyncio.run(control.read_status(control.socket_path(config.gateway.state_dir)))
    except control.DaemonUnreachableError as error:
        print(error, file=sys.stderr)
        return EX_UNAVAILABLE
    print(json.dumps(document, indent=2) if args.json else control.render_status(document))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `enapter-gateway` console script."""
    args = _parser().parse_args(argv)
    # Everything the gateway writes (database, CA key, broker files) is for its own user only;
    # Mosquitto, its child, inherits this.
    os.umask(0o077)
    if args.command == "check-config":
        try:
            load(args.path)
        except ConfigError as error:
            _print_problems(error)
            return EX_CONFIG
        print(f"{args.path}: ok")
        return 0
    config_path = _config_path(args.config)
    try:
        config = load(config_path)
    except ConfigError as error:
        _print_problems(error)
        return EX_CONFIG
    if args.command == "token":
        return _token_command(config, args)
    if args.command == "status":
        return _status_command(config, args)
    if args.command in ("backup", "restore"):
        return _backup_command(config, config_path, args)
    _configure_logging(args.verbose)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        asyncio.run(runtime.run(config))
    except Exception as error:  # noqa: BLE001 - the one place that turns a crash into an exit code
        return _exit_code(error)
    return 0


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _exit_code(error: Exception) -> int:
    """Log why the daemon ended and pick the exit code systemd acts on."""
    leaves = _leaves(error)
    expected = {
        BrokerUnavailableError: EX_UNAVAILABLE,
        ConfigError: EX_CONFIG,
        runtime.StateDirInUseError: EX_TEMPFAIL,
    }
    for kind, code in expected.items():
        if all(isinstance(leaf, kind) for leaf in leaves):
            for leaf in leaves:
                LOG.error("%s", leaf)
            return code
    LOG.error("the gateway crashed", exc_info=error)
    return 1
