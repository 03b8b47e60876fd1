"""Extension objects, created unbound; the app factory binds them."""

import functools
import json

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of every model."""


db = SQLAlchemy(model_class=Base)
migrate = Migrate()

# How JSON columns are written: compact, UTF-8 as is. Smaller engine states, and an audit entry's ``data``
# (written with sorted keys) is stored exactly as the chain hashes it. Strict: NaN or Infinity is an error
# rather than text that no JSON parser (PostgreSQL's, a browser's) reads back.
compact_json = functools.partial(json.dumps, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
