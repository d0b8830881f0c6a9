"Gathering against a real HTTP server on 127.0.0.1: every refusal reason, deadlines, caps, retries and re-runs."
import io
import socket
import ssl
import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

import foodvision.gather as G
from foodvision.gather import (DDGSSearch, FetchFailed, FetchPolicy, ImageHit, SearchFailed, StaticSearch, fetch_image,
                               format_report, gather, read_classes, search_library)
from foodvision.store import Store, StoreError

pytestmark = pytest.mark.timeout(60)

MB = 1_000_000
FAST = dict(allow_loopback=True, connect_timeout=1, read_timeout=1, deadline=2, max_bytes=MB)


def encode(im, fmt):
    buf = io.BytesIO(); im.save(buf, fmt); return buf.getvalue()


def png_declaring(width, height):
    "A small PNG whose header declares `width` x `height` pixels: a decompression bomb."
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')


GOOD_JPG = encode(Image.new('RGB', (48, 32), 'red'), 'JPEG')
GOOD_PNG = encode(Image.new('RGB', (30, 30), 'blue'), 'PNG')
LATE_JPG = encode(Image.new('RGB', (20, 40), 'green'), 'JPEG')
BOMB_PNG = png_declaring(100_000, 100_000)


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'  # bodies without Content-Length end when the connection closes

    def log_message(self, *args): pass

    def send(self, status, ctype=None, body=b'', length=True, **headers):
        self.send_response(status)
        if ctype: self.send_header('Content-Type', ctype)
        if length: self.send_header('Content-Length', str(len(body)))
        for k, v in headers.items(): self.send_header(k.replace('_', '-'), v)
        self.end_headers()
        self.wfile.write(body)

    def stream(self, total, declare_length):
        "Send `total` bytes of a 'JPEG' in 64 kB pieces, made as we go; stop when the client hangs up."
        self.send_response(200); self.send_header('Content-Type', 'image/jpeg')
        if declare_length: self.send_header('Content-Length', str(total))
        self.end_headers()
        piece = b'\0' * 65536
        try:
            while self.server.sent[self.path] < total and not self.server.stop.is_set():
                self.wfile.write(piece); self.server.sent[self.path] += len(piece)
        except OSError: pass  # the client stopped reading: that is the point

    def drip(self):
        self.send_response(200); self.send_header('Content-Type', 'image/jpeg'); self.end_headers()
        try:
            for _ in range(300):  # one byte every 0.1 s, for up to 30 s
                if self.server.stop.is_set(): return
                self.wfile.write(b'\xff'); self.wfile.flush(); time.sleep(0.1)
        except OSError: pass

    def drip_headers(self):
        self.wfile.write(b'HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n'); self.wfile.flush()
        try:
            for _ in range(300):
                if self.server.stop.is_set(): return
                self.wfile.write(b'X-Slow: 1\r\n'); self.wfile.flush(); time.sleep(0.1)
        except OSError: pass

    def do_GET(self):
        server, path = self.server, self.path
        server.requests[path] += 1
        server.hosts.append(self.headers.get('Host'))
        if path == '/good.jpg': return self.send(200, 'image/jpeg', GOOD_JPG)
        if path == '/good.png': return self.send(200, 'image/png', GOOD_PNG)
        if path == '/corrupt.jpg': return self.send(200, 'image/jpeg', b'\xff\xd8\xff\xe0' + bytes(range(256)) * 8)
        if path == '/page.jpg': return self.send(200, 'text/html; charset=utf-8', b'<html><body>a gallery</body></html>')
        if path == '/bomb.png': return self.send(200, 'image/png', BOMB_PNG)
        if path == '/huge.jpg': return self.stream(50 * MB, declare_length=False)
        if path == '/huge-declared.jpg': return self.stream(50 * MB, declare_length=True)
        if path == '/drip.jpg': return self.drip()
        if path == '/drip-headers.jpg': return self.drip_headers()
        if path == '/to-private': return self.send(302, Location='http://10.0.0.1/x.jpg')
        if path == '/to-router': return self.send(302, Location='http://192.168.1.1/')
        if path == '/to-metadata': return self.send(307, Location='http://169.254.169.254/latest/meta-data/')
        if path == '/to-mapped': return self.send(302, Location='http://[::ffff:10.0.0.1]/x.jpg')
        if path == '/loop': return self.send(302, Location='/loop')
        if path == '/hop': return self.send(301, Location='/good.png')
        if path == '/busy-once.jpg':
            if server.requests[path] == 1: return self.send(429, 'text/plain', b'slow down', Retry_After='0')
            return self.send(200, 'image/jpeg', LATE_JPG)
        if path == '/always-busy.jpg': return self.send(503, 'text/plain', b'busy', Retry_After='999')
        return self.send(404, 'text/plain', b'not found')


@pytest.fixture(scope='module')
def server():
    srv = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    srv.daemon_threads = True
    srv.requests, srv.sent, srv.hosts, srv.stop = Counter(), Counter(), [], threading.Event()
    srv.handle_error = lambda request, address: None  # clients hanging up mid-body are expected here
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    srv.base = f'http://127.0.0.1:{srv.server_address[1]}'
    yield srv
    srv.stop.set(); srv.shutdown(); srv.server_close()


@pytest.fixture
def connections(monkeypatch):
    "Every address a download connects to; any non-loopback connection fails the test before traffic is sent."
    seen = []
    class SpySocket(socket.socket):
        def connect(self, address):
            seen.append(address[:2])
            assert address[0] in ('127.0.0.1', '::1'), f"tried to connect to {address}"
            return super().connect(address)
    monkeypatch.setattr(G.socket, 'socket', SpySocket)
    return seen


def fetch_reason(url, **policy):
    with pytest.raises(FetchFailed) as e: fetch_image(url, FetchPolicy(**{**FAST, **policy}), sleep=lambda s: None)
    return e.value.reason


# --- the whole gather ---------------------------------------------------------------------------------------------

GOOD = ['/good.jpg', '/good.png', '/busy-once.jpg']
PAGE = 'https://blog.example/best-pizza'  # the page /good.jpg was 'found on'
BAD = {'/corrupt.jpg': 'undecodable', '/page.jpg': 'not_image_content_type', '/huge.jpg': 'too_large',
       '/drip.jpg': 'timeout', '/to-private': 'not_public_address', '/to-router': 'not_public_address',
       '/missing.jpg': 'http_404', '/bomb.png': 'decompression_bomb', '/always-busy.jpg': 'http_503',
       '/loop': 'too_many_redirects'}


@pytest.fixture(scope='module')
def gathered(server, tmp_path_factory):
    store = Store.create(tmp_path_factory.mktemp('gather')/'store')
    urls = [server.base + p for p in GOOD[1:] + list(BAD)] + ['ftp://127.0.0.1/x.jpg']
    search = StaticSearch({'pizza food photo': [ImageHit(server.base + GOOD[0], PAGE, 'pizza'), *urls]})
    start = time.monotonic()
    report = gather(store, ['pizza'], search, allow_loopback=True, max_bytes=MB, timeout=1, deadline=2, workers=6,
                    retries=1, max_retry_after=0.1)
    elapsed = time.monotonic() - start
    return store, report, search, elapsed


def test_gather_adds_exactly_the_good_images(gathered, server):
    store, report, _, _ = gathered
    items = store.items()
    assert sorted(items.source_url) == sorted([PAGE] + [server.base + p for p in GOOD[1:]])  # the page, when known
    assert set(items.label) == {'pizza'} and set(items.source) == {'web'} and set(items.licence) == {'unknown'}
    assert report.added == Counter(pizza=3)
    stored = {u: (store.path/f).read_bytes() for u, f in zip(items.source_url, items.file)}
    assert stored[PAGE] == GOOD_JPG and stored[server.base + '/good.png'] == GOOD_PNG
    assert stored[server.base + '/busy-once.jpg'] == LATE_JPG


def test_gather_counts_every_failure_by_reason(gathered, server):
    _, report, _, elapsed = gathered
    expected = Counter(BAD.values()) + Counter(bad_scheme=1)
    assert report.failures == expected
    by_url = {url: reason for _, url, reason, _ in report.failed}
    assert by_url == {**{server.base + p: r for p, r in BAD.items()}, 'ftp://127.0.0.1/x.jpg': 'bad_scheme'}
    assert elapsed < 15, elapsed  # the drip was cut off by its 2 s deadline
    assert 'failed timeout: 1\n    e.g. ' + server.base + '/drip.jpg' in format_report(report)


def test_429_is_retried_then_succeeds(gathered, server):
    assert server.requests['/busy-once.jpg'] == 2
    assert server.requests['/always-busy.jpg'] == 2  # one retry, then given up as http_503


def test_rerun_adds_nothing_and_skips_stored_urls(gathered, server):
    store, _, search, _ = gathered
    before = Counter(server.requests)
    again = gather(store, ['pizza'], search, allow_loopback=True, max_bytes=MB, timeout=1, deadline=1, workers=6,
                   retries=0, progress=False)
    assert sum(again.added.values()) == 0 and again.skipped == Counter(pizza=3)
    assert len(store.items()) == 3
    assert all(server.requests[p] == before[p] for p in GOOD)  # not downloaded again (/good.jpg: known from the ledger)
    assert len(search.calls) == 1  # the search came from the cache


def test_same_content_from_a_new_url_is_a_duplicate(gathered, server):
    store, _, _, _ = gathered
    search = StaticSearch({'pizza again': [server.base + '/hop']})  # a new query: the cache has the first one
    report = gather(store, ['pizza'], search, query='{} again', allow_loopback=True, timeout=1, deadline=2, progress=False)
    assert report.failures == Counter(duplicate=1) and len(store.items()) == 3


# --- single downloads ---------------------------------------------------------------------------------------------

def test_loopback_is_refused_without_opt_in(server, connections):
    assert fetch_reason(server.base + '/good.jpg', allow_loopback=False) == 'not_public_address'
    assert fetch_reason('http://localhost:1/good.jpg', allow_loopback=False) == 'not_public_address'
    assert connections == []
    assert fetch_image(server.base + '/good.jpg', FetchPolicy(**FAST)) == GOOD_JPG


@pytest.mark.parametrize('path', ['/to-private', '/to-router', '/to-metadata', '/to-mapped'])
def test_redirect_to_private_address_is_refused_before_connecting(server, connections, path):
    assert fetch_reason(server.base + path) == 'not_public_address'
    assert connections == [('127.0.0.1', server.server_address[1])]  # only the first hop, to our server


def test_private_and_mixed_dns_answers_are_refused(monkeypatch, connections):
    answers = {'evil.test': ['10.0.0.5'], 'mixed.test': ['8.8.8.8', '192.168.0.10'], 'meta.test': ['fe80::1']}
    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, '', (a, port)) for a in answers[host]]
    monkeypatch.setattr(G.socket, 'getaddrinfo', fake_getaddrinfo)
    for host in answers: assert fetch_reason(f'http://{host}/x.jpg') == 'not_public_address'
    assert connections == []


def test_connects_to_the_checked_address_with_the_host_header(server, monkeypatch, connections):
    port, calls = server.server_address[1], []
    def rebinding_dns(host, p, *args, **kwargs):  # answers loopback once, then a private address
        calls.append(host)
        address = '127.0.0.1' if len(calls) == 1 else '10.0.0.1'
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, '', (address, p))]
    monkeypatch.setattr(G.socket, 'getaddrinfo', rebinding_dns)
    assert fetch_image(f'http://images.test:{port}/good.jpg', FetchPolicy(**FAST)) == GOOD_JPG
    assert calls == ['images.test'] and connections == [('127.0.0.1', port)]
    assert server.hosts[-1] == f'images.test:{port}'


def test_https_checks_the_certificate_against_the_host_name(server, monkeypatch, connections):
    assert G._tls_context().check_hostname and G._tls_context().verify_mode == ssl.CERT_REQUIRED
    names = []
    class RecordingContext:
        def wrap_socket(self, sock, server_hostname=None):
            names.append(server_hostname); sock.close(); raise ssl.SSLCertVerificationError('hostname mismatch')
    monkeypatch.setattr(G, '_tls_context', lambda: RecordingContext())
    monkeypatch.setattr(G.socket, 'getaddrinfo', lambda h, p, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, '', ('127.0.0.1', p))])
    assert fetch_reason(f'https://images.test:{server.server_address[1]}/good.jpg') == 'tls_error'
    assert names == ['images.test'] and connections == [('127.0.0.1', server.server_address[1])]


def test_real_tls_handshake_with_a_plain_server_fails_cleanly(server):
    assert fetch_reason(f'https://127.0.0.1:{server.server_address[1]}/good.jpg') == 'tls_error'


def test_slow_drip_is_cut_off_by_the_deadline(server):
    start = time.monotonic()
    assert fetch_reason(server.base + '/drip.jpg', deadline=1.0, read_timeout=5) == 'timeout'
    assert time.monotonic() - start < 2.5


def test_slow_headers_are_cut_off_by_the_deadline(server):
    start = time.monotonic()
    assert fetch_reason(server.base + '/drip-headers.jpg', deadline=1.0, read_timeout=5) == 'timeout'
    assert time.monotonic() - start < 2.5


@pytest.mark.parametrize('address, public', [
    ('8.8.8.8', True), ('2606:4700:4700::1111', True), ('10.0.0.1', False), ('172.16.5.4', False),
    ('192.168.1.1', False), ('127.0.0.1', False), ('169.254.169.254', False), ('100.64.0.1', False),
    ('224.0.0.1', False), ('0.0.0.0', False), ('255.255.255.255', False), ('::1', False), ('::', False),
    ('fe80::1', False), ('fd00::1', False), ('ff02::1', False), ('::ffff:10.0.0.1', False),
    ('::ffff:127.0.0.1', False), ('::ffff:8.8.8.8', True), ('2002:c0a8:101::1', False), ('64:ff9b::a00:1', False)])
def test_only_public_addresses_are_allowed(address, public):
    assert G.is_public_address(address) is public
    assert G.is_public_address(address, allow_loopback=True) is (public or address in ('127.0.0.1', '::1', '::ffff:127.0.0.1'))


def test_body_cap_is_enforced_while_streaming(server):
    server.sent['/huge.jpg'] = 0
    assert fetch_reason(server.base + '/huge.jpg', max_bytes=MB) == 'too_large'
    time.sleep(0.2)
    assert server.sent['/huge.jpg'] < 20 * MB  # we hung up long before 50 MB


def test_declared_length_over_the_cap_is_refused_before_reading(server):
    with pytest.raises(FetchFailed, match='Content-Length') as e:
        fetch_image(server.base + '/huge-declared.jpg', FetchPolicy(**FAST))
    assert e.value.reason == 'too_large'


def test_retry_after_is_honoured_up_to_a_cap(server):
    waits = []
    with pytest.raises(FetchFailed) as e:
        fetch_image(server.base + '/always-busy.jpg', FetchPolicy(**FAST, retries=2, max_retry_after=1.5), sleep=waits.append)
    assert e.value.reason == 'http_503' and waits == [1.5, 1.5]  # Retry-After: 999, capped


def test_bad_schemes_are_refused(connections):
    for url in ['ftp://example.com/a.jpg', 'file:///etc/passwd', 'data:image/png;base64,AAAA', 'gopher://x/']:
        assert fetch_reason(url) == 'bad_scheme'
    assert connections == []


# --- search ---------------------------------------------------------------------------------------------------------

class FailingClient:
    "A stand-in for `DDGS` that raises the library's own exception (optionally only for some queries)."
    def __init__(self, fail=lambda query: True): self.calls, self.fail = [], fail
    def images(self, query, **kwargs):
        self.calls.append(query)
        if self.fail(query): raise search_library()[1]('Ratelimit')
        return [dict(title='t', image=f'http://127.0.0.1:9/{query}.jpg', url='http://blog.example/')]


def test_search_backs_off_then_gives_up_cleanly():
    waits = []
    search = DDGSSearch(FailingClient(), tries=3, base_delay=1.0, max_delay=10, sleep=waits.append)
    with pytest.raises(SearchFailed, match='after 3 tries'): search.search('pizza food photo', 10)
    assert len(search.client.calls) == 3 and len(waits) == 2
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0  # exponential, with jitter


def test_failed_search_is_counted_and_other_classes_continue(tmp_path, server):
    store = Store.create(tmp_path/'store')
    client = FailingClient(fail=lambda query: query.startswith('ramen'))
    report = gather(store, ['ramen', 'pizza'], DDGSSearch(client, tries=2, sleep=lambda s: None), progress=False,
                    timeout=1, deadline=1)
    assert report.failures['search_failed'] == 1 and report.found == Counter(pizza=1)
    assert report.failures['not_public_address'] == 1  # pizza's hit was tried (and refused: no loopback opt-in)
    assert client.calls == ['ramen food photo', 'ramen food photo', 'pizza food photo']


def test_read_classes(tmp_path):
    f = tmp_path/'classes.txt'
    f.write_text('# foods\npizza\n\n  pad thai  # noodles\npizza\n')
    assert read_classes(f) == ['pizza', 'pad thai']
    f.write_text('pizza\n../etc\n')
    with pytest.raises(StoreError, match='line 2'): read_classes(f)
