"""SQLite storage, from the standard library.

SECURITY/concurrency: a ``sqlite3`` connection is never shared between processes or threads.
Each request opens its own (:func:`open_connection`, a request-scoped generator provider, see
``app.py``) and its teardown closes it once the response has been sent, so gunicorn workers,
gthread threads and the test client are all safe.
Several workers write to one file through SQLite's own locking (WAL journal, 5 s busy timeout).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from .models import Author, AuthorWithBooks, Book, NewAuthor, NewBook

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS authors (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    )""",
    """CREATE TABLE IF NOT EXISTS books (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        author_id INTEGER NOT NULL REFERENCES authors(id),
        year INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS book_tags (
        book_id INTEGER NOT NULL REFERENCES books(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (book_id, tag)
    )""",
    "CREATE INDEX IF NOT EXISTS books_by_author ON books(author_id)",
)

SEED_AUTHORS = ((1, "Ursula K. Le Guin"), (2, "Italo Calvino"), (3, "Octavia E. Butler"))
SEED_BOOKS = (
    (1, "A Wizard of Earthsea", 1, 1968, ("fantasy", "classic")),
    (2, "The Left Hand of Darkness", 1, 1969, ("science-fiction", "classic")),
    (3, "The Dispossessed", 1, 1974, ("science-fiction", "utopia")),
    (4, "Invisible Cities", 2, 1972, ("classic",)),
    (5, "If on a winter's night a traveler", 2, 1979, ("metafiction",)),
    (6, "Kindred", 3, 1979, ("science-fiction", "classic")),
    (7, "Parable of the Sower", 3, 1993, ("science-fiction", "dystopia")),
)


class Database:
    """Where the bookstore lives: a SQLite file, or a private in-memory database.

    Args:
        path: A file path (its directory is created), or ``":memory:"`` for a database that
            lives as long as this object, shared by the connections of this process only.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._anchor: sqlite3.Connection | None = None
        if path == ":memory:":
            # A named shared-cache memory database lives while one connection to it is open:
            # the anchor keeps it alive for the per-request connections.
            self._target = f"file:bookstore-{uuid.uuid4().hex}?mode=memory&cache=shared"
            self._uri = True
            self._anchor = self.connect()
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._target = path
            self._uri = False

    def connect(self) -> sqlite3.Connection:
        """Open a new connection (for one request, on one thread)."""
        connection = sqlite3.connect(self._target, uri=self._uri, timeout=5.0)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    def initialize(self) -> None:
        """Create the schema, and seed an empty store; safe when several workers start at once."""
        with closing(self.connect()) as connection:
            connection.isolation_level = None  # explicit transactions below
            if self._anchor is None:
                connection.execute("PRAGMA journal_mode = WAL")
            # IMMEDIATE takes the write lock first: the second worker waits, then sees the seed.
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    connection.execute(statement)
                if connection.execute("SELECT count(*) FROM authors").fetchone()[0] == 0:
                    connection.executemany(
                        "INSERT INTO authors (id, name) VALUES (?, ?)", SEED_AUTHORS
                    )
                    for book_id, title, author_id, year, tags in SEED_BOOKS:
                        connection.execute(
                            "INSERT INTO books (id, title, author_id, year) VALUES (?, ?, ?, ?)",
                            (book_id, title, author_id, year),
                        )
                        connection.executemany(
                            "INSERT INTO book_tags (book_id, tag) VALUES (?, ?)",
                            [(book_id, tag) for tag in tags],
                        )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Let an in-memory database go."""
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None

    def __repr__(self) -> str:
        return f"Database({self.path!r})"


def open_connection(database: Database) -> Iterator[sqlite3.Connection]:
    """Provide the request's connection: opened when a service first needs it, closed once the
    response has been sent, after an error too (the code after ``yield`` is the teardown). A
    request that needs no storage opens none."""
    connection = database.connect()
    try:
        yield connection
    finally:
        connection.close()  # what was not committed is rolled back


_BOOK_COLUMNS = """
    SELECT books.id, books.title, books.year, authors.id AS author_id,
           authors.name AS author_name,
           (SELECT group_concat(tag, ',') FROM
               (SELECT tag FROM book_tags WHERE book_id = books.id ORDER BY tag)) AS tags
    FROM books JOIN authors ON authors.id = books.author_id
"""


def _book(row: sqlite3.Row) -> Book:
    return Book(
        id=row["id"],
        title=row["title"],
        author=Author(id=row["author_id"], name=row["author_name"]),
        year=row["year"],
        tags=row["tags"].split(",") if row["tags"] else [],
    )


class UnknownAuthor(LookupError):
    """A book names an author the store does not know."""


class AuthorHasBooks(Exception):
    """An author cannot be deleted while books refer to them."""


class BookStore:
    """Books: queries and changes on the request's connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def search(
        self,
        *,
        author: int | None = None,
        tag: str | None = None,
        text: str | None = None,
        year_from: int | None = None,
        year_to: int | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> tuple[list[Book], int]:
        """Return one page of the books matching every filter given, and the total count."""
        where: list[str] = []
        values: list[object] = []
        if author is not None:
            where.append("books.author_id = ?")
            values.append(author)
        if tag is not None:
            where.append("EXISTS (SELECT 1 FROM book_tags WHERE book_id = books.id AND tag = ?)")
            values.append(tag)
        if text:
            # SECURITY: LIKE wildcards in the user's text are escaped, values are bound.
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("books.title LIKE ? ESCAPE '\\'")
            values.append(f"%{escaped}%")
        if year_from is not None:
            where.append("books.year >= ?")
            values.append(year_from)
        if year_to is not None:
            where.append("books.year <= ?")
            values.append(year_to)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        total = self.connection.execute(
            f"SELECT count(*) FROM books{condition}", values
        ).fetchone()[0]
        rows = self.connection.execute(
            f"{_BOOK_COLUMNS}{condition} ORDER BY books.id LIMIT ? OFFSET ?",
            [*values, limit, offset],
        ).fetchall()
        return [_book(row) for row in rows], total

    def get(self, book_id: int) -> Book | None:
        row = self.connection.execute(f"{_BOOK_COLUMNS} WHERE books.id = ?", (book_id,)).fetchone()
        return _book(row) if row is not None else None

    def by_author(self, author_id: int) -> list[Book]:
        rows = self.connection.execute(
            f"{_BOOK_COLUMNS} WHERE books.author_id = ? ORDER BY books.year", (author_id,)
        ).fetchall()
        return [_book(row) for row in rows]

    def add(self, new: NewBook) -> Book:
        """Store a new book and return it.

        Raises:
            UnknownAuthor: ``new.author_id`` names nobody.
        """
        with self.connection:  # one transaction: the book and its tags, or nothing
            try:
                cursor = self.connection.execute(
                    "INSERT INTO books (title, author_id, year) VALUES (?, ?, ?)",
                    (new.title, new.author_id, new.year),
                )
            except sqlite3.IntegrityError:
                raise UnknownAuthor(new.author_id) from None
            book_id = cursor.lastrowid
            self.connection.executemany(
                "INSERT OR IGNORE INTO book_tags (book_id, tag) VALUES (?, ?)",
                [(book_id, tag) for tag in new.tags],
            )
        book = self.get(book_id)  # type: ignore[arg-type]
        assert book is not None
        return book

    def delete(self, book_id: int) -> bool:
        """Delete a book; return whether there was one."""
        with self.connection:
            cursor = self.connection.execute("DELETE FROM books WHERE id = ?", (book_id,))
        return cursor.rowcount > 0

    def count(self) -> int:
        return int(self.connection.execute("SELECT count(*) FROM books").fetchone()[0])


class AuthorStore:
    """Authors, on the request's connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def all(self) -> list[Author]:
        rows = self.connection.execute("SELECT id, name FROM authors ORDER BY name").fetchall()
        return [Author(id=row["id"], name=row["name"]) for row in rows]

    def get(self, author_id: int) -> Author | None:
        row = self.connection.execute(
            "SELECT id, name FROM authors WHERE id = ?", (author_id,)
        ).fetchone()
        return Author(id=row["id"], name=row["name"]) if row is not None else None

    def with_books(self, author_id: int, books: BookStore) -> AuthorWithBooks | None:
        author = self.get(author_id)
        if author is None:
            return None
        return AuthorWithBooks(id=author.id, name=author.name, books=books.by_author(author.id))

    def add(self, new: NewAuthor) -> Author | None:
        """Store a new author; ``None`` when the name is taken."""
        try:
            with self.connection:
                cursor = self.connection.execute(
                    "INSERT INTO authors (name) VALUES (?)", (new.name,)
                )
        except sqlite3.IntegrityError:
            return None
        return Author(id=int(cursor.lastrowid or 0), name=new.name)

    def delete(self, author_id: int) -> bool:
        """Delete an author; return whether there was one.

        Raises:
            AuthorHasBooks: books still refer to the author.
        """
        try:
            with self.connection:
                cursor = self.connection.execute("DELETE FROM authors WHERE id = ?", (author_id,))
        except sqlite3.IntegrityError:
            raise AuthorHasBooks(author_id) from None
        return cursor.rowcount > 0
