"""A small bookstore API built with workflowhttp: books, authors, an admin token, SQLite.

Serve it with ``python3 -m workflowhttp serve examples.bookstore.app:app``; the database is
the file named by ``BOOKSTORE_DB`` (default: ``workflowhttp-bookstore.sqlite3`` in the
system's temp directory), the admin token the value of ``BOOKSTORE_ADMIN_TOKEN``.
"""
