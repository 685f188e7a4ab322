"""HTML pages: escaping, self-containment, chart geometry; and a real headless Chromium.

The browser tests start Chromium themselves (``chromium`` from Debian). One renders a
report with ``--screenshot`` and checks the PNG (decoded here with zlib) is not blank
and shows the status colours. The other drives Chromium over the DevTools protocol
(a small websocket client below, 127.0.0.1 only) to collect console messages,
exceptions, CSP violations and network requests while the page loads. Without
Chromium they skip - unless ``CI`` is set, where they fail.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.htmlreport import (
    Series,
    esc,
    histogram_svg,
    html_table,
    line_chart_svg,
    nice_step,
    render_report_html,
    timeline_svg,
)
from runner.report import TimelineBar, build_report
from tests.transcripts_factory import demo_run, turn, write_run

EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>\"'&"


def evil_run(tmp_path: Path) -> Path:
    records = [
        turn(scenario=EVIL, user=EVIL, reply=EVIL, checks=[("contains", False, EVIL)]),
        turn(
            scenario=EVIL,
            turn=1,
            status="error",
            error={"type": "in_band_error", "message": EVIL},
            model=EVIL,
            provider=EVIL,
        ),
    ]
    return write_run(tmp_path / "run", records, run={"endpoint": EVIL, "run_id": EVIL})


# --- pure -------------------------------------------------------------------------------


def test_esc_and_tables_escape_text() -> None:
    assert esc("<a href='x'>&</a>") == "&lt;a href=&#x27;x&#x27;&gt;&amp;&lt;/a&gt;"
    table = html_table(["h<1>"], [["<b>"], [3]], numeric=[0])
    assert "<b>" not in table and "&lt;b&gt;" in table and "h&lt;1&gt;" in table
    assert "<td class='n'>3</td>" in table


def test_report_page_escapes_everything_from_transcripts(tmp_path: Path) -> None:
    page = render_report_html(build_report(evil_run(tmp_path)))
    assert "<script" not in page
    assert "<img" not in page
    assert "onerror=alert(1)&gt;" in page  # there, but as text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_report_page_is_self_contained(tmp_path: Path) -> None:
    page = render_report_html(build_report(demo_run(tmp_path)))
    assert page.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert re.search(r"\s(src|href)\s*=", page) is None
    assert "@import" not in page and "url(" not in page
    assert "<script" not in page
    for section in ("Scenarios", "Latency", "Checks", "Timeline", "Repeats", "Slowest turns"):
        assert f"<h2>{section}</h2>" in page


def titles(svg: str) -> list[str]:
    return re.findall(r"<title>([^<]*)</title>", svg)


def test_histogram_counts_every_value_once() -> None:
    values = [10.0, 20.0, 20.0, 95.0, 140.0, 980.0, 990.0]
    svg = histogram_svg(values, label="TTFT", markers=[("p50", 95.0)])
    counted = sum(int(m) for t in titles(svg) for m in re.findall(r": (\d+) turns?$", t))
    assert counted == len(values)
    assert "p50 95 ms" in titles(svg)
    assert "TTFT (ms)" in svg and ">turns<" in svg


def test_histogram_switches_to_seconds_and_handles_empty() -> None:
    assert "Duration (s)" in histogram_svg([1000.0, 9000.0], label="Duration")
    assert "No TTFT values" in histogram_svg([], label="TTFT")


def test_timeline_bar_per_turn_coloured_by_outcome() -> None:
    bars = [
        TimelineBar("s", 0, 0, 1000.0, 400.0, "ok", 0),
        TimelineBar("s", 1, 0, 1500.0, 300.0, "error", 0),
        TimelineBar("s", 2, 0, 1900.0, None, "skipped", 0),
        TimelineBar("s", 0, 1, 5000.0, 500.0, "ok", 2),
    ]
    svg = timeline_svg(bars)
    rects = re.findall(r"<rect class='(\w+)'[^>]*><title>([^<]*)</title>", svg)
    assert [c for c, _ in rects] == ["ok", "error", "skipped", "checkfail"]
    assert rects[1][1] == "s turn 1 repeat 0: error; duration 300 ms; starts +500 ms"
    assert "2 check(s) failed" in rects[3][1]
    assert "starts +0 ms" in rects[3][1]  # each repeat's lane starts at zero
    assert ">repeat 0<" in svg and ">repeat 1<" in svg


def test_line_chart_gaps_and_tooltips() -> None:
    svg = line_chart_svg(
        ["d1", "d2", "d3", "d4"],
        [Series("p50", "#000", (1.0, 2.0, None, 4.0))],
        y_label="TTFT (ms)",
    )
    assert svg.count("<polyline") == 1  # d1-d2; d4 stands alone
    assert svg.count("<circle") == 3
    assert "p50 on d4: 4" in titles(svg)


@pytest.mark.parametrize(("span", "target", "step"), [(1000, 5, 200), (7, 5, 2), (0.3, 3, 0.1)])
def test_nice_step(span: float, target: int, step: float) -> None:
    assert nice_step(span, target) == pytest.approx(step)


# --- a real browser -----------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    reason = "chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; the browser tests must run in CI")
    pytest.skip(reason)


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows) of an 8-bit, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    width = height = ctype = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0, "unexpected PNG format"
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    prev = bytearray(stride)
    rows: list[bytes] = []
    for y in range(height):
        p = y * (stride + 1)
        kind_, line = raw[p], bytearray(raw[p + 1 : p + 1 + stride])
        if kind_ == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind_ == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind_ == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind_ == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def pixel_stats(png: bytes) -> dict[str, float]:
    width, height, bpp, rows = decode_png(png)
    assert bpp >= 3
    nonwhite = green = red = 0
    for row in rows:
        for i in range(0, len(row), bpp):
            r, g, b = row[i], row[i + 1], row[i + 2]
            if r < 245 or g < 245 or b < 245:
                nonwhite += 1
            if g > 130 and r < 60 and b < 110:
                green += 1
            if r > 190 and g < 70 and b < 70:
                red += 1
    n = width * height
    return {"nonwhite": nonwhite / n, "green": green / n, "red": red / n, "width": width}


@pytest.mark.browser
def test_chromium_screenshot_is_not_blank(tmp_path: Path) -> None:
    chromium = find_chromium()
    page = tmp_path / "report.html"
    page.write_text(render_report_html(build_report(demo_run(tmp_path / "out"))), "utf-8")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            "--force-device-scale-factor=0.5",  # a smaller PNG to decode; same layout
            page.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert shot.is_file(), f"no screenshot; chromium said: {proc.stderr[-2000:]!r}"
    stats = pixel_stats(shot.read_bytes())
    assert stats["nonwhite"] > 0.05, stats  # text, tables and charts cover the page
    assert stats["green"] > 0.002, stats  # ok bars
    assert stats["red"] > 0.0005, stats  # error bars and counts


# A minimal DevTools-protocol client: enough websocket (RFC 6455) for text frames.


class DevTools:
    def __init__(self, ws_url: str, timeout: float) -> None:
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", ws_url)
        assert m, ws_url
        host, port, path = m[1], int(m[2]), m[3]
        assert host in ("127.0.0.1", "localhost"), ws_url
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            assert len(head) < 65536, "DevTools handshake reply too long"
            chunk = self.sock.recv(4096)
            assert chunk, "DevTools closed the connection during the handshake"
            head += chunk
        status_line = head.split(b"\r\n", 1)[0]
        assert b" 101 " in status_line, status_line
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "DevTools connection closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _message(self) -> dict[str, Any]:
        parts: list[bytes] = []
        for _ in range(10_000):  # frames per message, pings included
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 9:  # ping
                self._send_frame(10, payload)
                continue
            assert opcode != 8, "DevTools closed the websocket"
            if opcode in (0, 1, 2):
                parts.append(payload)
                if b0 & 0x80:
                    result: dict[str, Any] = json.loads(b"".join(parts))
                    return result
        raise AssertionError("DevTools sent an endless message")

    def call(self, method: str, deadline: float, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg_id = self.next_id
        self._send_frame(1, json.dumps({"id": msg_id, "method": method, "params": params}).encode())
        while time.monotonic() < deadline:
            msg = self._message()
            if msg.get("id") == msg_id:
                assert "error" not in msg, msg
                return dict(msg.get("result", {}))
            if "method" in msg:
                self.events.append(msg)
        raise AssertionError(f"no reply to {method} before the deadline")

    def wait_for(self, method: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if any(e["method"] == method for e in self.events):
                return
            msg = self._message()
            if "method" in msg:
                self.events.append(msg)
        raise AssertionError(f"no {method} event before the deadline")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A headless Chromium with DevTools on 127.0.0.1; yields the port."""
    chromium = find_chromium()
    profile = tmp_path_factory.mktemp("profile")
    proc = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1280,2000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None, "chromium exited early"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)  # polling a file with a bounded deadline, not synchronising
        yield int(port_file.read_text().split()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def load_in_browser(port: int, page: Path) -> dict[str, Any]:
    """Load ``page`` in a fresh tab; return what the browser saw and a screenshot."""
    deadline = time.monotonic() + 60
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("PUT", "/json/new?about:blank")
    target = json.loads(conn.getresponse().read())
    conn.close()
    tools = DevTools(target["webSocketDebuggerUrl"], timeout=20)
    try:
        for domain in ("Runtime", "Log", "Network", "Page"):
            tools.call(f"{domain}.enable", deadline)
        tools.call("Page.navigate", deadline, url=page.as_uri())
        tools.wait_for("Page.loadEventFired", deadline)
        evaluated = tools.call(
            "Runtime.evaluate",
            deadline,
            returnByValue=True,
            expression="""JSON.stringify({
                scripts: document.scripts.length,
                images: document.images.length,
                svgs: document.querySelectorAll('svg').length,
                bars: document.querySelectorAll('svg rect').length,
                tooltips: document.querySelectorAll('svg title').length,
                title: document.title,
                height: document.documentElement.scrollHeight,
                width: Math.max(0, ...[...document.querySelectorAll('svg')].map(
                    (s) => s.getBoundingClientRect().width)),
            })""",
        )
        shot = tools.call(
            "Page.captureScreenshot",
            deadline,
            format="png",
            clip={"x": 0, "y": 0, "width": 1280, "height": 1600, "scale": 0.5},
        )
        # drain what arrived with the load; a bounded number of short reads
        tools.sock.settimeout(0.3)
        for _ in range(200):
            try:
                msg = tools._message()
            except TimeoutError:
                break
            if "method" in msg:
                tools.events.append(msg)
    finally:
        tools.close()
    return {
        "facts": json.loads(evaluated["result"]["value"]),
        "png": base64.b64decode(shot["data"]),
        "events": tools.events,
    }


def problems(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        method, params = e["method"], e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(f"exception: {params}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning"):
            out.append(f"console {params.get('type')}: {params.get('args')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in (
            "error",
            "warning",
        ):
            out.append(f"log: {params['entry'].get('text')}")
    return out


def requested(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"
    ]


@pytest.mark.browser
def test_report_renders_cleanly_in_chromium(browser: int, tmp_path: Path) -> None:
    report = build_report(demo_run(tmp_path / "out"))
    page = tmp_path / "report.html"
    page.write_text(render_report_html(report), "utf-8")
    seen = load_in_browser(browser, page)
    assert problems(seen["events"]) == []
    assert requested(seen["events"]) == [page.as_uri()]  # nothing else was fetched
    facts = seen["facts"]
    assert facts["scripts"] == 0 and facts["images"] == 0
    assert facts["title"] == f"Run report {report.run_id}"
    # two histograms, the checks chart, a timeline per scenario
    assert facts["svgs"] == 3 + len(report.scenarios)
    assert facts["bars"] >= len(report.timeline)
    assert facts["tooltips"] >= len(report.timeline)
    assert facts["width"] > 300  # the charts were laid out, not collapsed
    assert facts["height"] > 1500
    stats = pixel_stats(seen["png"])
    assert stats["width"] == 640
    assert stats["nonwhite"] > 0.05, stats
    assert stats["green"] > 0.002, stats


@pytest.mark.browser
def test_hostile_transcript_cannot_run_or_fetch_anything(browser: int, tmp_path: Path) -> None:
    page = tmp_path / "evil.html"
    page.write_text(render_report_html(build_report(evil_run(tmp_path))), "utf-8")
    seen = load_in_browser(browser, page)
    assert problems(seen["events"]) == []  # a blocked script would log a CSP violation
    assert requested(seen["events"]) == [page.as_uri()]
    assert seen["facts"]["scripts"] == 0
    assert seen["facts"]["images"] == 0


@pytest.mark.browser
def test_the_browser_harness_sees_scripts_errors_and_blocked_loads(
    browser: int, tmp_path: Path
) -> None:
    # Without this, a clean result above could mean the harness is deaf.
    noisy = tmp_path / "noisy.html"
    noisy.write_text(
        "<!DOCTYPE html><html><head><title>t</title></head><body>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>",
        "utf-8",
    )
    seen = load_in_browser(browser, noisy)
    found = problems(seen["events"])
    assert any("boom" in p for p in found), found
    assert any(p.startswith("exception") and "undefinedFunction" in p for p in found), found
    assert seen["facts"]["scripts"] == 1

    locked = tmp_path / "locked.html"
    locked.write_text(
        "<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'\"><title>t</title></head><body>"
        "<script>document.title = 'ran'</script><svg></svg></body></html>",
        "utf-8",
    )
    seen = load_in_browser(browser, locked)
    assert seen["facts"]["title"] == "t"  # the script was blocked...
    assert any("Content Security Policy" in p for p in problems(seen["events"]))  # ...loudly
