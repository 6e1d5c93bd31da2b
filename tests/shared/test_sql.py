"""Sql on real Postgres: it runs inside the session's transaction and fails as SQLAlchemy does."""

import uuid

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mercato_shared.consumer import is_transient
from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.settings import ServiceSettings
from mercato_shared.sql import Sql

_INSERT = Sql("INSERT INTO notes (id, body) VALUES (CAST(:id AS uuid), CAST(:body AS text))")
_COUNT = Sql("SELECT count(*) FROM notes WHERE id = CAST(:id AS uuid)")


@pytest.fixture
async def engine(empty_db):
    engine = create_engine(ServiceSettings(service_name="sql-test", database_url=empty_db))
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (id uuid PRIMARY KEY, body text NOT NULL)"))
    yield engine
    await engine.dispose()


def test_a_name_used_twice_is_one_parameter():
    statement = Sql("SELECT CAST(:a AS int) + CAST(:b AS int) + CAST(:a AS int)")
    assert statement.names == ("a", "b")
    assert "$2" in statement.sql
    assert "$3" not in statement.sql


async def test_a_statement_that_opens_the_transaction_rolls_back_with_it(engine):
    sessions = create_sessionmaker(engine)
    note = uuid.uuid4()

    async def insert_then_fail() -> None:
        async with transaction(sessions) as session:
            await _INSERT.execute(session, id=note, body="first in the transaction")
            assert await _COUNT.fetchval(session, id=note) == 1
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await insert_then_fail()
    async with transaction(sessions) as session:
        assert await _COUNT.fetchval(session, id=note) == 0


async def test_it_commits_with_the_orm_and_core_work_of_the_same_transaction(engine):
    sessions = create_sessionmaker(engine)
    first, second = uuid.uuid4(), uuid.uuid4()
    async with transaction(sessions) as session:
        await session.execute(
            text("INSERT INTO notes VALUES (:id, 'through the session')"), {"id": first}
        )
        await _INSERT.execute(session, id=second, body="on the driver")
    async with transaction(sessions) as session:
        assert await _COUNT.fetchval(session, id=first) == 1
        assert await _COUNT.fetchval(session, id=second) == 1


async def test_on_an_autocommit_connection_each_statement_commits(engine):
    note = uuid.uuid4()
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        await _INSERT.execute(conn, id=note, body="alone")
    async with transaction(create_sessionmaker(engine)) as session:
        assert await _COUNT.fetchval(session, id=note) == 1


async def test_a_failed_statement_is_a_dbapi_error_and_not_transient(engine):
    sessions = create_sessionmaker(engine)
    note = uuid.uuid4()
    async with transaction(sessions) as session:
        await _INSERT.execute(session, id=note, body="once")
    with pytest.raises(DBAPIError) as failed:
        async with transaction(sessions) as session:
            await _INSERT.execute(session, id=note, body="twice")
    assert isinstance(failed.value.orig, asyncpg.UniqueViolationError)
    assert not is_transient(failed.value)


async def test_a_broken_connection_is_transient_and_replaced_in_the_pool(engine):
    sessions = create_sessionmaker(engine)

    async def lose_the_connection_then_query() -> None:
        async with transaction(sessions) as session:
            pid = await Sql("SELECT pg_backend_pid()").fetchval(session)
            async with engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await _COUNT.fetchval(session, id=uuid.uuid4())

    with pytest.raises(DBAPIError) as failed:
        await lose_the_connection_then_query()
    assert failed.value.connection_invalidated
    assert is_transient(failed.value)
    async with transaction(sessions) as session:
        assert await _COUNT.fetchval(session, id=uuid.uuid4()) == 0


async def test_on_a_connection_its_commit_commits_the_statement(engine):
    note, dropped = uuid.uuid4(), uuid.uuid4()
    async with engine.connect() as conn:
        await _INSERT.execute(conn, id=note, body="committed")
        await conn.commit()
        await _INSERT.execute(conn, id=dropped, body="never committed")
    async with transaction(create_sessionmaker(engine)) as session:
        assert await _COUNT.fetchval(session, id=note) == 1
        assert await _COUNT.fetchval(session, id=dropped) == 0
