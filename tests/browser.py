"""Open a page in headless Chromium with the network cut off: which requests did it try, and what did it show?

:func:`open_offline` drives Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``, no
dependency). The page gets a browser context of its own whose proxy is a recording one on 127.0.0.1 that answers
every request with 502, so whatever the page's network stack attempts reaches it and nothing else does; the
browser's own background traffic (component updates, sign-in checks), which no flag turns off entirely, goes through
another, silent proxy, and every host name resolves to nothing. What the page asked for is recorded twice: by
DevTools (``Network.requestWillBeSent`` and ``Network.webSocketCreated`` on the page, its frames and its workers: full
URLs, ``file:`` loads of other files included) and by the recording proxy (connections to hosts no request named).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INLINE_SCHEMES = ("data", "blob", "about", "javascript")
# frames and workers the page starts are held until their requests are recorded too
AUTO_ATTACH = {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True}

# Chromium's own background traffic off, and no first-run UI; the page's requests are told apart anyway
QUIET_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--no-pings",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication,"
    "NetworkTimeServiceQuerying,OptimizationGuideModelDownloading",
]


# runs Chromium (argv[3:]) with the pipe ends argv[1] and argv[2] as its fds 3 and 4, which --remote-debugging-pipe
# reads and writes: a trampoline, as preexec_fn is unsafe in a process with threads (the proxies')
_AS_FDS_3_AND_4 = """
import fcntl, os, sys
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 10) for fd in sys.argv[1:3]]
for fd in sys.argv[1:3]:
    os.close(int(fd))
os.dup2(high[0], 3)
os.dup2(high[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) on PATH, None when there is none."""
    return next(filter(None, map(shutil.which, BROWSERS)), None)


class _Proxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy on 127.0.0.1 that records each request's target (``CONNECT host:port`` or the absolute URL of
    a plain request) and answers 502."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.targets: list[str] = []

    @property
    def url(self) -> str:
        """The proxy's address, as ``--proxy-server`` takes it."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(socketserver.StreamRequestHandler):
    """Records the request line's target, answers 502 and closes."""

    timeout = 10

    def handle(self) -> None:
        """One request: ``CONNECT host:443`` becomes ``https://host:443``."""
        with contextlib.suppress(OSError):
            method, _, rest = self.rfile.readline(65536).decode("latin-1").strip().partition(" ")
            target = rest.rpartition(" ")[0] or rest
            if method:
                self.server.targets.append(f"https://{target}" if method.upper() == "CONNECT" else target)
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@contextlib.contextmanager
def _proxy() -> Iterator[_Proxy]:
    """A running :class:`_Proxy`, in a thread, shut down on exit."""
    server = _Proxy()
    thread = threading.Thread(target=server.serve_forever, name="recording-proxy", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _DevTools:
    """The DevTools protocol over Chromium's pipe (fd 3 in, fd 4 out; NUL-terminated JSON messages)."""

    def __init__(self, to_browser: int, from_browser: int, deadline: float) -> None:
        self.to_browser, self.from_browser, self.deadline = to_browser, from_browser, deadline
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def post(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        """Send a command without waiting; its id."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self.to_browser, data) :]
        return self.next_id

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send a command and wait for its result; events that arrive meanwhile are kept in :attr:`events`."""
        command = self.post(method, params, session)
        while True:
            message = self.receive(self.deadline)
            if message is None:
                raise TimeoutError(f"Chromium did not answer {method}")
            if message.get("id") == command:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def receive(self, until: float) -> dict[str, Any] | None:
        """The next message, or None when none came by ``until`` (a ``time.monotonic()``)."""
        while b"\0" not in self.buffer:
            left = min(until, self.deadline) - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                return None
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def next_event(self, until: float) -> dict[str, Any] | None:
        """The next event (kept ones first), or None when none came by ``until``."""
        if self.events:
            return self.events.pop(0)
        while (message := self.receive(until)) is not None:
            if "method" in message:
                return message
        return None


@contextlib.contextmanager
def _chromium(arguments: list[str], profile: Path) -> Iterator[_DevTools]:
    """Chromium started with ``arguments`` and a DevTools pipe, in a process group of its own that is killed on
    exit if closing the browser did not end it."""
    executable = find_chromium()
    if executable is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    to_browser_read, to_browser = os.pipe()
    from_browser, from_browser_write = os.pipe()
    pipes = [str(to_browser_read), str(from_browser_write)]
    command = [sys.executable, "-c", _AS_FDS_3_AND_4, *pipes, executable, *QUIET_FLAGS, f"--user-data-dir={profile}"]
    command += [*arguments, "--remote-debugging-pipe"]
    log = (profile.parent / "chromium.log").open("wb")
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(to_browser_read, from_browser_write),
            start_new_session=True,
        )
    except OSError:
        for fd in (to_browser_read, to_browser, from_browser, from_browser_write):
            os.close(fd)
        log.close()
        raise
    os.close(to_browser_read)
    os.close(from_browser_write)
    devtools = _DevTools(to_browser, from_browser, deadline=time.monotonic() + 60)
    try:
        yield devtools
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            devtools.post("Browser.close")
            process.wait(timeout=10)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        os.close(to_browser)
        os.close(from_browser)
        log.close()


def _requested_url(event: dict[str, Any]) -> str | None:
    """The URL an event says the page asked for, None for other events."""
    params = event.get("params", {})
    if event["method"] == "Network.requestWillBeSent":
        return params["request"]["url"]
    if event["method"] == "Network.webSocketCreated":
        return params["url"]
    return None


def _follow(devtools: _DevTools, event: dict[str, Any]) -> None:
    """Record the requests of a frame or worker the page started too, then let it run."""
    if event["method"] != "Target.attachedToTarget":
        return
    session = event["params"]["sessionId"]
    devtools.post("Network.enable", session=session)
    devtools.post("Target.setAutoAttach", AUTO_ATTACH, session)
    devtools.post("Runtime.runIfWaitingForDebugger", session=session)


def open_offline(
    html: Path, screenshot: Path, width: int = 1280, height: int = 1600, settle_s: float = 0.5
) -> list[str]:
    """Open ``html`` in headless Chromium with no network and write a PNG ``screenshot`` of its first
    ``width`` x ``height`` pixels; return every URL the page tried to load (the page itself and ``data:``,
    ``blob:`` and ``about:`` URLs aside), in order, once each. Waits for the load event, then until ``settle_s``
    seconds pass with no request; a page that takes over 60 s in all raises :class:`TimeoutError`."""
    page = html.resolve().as_uri()
    requested: list[str] = []
    with tempfile.TemporaryDirectory(prefix="matrix-browser-") as temporary, _proxy() as recorder, _proxy() as sink:
        arguments = [
            f"--proxy-server={sink.url}",
            "--proxy-bypass-list=<-loopback>",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        with _chromium(arguments, Path(temporary, "profile")) as devtools:
            context = devtools.call(
                "Target.createBrowserContext", {"proxyServer": recorder.url, "proxyBypassList": "<-loopback>"}
            )["browserContextId"]
            target = devtools.call("Target.createTarget", {"url": "about:blank", "browserContextId": context})
            session = devtools.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
            session = session["sessionId"]
            for method, params in [
                ("Page.enable", {}),
                ("Network.enable", {}),
                ("Target.setAutoAttach", AUTO_ATTACH),
                ("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                        "mobile": False}),
            ]:  # fmt: skip
                devtools.call(method, params, session)
            devtools.call("Page.navigate", {"url": page}, session)
            loaded = False
            quiet_until = devtools.deadline
            while (event := devtools.next_event(quiet_until)) is not None:
                _follow(devtools, event)
                if (url := _requested_url(event)) is not None:
                    requested.append(url)
                    quiet_until = time.monotonic() + settle_s if loaded else quiet_until
                if event["method"] == "Page.loadEventFired" and event.get("sessionId") == session:
                    loaded, quiet_until = True, time.monotonic() + settle_s
            if not loaded:
                raise TimeoutError(f"{html} did not load in 60 s")
            image = devtools.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
            screenshot.write_bytes(base64.b64decode(image))
            devtools.call("Target.disposeBrowserContext", {"browserContextId": context})
        proxied = list(recorder.targets)
    return _merge(page, requested, proxied)


def _merge(page: str, requested: list[str], proxied: list[str]) -> list[str]:
    """DevTools' URLs, less the page and inline ones, then the proxy's targets on hosts none of those named."""
    urls = [url for url in requested if unquote(url) != unquote(page) and urlsplit(url).scheme not in INLINE_SCHEMES]
    hosts = {urlsplit(url).hostname for url in urls}
    urls += [target for target in proxied if urlsplit(target).hostname not in hosts]
    return list(dict.fromkeys(urls))


def is_blank(png: Path, tolerance: int = 16, min_fraction: float = 0.001) -> bool:
    """Whether the image is (nearly) one colour: fewer than ``min_fraction`` of its pixels differ from the most
    common colour by more than ``tolerance`` in some channel. Needs Pillow."""
    from PIL import Image, ImageChops

    with Image.open(png) as opened:
        image = opened.convert("RGB")
    pixels = image.width * image.height
    _, background = max(image.getcolors(maxcolors=pixels) or [(0, (0, 0, 0))])
    difference = ImageChops.difference(image, Image.new("RGB", image.size, background))
    channel_max = difference.split()
    differing = ImageChops.lighter(ImageChops.lighter(channel_max[0], channel_max[1]), channel_max[2])
    histogram = differing.histogram()
    return sum(histogram[tolerance + 1 :]) < min_fraction * pixels
