"""The request: werkzeug's ``Request`` with the app's limits, and the overrides that apply them.

PERF: building a werkzeug ``Request`` costs more than the whole workflow, so the kernel reads
the environ with the lean readers of :mod:`workflowhttp.reading`; ``event.request`` builds this
full object only when someone asks for it.

This module owns the werkzeug subclass and its private overrides of werkzeug's form parsing:
the form parser bounding an urlencoded body by ``max_form_memory_size`` however it is framed,
and the multipart parser counting parts and files as it decodes them. What both this and the
lean readers need (the input guard, the bounded reader, the size and field-count checks) is
:mod:`workflowhttp.reading`'s, imported here; ``reading`` never imports this module.
"""

from __future__ import annotations

import io
from typing import IO, TYPE_CHECKING, Any, cast

from werkzeug.datastructures import Headers
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.sansio.multipart import File
from werkzeug.utils import cached_property
from werkzeug.wrappers import Request as _WerkzeugRequest

from .errors import BadRequest
from .reading import ClientInput, check_params, check_size, read_to_end

if TYPE_CHECKING:
    from .limits import Limits

__all__ = ["Request"]


class _CountingMultiPartParser(MultiPartParser):
    """werkzeug's multipart parser, refusing more parts or files than the app allows (400).

    SECURITY: parts are counted as werkzeug decodes them, so an oversized form is refused
    after at most one part more than the limit, not after reading the whole body.
    """

    def __init__(self, *args: Any, max_parts: int, max_files: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_parts = max_parts
        self._max_files = max_files
        self._parts = 0
        self._files = 0
        self._streams: list[Any] = []

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().parse(*args, **kwargs)
        except BaseException:
            for stream in self._streams:  # the files werkzeug opened before giving up
                stream.close()
            raise

    def _count_part(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise BadRequest(f"Too many form parts (at most {self._max_parts})")

    def get_part_charset(self, headers: Headers) -> str:
        self._count_part()  # called once per completed field part
        return super().get_part_charset(headers)

    def start_file_streaming(self, event: File, total_content_length: int | None) -> Any:
        self._count_part()
        self._files += 1
        if self._files > self._max_files:
            raise BadRequest(f"Too many files (at most {self._max_files})")
        stream = super().start_file_streaming(event, total_content_length)
        self._streams.append(stream)
        return stream


class _FormDataParser(FormDataParser):
    max_form_files = 100

    def _parse_urlencoded(
        self, stream: Any, mimetype: str, content_length: int | None, options: dict[str, str]
    ) -> Any:
        # SECURITY: an urlencoded form is held in memory whole, so max_form_memory_size bounds
        # the whole body (413). werkzeug checks that only against a Content-Length; a chunked
        # body (no Content-Length) was read to max_content_length whatever its size.
        limit = self.max_form_memory_size
        if limit is not None:
            if content_length is not None:
                check_size(content_length, limit, "Form data")
            data = read_to_end(stream, limit, "Form data")
            stream, content_length = io.BytesIO(data), len(data)
        return super()._parse_urlencoded(stream, mimetype, content_length, options)

    def _parse_multipart(
        self, stream: Any, mimetype: str, content_length: int | None, options: dict[str, str]
    ) -> Any:
        max_parts = self.max_form_parts or 1000
        parser = _CountingMultiPartParser(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            # werkzeug's own bound (413) stays as a backstop one part behind ours (400).
            max_form_parts=max_parts + 1,
            cls=self.cls,
            max_parts=max_parts,
            max_files=self.max_form_files,
        )
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


class Request(_WerkzeugRequest):
    """werkzeug's request with the app's :class:`~workflowhttp.Limits` applied.

    Each app makes a subclass whose class attributes carry its limits, so parsing forms and
    multipart bodies is bounded the same way as the lean readers.
    """

    form_data_parser_class = _FormDataParser
    max_params: int = 1000

    @classmethod
    def with_limits(cls, limits: Limits) -> type[Request]:
        """Return a subclass bounded by ``limits``."""
        parser = type(
            "_FormDataParser", (_FormDataParser,), {"max_form_files": limits.max_form_files}
        )
        return type(
            cls.__name__,
            (cls,),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "form_data_parser_class": parser,
                "max_content_length": limits.max_content_length,
                "max_form_memory_size": limits.max_form_memory_size,
                "max_form_parts": limits.max_form_parts,
                "max_params": limits.max_params,
            },
        )

    @cached_property
    def stream(self) -> IO[bytes]:
        """werkzeug's guarded input stream; what the server fails to read is a 400."""
        return cast(IO[bytes], ClientInput(_WERKZEUG_STREAM(self)))

    def _load_form_data(self) -> None:
        super()._load_form_data()
        # SECURITY: werkzeug bounds the body's size; this bounds the fields the app is handed,
        # the query's and the form's together (8 + 8 fields do not pass a limit of 10).
        fields = sum(len(values) for _, values in self.form.lists())
        check_params(self.environ.get("QUERY_STRING", ""), self.max_params, fields)


# werkzeug's own (uncached) getter of Request.stream, which Request.stream wraps.
_WERKZEUG_STREAM: Any = vars(_WerkzeugRequest)["stream"].fget
