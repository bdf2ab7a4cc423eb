"""`stockade store backup | restore | migrate` and `stockade restore`: offline tools on a store.

Parsing and printing only; `controller.backups` does the work. These reach the store itself
(`--store sqlite:PATH | etcd://...`), not a controller: restore and migrate need the target's
controllers stopped (docs/operations.md). A backup through a running controller is the CLI's
`stockade backup FILE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional, TypeVar

import typer

from stockade.errors import StockadeError

if TYPE_CHECKING:
    from stockade.controller.store.location import StoreLocation

store_app = typer.Typer(help="Back up, restore and move a controller's store (offline tools).",
                        no_args_is_help=True)
# `stockade restore`, at the root beside `stockade backup`.
restore_app = typer.Typer()

T = TypeVar("T")

StoreOpt = Annotated[str, typer.Option("--store", help="the store: sqlite:PATH, or etcd://HOST:PORT,... with an optional /PREFIX/ after the members")]
EtcdCaOpt = Annotated[Optional[Path], typer.Option(help="PEM CA of the etcd members (TLS to etcd)")]
EtcdCertOpt = Annotated[Optional[Path], typer.Option(help="PEM client certificate for etcd; needs --etcd-key")]
EtcdKeyOpt = Annotated[Optional[Path], typer.Option(help="PEM private key of --etcd-cert")]


def _run(work: Callable[[], T]) -> T:
    """Run `work`; its errors as one line and the exit code of their kind (stockade.errors)."""
    try:
        return work()
    except StockadeError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(e.exit_code) from None
    except (ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


def _location(text: str, ca: Optional[Path], cert: Optional[Path], key: Optional[Path]) -> StoreLocation:
    """The store TEXT names; the --etcd-* files go to an etcd store only (migrate has one of each)."""
    from stockade.controller.store.location import parse_store

    return parse_store(text, ca, cert, key) if text.startswith("etcd://") else parse_store(text)


@store_app.command("backup")
def store_backup(file: Annotated[Path, typer.Argument(help="where to write the backup (0600)")], store: StoreOpt,
                 etcd_ca: EtcdCaOpt = None, etcd_cert: EtcdCertOpt = None, etcd_key: EtcdKeyOpt = None) -> None:
    """Read the store directly (no controller needed) at one revision into FILE."""
    from stockade.controller.backups import backup_store

    dump = _run(lambda: backup_store(_location(store, etcd_ca, etcd_cert, etcd_key), file))
    typer.echo(f"backup of store {dump.cluster_id} written to {file}: {dump.summary()}")


def _restore(file: Path, store: str, etcd_ca: Optional[Path], etcd_cert: Optional[Path],
             etcd_key: Optional[Path]) -> None:
    from stockade.controller.backups import restore

    done = _run(lambda: restore(file, _location(store, etcd_ca, etcd_cert, etcd_key)))
    typer.echo(f"restored {file} into {store}: {done.dump.summary()}")
    typer.echo(f"the store's identity is now {done.dump.cluster_id} (restored from {done.previous_identity}): "
               "start its controllers; agents of the old store take the restored state, even where they "
               f"enforce a revision newer than {done.dump.revision}")


@store_app.command("restore")
def store_restore(file: Annotated[Path, typer.Argument(help="a backup file")], store: StoreOpt,
                  etcd_ca: EtcdCaOpt = None, etcd_cert: EtcdCertOpt = None, etcd_key: EtcdKeyOpt = None) -> None:
    """Load FILE into an EMPTY store (stop its controllers first): revision numbers, history, tokens
    and audit log as they were; a new identity that agents of the old store accept."""
    _restore(file, store, etcd_ca, etcd_cert, etcd_key)


@restore_app.command("restore")
def root_restore(file: Annotated[Path, typer.Argument(help="a backup file (stockade backup)")], store: StoreOpt,
                 etcd_ca: EtcdCaOpt = None, etcd_cert: EtcdCertOpt = None, etcd_key: EtcdKeyOpt = None) -> None:
    """Load a backup into an EMPTY store (stop its controllers first); the same as `stockade store restore`."""
    _restore(file, store, etcd_ca, etcd_cert, etcd_key)


@store_app.command("migrate")
def store_migrate(
    source: Annotated[str, typer.Option("--from", help="the store to copy: sqlite:PATH or etcd://...")],
    target: Annotated[str, typer.Option("--to", help="an EMPTY store to copy it into")],
    etcd_ca: EtcdCaOpt = None, etcd_cert: EtcdCertOpt = None, etcd_key: EtcdKeyOpt = None,
) -> None:
    """Copy a store to another backend (stop the source's controllers first), keeping its identity,
    revision numbers, history, tokens and audit log: agents go on from the revision they have.
    The --etcd-* files apply to whichever side is on etcd."""
    from stockade.controller.backups import migrate

    moved = _run(lambda: migrate(_location(source, etcd_ca, etcd_cert, etcd_key),
                                 _location(target, etcd_ca, etcd_cert, etcd_key)))
    typer.echo(f"migrated store {moved.cluster_id} from {source} to {target}: {moved.summary()}")
    typer.echo(f"start the controllers with --store {target}; the source is unchanged")
