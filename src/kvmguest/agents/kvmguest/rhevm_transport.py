"""ovirtsdk4's Connection, bounded in time and keeping the transport's error codes.

Two gaps of ovirtsdk4 4.6 that matter to an HA agent, filled here and nowhere else:

* ``Connection._get_sso_response`` (the SSO login and logout) sets no curl timeout: a
  hung SSO endpoint blocks for ever. :class:`BoundedConnection` sends the same request
  with the connection's timeout.
* ``Connection.__wait`` turns a failed transfer into a plain ``Error`` whose only trace
  of the cause is curl's message inside a string. :class:`_Multi` keeps curl's error
  code, so that failures are told apart by code, never by message text.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import math
import re
import threading
from typing import Any
from urllib.parse import urlencode

try:
    import ovirtsdk4 as sdk
    import ovirtsdk4.types as otypes

    # Through importlib: pycurl ships no type information, and is used untyped here.
    pycurl: Any = importlib.import_module("pycurl")
    HAVE_SDK = True
except ImportError:  # the "rhevm" extra is not installed: only KVM guests can be managed
    HAVE_SDK = False

__all__ = ["HAVE_SDK", "BoundedConnection", "close_quietly", "otypes", "pycurl", "sdk"]

log = logging.getLogger("kvmguest.rhevm")

_JSON_TYPE = re.compile(r"^\s*(application|text)/json\s*(;.*)?$")

if HAVE_SDK:

    class _Multi:
        """Stands in for the SDK's CurlMulti to keep the curl error codes it discards.

        ``Connection.__wait`` turns a failed transfer into ``Error("Failed to read
        response: [...]")`` and leaves the failed handle in the multi; this keeps the code
        and frees the handle.
        """

        def __init__(self, inner: Any, sink: list[tuple[int, str]]) -> None:
            self._inner = inner
            self._sink = sink

        def info_read(self, *args: Any) -> Any:
            num_q, ok_list, err_list = self._inner.info_read(*args)
            for handle, errno, msg in err_list:
                self._sink.append((int(errno), str(msg)))
                try:
                    self._inner.remove_handle(handle)
                    handle.close()
                except pycurl.error:
                    pass
            return num_q, ok_list, err_list

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    class BoundedConnection(sdk.Connection):  # type: ignore[misc]
        """ovirtsdk4.Connection with a curl timeout on SSO and the failures' real codes."""

        def __init__(self, url: str, user: str, password: str, ca_file: str | None) -> None:
            super().__init__(
                url=url,
                username=user,
                password=password,
                ca_file=ca_file,
                insecure=False,
                debug=False,  # the SDK's debug output contains the SSO form: never
                log=None,
                timeout=1,
            )
            self.curl_errors: list[tuple[int, str]] = []
            self.sso_error: str | None = None
            self._multi: Any = _Multi(self.__dict__["_multi"], self.curl_errors)
            self.state_lock = threading.Lock()
            self.busy = False
            self.abandoned = False

        def prepare(self, seconds: float) -> None:
            """Budget the next call: the SDK hands ``_timeout`` to curl as whole seconds."""
            self._timeout = max(1, math.ceil(seconds))
            self.curl_errors.clear()
            self.sso_error = None

        def _get_sso_response(self, url: str, params: Any = "") -> Any:
            # The SDK's own version (4.6) sets no timeout at all: a hung SSO endpoint
            # would block for ever. Same request, same parsing, plus a deadline and the
            # HTTP status kept for classification.
            curl = pycurl.Curl()
            body_buf = io.BytesIO()
            headers_buf = io.BytesIO()

            def write_header(buf: bytes) -> None:
                if buf.startswith(b"HTTP/"):  # only the last response counts
                    headers_buf.truncate(0)
                    headers_buf.seek(0)
                headers_buf.write(buf)

            try:
                curl.setopt(pycurl.CUSTOMREQUEST, "POST")
                curl.setopt(pycurl.URL, url)
                curl.setopt(pycurl.NOSIGNAL, 1)
                curl.setopt(pycurl.TIMEOUT, self._timeout)
                curl.setopt(pycurl.SSL_VERIFYPEER, 1)
                curl.setopt(pycurl.SSL_VERIFYHOST, 2)
                if self._ca_file is not None:
                    curl.setopt(pycurl.CAINFO, self._ca_file)
                curl.setopt(
                    pycurl.HTTPHEADER,
                    [f"User-Agent: PythonSDK/{sdk.get_version()}", "Accept: application/json"],
                )
                curl.setopt(pycurl.COPYPOSTFIELDS, urlencode(params))
                curl.setopt(pycurl.WRITEFUNCTION, body_buf.write)
                curl.setopt(pycurl.HEADERFUNCTION, write_header)
                try:
                    curl.perform()
                except pycurl.error as e:
                    self.curl_errors.append((int(e.args[0]), str(e.args[-1])))
                    raise
                status = int(curl.getinfo(pycurl.RESPONSE_CODE))
            finally:
                curl.close()
            lines = headers_buf.getvalue().decode("ascii", "replace").split("\n")
            ctype = self._get_header_value(lines, "content-type")
            if ctype is None or not _JSON_TYPE.match(ctype):
                raise sdk.Error(f"the SSO service answered HTTP {status} without JSON", code=status)
            try:
                data = json.loads(body_buf.getvalue().decode("utf-8"))
            except ValueError:
                raise sdk.Error(
                    f"the SSO service answered HTTP {status} with bad JSON", code=status
                ) from None
            first = data[0] if isinstance(data, list) and data else data
            if not isinstance(first, dict):
                raise sdk.Error(
                    f"the SSO service answered HTTP {status} with bad JSON", code=status
                )
            if "error" in first:
                # Same reading as the SDK's _get_sso_error (OAuth and OpenID forms).
                key = "error" if "error_description" in first else "error_code"
                self.sso_error = str(first.get(key))
            elif status >= 500 or (url == self._sso_url and self._sso_token_name not in first):
                # The SDK would fail on a KeyError: say what happened instead.
                raise sdk.Error(
                    f"the SSO service answered HTTP {status} without a token", code=status
                )
            return data


def close_quietly(conn: Any, logout: bool) -> None:
    try:
        conn.close(logout=logout)
    except Exception as e:  # closing is best effort; the reason is logged without detail
        log.debug("closing the RHV-M connection failed: %s", type(e).__name__)
