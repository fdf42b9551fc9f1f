"""`serve`'s composition closes what it opens: every SQLAlchemy engine (connection pool) that
wiring.build_archive creates is disposed when the archive closes (the deletion index that
DICOMweb, the archive viewer and the trash purge use was opened three times and never
closed, nor was the CA's trust store). In process, on loopback ports, SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import HOST, free_port
from sqlalchemy.engine import Engine

from securepacs.settings import load
from securepacs.wiring import build_archive

pytestmark = [pytest.mark.integration]


def test_every_pool_build_archive_opens_is_disposed_on_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[Engine] = []
    disposed: set[int] = set()
    create_engine = sa.create_engine

    def recording(*args: object, **kwargs: object) -> Engine:
        engine = create_engine(*args, **kwargs)  # type: ignore[call-overload]
        created.append(engine)
        return engine

    def on_dispose(engine: Engine) -> None:
        disposed.add(id(engine))

    monkeypatch.setattr(sa, "create_engine", recording)
    sa.event.listen(Engine, "engine_disposed", on_dispose)
    try:
        settings = load(None, overrides={
            "data_dir": tmp_path / "data", "host": HOST, "port": free_port(),
            "enroll_port": free_port(), "viewer_port": free_port(),
            "dicomweb_port": free_port()})
        archive = build_archive(settings)
        assert archive.viewer is not None and archive.dicomweb is not None
        try:
            archive.index.count_instances()
        finally:
            archive.viewer.server_close()
            archive.dicomweb.server_close()
            archive.enrolment.server_close()  # type: ignore[union-attr]
            for listener in archive.server.listeners:
                listener.server_close()
            if archive.audit is not None:
                archive.audit.close()
            archive.close()
        left = [e for e in created if id(e) not in disposed]
        assert created and not left, [str(e.url) for e in left]
    finally:
        sa.event.remove(Engine, "engine_disposed", on_dispose)
