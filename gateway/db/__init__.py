"""Database access: typed models, engine setup and migrations."""

from gateway.db.base import Base
from gateway.db.engine import make_engine, make_sessionmaker, upgrade

__all__ = ["Base", "make_engine", "make_sessionmaker", "upgrade"]
