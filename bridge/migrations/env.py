"""Alembic environment: runs on the connection bridge.schema hands over, or on the URL."""

from alembic import context
from sqlalchemy import Connection, create_engine

from bridge.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url", "sqlite://"))
    with engine.begin() as conn:
        _migrate(conn)
    engine.dispose()


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `idbridge db upgrade`")
run()
