"""HTTP/1.x request heads in, responses out: parsing with limits, and the wire format.

Parsing refuses with :class:`Refused`, whose response never echoes the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

from scheduler import __version__

#: Bytes of request line plus headers; more is refused with 431.
MAX_HEAD = 8192
#: Bytes of the request line (method, target, version); more is refused with 414.
MAX_REQUEST_LINE = 4096
#: Header fields per request; more is refused with 431.
MAX_HEADERS = 64
#: Methods this server knows but does not allow (405); other valid tokens get 501.
OTHER_METHODS = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
ALLOWED = "GET, HEAD"

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
# A request line is visible ASCII separated by single spaces (RFC 9112, section 3).
_LINE_BYTES = re.compile(rb"[\x21-\x7e ]*\r?")
# Field values: visible characters, spaces, tabs and obs-text; no other control bytes.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head: the method, the path (no query) and the HTTP version."""

    method: str
    path: str
    version: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Response:
    """What to send: status, body and content type (a HEAD request gets no body)."""

    code: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, code: int, text: str, *headers: tuple[str, str]) -> Response:
        return cls(code, (text + "\n").encode(), headers=headers)

    def encode(self, head_only: bool = False) -> bytes:
        """The response as bytes on the wire, ``Connection: close``."""
        lines = [
            f"HTTP/1.1 {self.code} {HTTPStatus(self.code).phrase}",
            f"Server: baton/{__version__}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        return head if head_only else head + self.body


class Refused(Exception):
    """A request answered with an error status; ``text`` never echoes the input."""

    def __init__(self, code: int, text: str, *headers: tuple[str, str]) -> None:
        super().__init__(text)
        self.response = Response.text(code, text, *headers)


def check_line_start(start: bytes | bytearray) -> None:
    """Refuse a request line, or the start of one still arriving, that cannot become valid.

    Raises:
        Refused: 414 longer than :data:`MAX_REQUEST_LINE`, 400 a byte no request line holds.
    """
    if len(start) > MAX_REQUEST_LINE:
        raise Refused(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
    if not _LINE_BYTES.fullmatch(start):
        raise Refused(400, "bad request line: only visible ASCII and single spaces")


def parse_request_line(line: bytes) -> Request:
    """Parse ``METHOD target HTTP/x.y`` (without its line end).

    Raises:
        Refused: 400 malformed (HTTP/0.9 included), 405/501 method, 414 too long, 505 version.
    """
    check_line_start(line)
    parts = line.split(b" ")
    if len(parts) == 2:
        raise Refused(400, "bad request line: HTTP/0.9 requests are not supported")
    if len(parts) != 3 or not all(parts):
        raise Refused(400, "bad request line: expected METHOD TARGET HTTP/1.1")
    method, target, version = parts
    match = _VERSION.fullmatch(version)
    if not _TOKEN.fullmatch(method) or not match:
        raise Refused(400, "bad request line: expected METHOD TARGET HTTP/1.1")
    if match.group(1) != b"1":
        raise Refused(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    name = method.decode("ascii")
    if name in OTHER_METHODS:
        raise Refused(405, f"method not allowed: use {ALLOWED}", ("Allow", ALLOWED))
    if name not in ("GET", "HEAD"):
        raise Refused(501, f"method not implemented: use {ALLOWED}", ("Allow", ALLOWED))
    text = target.decode("ascii")
    if text.startswith(("http://", "https://")):  # absolute form, as sent to proxies
        slash = text.find("/", text.index("//") + 2)
        text = text[slash:] if slash >= 0 else "/"
    if not text.startswith("/"):
        raise Refused(400, "bad request target: expected a path starting with /")
    path = text.split("?", 1)[0].split("#", 1)[0]
    return Request(name, path, (int(match.group(1)), int(match.group(2))))


def parse_head(head: bytes) -> Request:
    """Parse a request head (up to, not including, the empty line that ends it).

    Raises:
        Refused: as :func:`parse_request_line`, or 400 for a malformed header field, 431
            for too many of them.
    """
    line, *fields = head.split(b"\n")
    request = parse_request_line(line.removesuffix(b"\r"))
    if len(fields) > MAX_HEADERS:
        raise Refused(431, f"more than {MAX_HEADERS} header fields")
    for raw in fields:
        item = raw.removesuffix(b"\r")
        name, colon, value = item.partition(b":")
        if not colon or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise Refused(400, "bad header field")
    return request
