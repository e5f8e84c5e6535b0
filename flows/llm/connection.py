"""What went wrong reaching a server, in words a user can act on.

The SDK's aiohttp transport reports every failed connect as a connect timeout ("Request timed
out."), even a refused connection or an unknown host, so the cause is read from the exception's
chain instead.
"""
from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator

import openai

CONNECTION_ERROR, TIMEOUT = "connection_error", "timeout"  # the reject reasons of a failed request


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _refusal_words(cause: BaseException) -> str | None:
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused (nothing listens at that host and port: is the server up?)"
    if isinstance(cause, socket.gaierror):
        return f"host name not found (DNS: {cause.strerror})"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({cause.verify_message})"
    if isinstance(cause, ssl.SSLError):
        hint = "; is the server plain http://?" if "WRONG_VERSION_NUMBER" in str(cause) else ""
        return f"TLS handshake failed ({getattr(cause, 'reason', None) or 'SSL error'}{hint})"
    if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "no route to the host (network unreachable)"
    if isinstance(cause, ConnectionResetError):
        return "the server closed the connection"
    return None


def describe(exc: BaseException, connect_s: float, timeout_s: float) -> tuple[str, str]:
    """(reject reason, words) for a request that got no HTTP answer."""
    for cause in reversed(list(_chain(exc))):  # the deepest cause says the most
        words = _refusal_words(cause)
        if words:
            return CONNECTION_ERROR, words
    names = {type(cause).__name__ for cause in _chain(exc)}
    if "ConnectTimeout" in names:
        return TIMEOUT, f"no connection within {connect_s:g} s"
    if isinstance(exc, openai.APITimeoutError) or names & {"ReadTimeout", "TimeoutError", "ServerTimeoutError"}:
        return TIMEOUT, f"no answer within {timeout_s:g} s (llm.timeout_s)"
    return CONNECTION_ERROR, f"{type(exc).__name__}: {str(exc)[:200]}"
