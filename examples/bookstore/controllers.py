"""The bookstore's routes: books, authors, the home page and ``/health``."""

from __future__ import annotations

import html
import sqlite3
from typing import Annotated
from urllib.parse import urlencode

import msgspec

from workflowhttp import (
    Conflict,
    HTMLResponse,
    HttpEvent,
    NotFound,
    ParametersFailed,
    Query,
    http,
)

from .models import Author, AuthorWithBooks, Book, Id, NewAuthor, NewBook, Page, Year
from .storage import AuthorHasBooks, AuthorStore, BookStore, UnknownAuthor

Limit = Annotated[int, Query(), msgspec.Meta(ge=1, le=100)]
Offset = Annotated[int, Query(), msgspec.Meta(ge=0, le=1_000_000)]


@http.controller("/books")
class BookController:
    """``/books``: anyone may read and add books; deleting one is for admins."""

    def __init__(self, books: BookStore) -> None:  # one controller per request, injected
        self.books = books

    @http.GET("/").name("books.list").description("list books: filters and pagination")
    def index(
        self,
        author: Id | None = None,
        tag: str | None = None,
        q: str | None = None,
        year_from: Year | None = None,
        year_to: Year | None = None,
        limit: Limit = 10,
        offset: Offset = 0,
    ) -> Page:
        filters = {"author": author, "tag": tag, "q": q, "year_from": year_from, "year_to": year_to}
        items, total = self.books.search(
            author=author,
            tag=tag,
            text=q,
            year_from=year_from,
            year_to=year_to,
            limit=limit,
            offset=offset,
        )
        following = None
        if offset + limit < total:
            query = {k: v for k, v in filters.items() if v is not None}
            query.update(limit=limit, offset=offset + limit)
            following = f"/books?{urlencode(query)}"
        return Page(items=items, total=total, limit=limit, offset=offset, next=following)

    @http.GET("/{id}").name("books.show").description("one book")
    def show(self, id: Id) -> Book:
        book = self.books.get(id)
        if book is None:
            raise NotFound(f"No book with id {id}")
        return book

    @http.POST("/").name("books.create").description("add a book (JSON body)")
    def create(self, book: NewBook) -> tuple[Book, int, dict[str, str]]:
        try:
            created = self.books.add(book)
        except UnknownAuthor:
            # The same 400 shape as a body that fails validation: one error at its path.
            raise ParametersFailed(
                [{"path": "author_id", "message": f"No author with id {book.author_id}"}]
            ) from None
        return created, 201, {"Location": f"/books/{created.id}"}

    @http.DELETE("/{id}").group("admin").name("books.delete").description("delete a book")
    def delete(self, id: Id) -> None:
        if not self.books.delete(id):
            raise NotFound(f"No book with id {id}")
        # None renders as 204 No Content


@http.controller("/authors")
class AuthorController:
    """``/authors``: read and add authors; deleting one is for admins."""

    def __init__(self, authors: AuthorStore, books: BookStore) -> None:
        self.authors = authors
        self.books = books

    @http.GET("/").name("authors.list").description("list authors")
    def index(self) -> list[Author]:
        return self.authors.all()

    @http.GET("/{id}").name("authors.show").description("an author and their books")
    def show(self, id: Id) -> AuthorWithBooks:
        author = self.authors.with_books(id, self.books)
        if author is None:
            raise NotFound(f"No author with id {id}")
        return author

    @(
        http.POST("/")
        .name("authors.create")
        .description("add an author (JSON or form body)")
        .data("responses", {409: "An author of that name exists already."})
    )
    def create(self, author: NewAuthor) -> tuple[Author, int, dict[str, str]]:
        created = self.authors.add(author)
        if created is None:
            raise Conflict(f"An author named {author.name!r} exists already")
        return created, 201, {"Location": f"/authors/{created.id}"}

    @(
        http.DELETE("/{id}")
        .group("admin")
        .name("authors.delete")
        .description("delete an author")
        .data("responses", {409: "The author has books: delete them first."})
    )
    def delete(self, id: Id) -> None:
        try:
            deleted = self.authors.delete(id)
        except AuthorHasBooks:
            raise Conflict("Delete the author's books first") from None
        if not deleted:
            raise NotFound(f"No author with id {id}")


@http.GET("/").name("home").description("the home page: the route table")
def home(event: HttpEvent) -> HTMLResponse:
    rows = "\n".join(
        f"<li><code>{html.escape(', '.join(route.methods))} {html.escape(route.path)}</code>"
        f" {html.escape(route.description)}</li>"
        for route in event.app.routes
    )
    # Every value is escaped above: a page is HTML only through HTMLResponse.
    return HTMLResponse(
        f"<!doctype html>\n<title>Bookstore</title>\n<h1>Bookstore</h1>\n<ul>\n{rows}\n</ul>\n"
    )


@http.GET("/health").name("health").description("liveness: the database answers")
def health(connection: sqlite3.Connection) -> dict[str, object]:
    books = connection.execute("SELECT count(*) FROM books").fetchone()[0]
    return {"status": "ok", "books": books}
