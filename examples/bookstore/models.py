"""The bookstore's documents: what the API accepts and what it returns."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import msgspec

# SECURITY: a Python int is unbounded, SQLite's is 64 bits: without a bound, an id like
# 9223372036854775808 would make sqlite3 raise OverflowError (a 500). Bound every integer
# that comes from a client.
Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=30, pattern=r"^[a-z0-9-]+$")]
Year = Annotated[int, msgspec.Meta(ge=1450, le=2100)]


class Author(msgspec.Struct):
    id: int
    name: str


class Book(msgspec.Struct):
    id: int
    title: str
    author: Author
    year: int
    tags: list[str]


class Page(msgspec.Struct):
    """One page of a listing; ``next`` is the URL of the following page, if any."""

    items: list[Book]
    total: int
    limit: int
    offset: int
    next: str | None


class AuthorWithBooks(msgspec.Struct):
    id: int
    name: str
    books: list[Book]


class NewBook(msgspec.Struct, forbid_unknown_fields=True):
    """The JSON body of ``POST /books``."""

    title: Title
    author_id: Id
    year: Year
    tags: list[Tag] = []


@dataclasses.dataclass
class NewAuthor:
    """The JSON (or form) body of ``POST /authors``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
