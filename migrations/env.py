"""Alembic environment: the URL comes from the caller, else IMGVEC_DB / IMGVEC_LIBRARY."""

from alembic import context

from imgvec.config import resolve_paths
from imgvec.storage.engine import make_engine, migration_connection
from imgvec.storage.schema import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or resolve_paths().db_url


def _configure(**kwargs) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
        **kwargs,
    )


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    else:
        engine = make_engine(_url())
        with migration_connection(engine) as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        engine.dispose()
