"""Numbering versions when several processes add versions of one name at once.

A writer reads the latest version, then inserts the next number. Two writers doing that at
the same moment choose the same number, and the database's unique key lets only one insert
commit: the other must number again after the version that won, not fail with the
database's IntegrityError (and never overwrite it). :func:`add_version` runs that loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, insert
from sqlalchemy.exc import IntegrityError

from slmops.errors import BusyError

T = TypeVar("T")

ATTEMPTS = 20
"""Tries before giving up: each lost try means another writer committed a version of the
same name meanwhile, so this many are a writer kept from committing by a crowd of others."""


class VersionTakenError(Exception):
    """The version number an attempt chose was committed by another writer meanwhile."""


def insert_version(
    engine: Engine, table: Table, row: Mapping[str, Any], taken: Callable[[], bool]
) -> None:
    """Insert a version's row; :class:`VersionTakenError` when another writer committed its
    number first (``taken()`` says whether a row with that number exists now). Any other
    integrity error is raised as it is."""
    try:
        with engine.begin() as connection:
            connection.execute(insert(table).values(**row))
    except IntegrityError:
        if not taken():
            raise
        raise VersionTakenError from None


def add_version(kind: str, name: str, attempt: Callable[[], T]) -> T:
    """``attempt()`` (read the latest version of ``name``, insert the next) until it does not
    raise :class:`VersionTakenError`; then :class:`BusyError` after :data:`ATTEMPTS` tries."""
    for tries in range(ATTEMPTS):
        try:
            return attempt()
        except VersionTakenError:
            # A short random pause, so writers that collided do not collide again in step.
            time.sleep(random.uniform(0.0, 0.005 * (tries + 1)))
    raise BusyError(
        f"{kind} {name!r}: other processes kept adding versions at the same moment "
        f"({ATTEMPTS} tries); nothing was added: run it again"
    )
