"Gathering against a real HTTP server on 127.0.0.1: every refusal reason, deadlines, caps, retries and re-runs."
import io
import json
import queue
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

import foodvision.fetch as F
import foodvision.gather as G
from foodvision.fetch import FetchFailed, FetchPolicy, fetch_image
from foodvision.gather import format_report, gather, read_classes
from foodvision.search import DDGSSearch, ImageHit, SearchFailed, StaticSearch, search_library
from foodvision.store import Store, StoreError, read_lines

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
        "Send `total` bytes of a 'JPEG' in 64 kB pieces, made as we go; note what was sent if the client hangs up."
        self.send_response(200); self.send_header('Content-Type', 'image/jpeg')
        if declare_length: self.send_header('Content-Length', str(total))
        self.end_headers()
        piece, sent = b'\0' * 65536, 0
        try:
            while sent < total and not self.server.stop.is_set():
                self.wfile.write(piece); sent += len(piece)
        except OSError: self.server.hangups(self.path).put(sent)  # the client stopped reading: that is the point

    def drip(self, piece):
        "Send `piece` every 0.1 s, 300 times (30 s); note how many were sent if the client hangs up first."
        sent = 0
        try:
            for _ in range(300):
                if self.server.stop.is_set(): return
                self.wfile.write(piece); self.wfile.flush(); sent += 1; time.sleep(0.1)
        except OSError: self.server.hangups(self.path).put(sent)

    def do_GET(self):
        server, path = self.server, self.path.split('?')[0]  # a query only tells one test's requests from another's
        server.requests[path] += 1
        server.hosts.append(self.headers.get('Host'))
        if path == '/good.jpg': return self.send(200, 'image/jpeg', GOOD_JPG)
        if path == '/good.png': return self.send(200, 'image/png', GOOD_PNG)
        if path == '/corrupt.jpg': return self.send(200, 'image/jpeg', b'\xff\xd8\xff\xe0' + bytes(range(256)) * 8)
        if path == '/page.jpg': return self.send(200, 'text/html; charset=utf-8', b'<html><body>a gallery</body></html>')
        if path == '/bomb.png': return self.send(200, 'image/png', BOMB_PNG)
        if path == '/huge.jpg': return self.stream(50 * MB, declare_length=False)
        if path == '/huge-declared.jpg': return self.stream(50 * MB, declare_length=True)
        if path == '/drip.jpg':
            self.send_response(200); self.send_header('Content-Type', 'image/jpeg'); self.end_headers()
            return self.drip(b'\xff')
        if path == '/drip-headers.jpg':
            self.wfile.write(b'HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n')
            return self.drip(b'X-Slow: 1\r\n')
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


class Server(ThreadingHTTPServer):
    "The test server: counts requests per path, keeps Host headers, and notes each client that hung up mid-response."
    daemon_threads = True
    def __init__(self):
        super().__init__(('127.0.0.1', 0), Handler)
        self.requests, self.hosts, self.stop, self.lock, self.hung = Counter(), [], threading.Event(), threading.Lock(), {}
        self.base = f'http://127.0.0.1:{self.server_address[1]}'
    def hangups(self, path:str)->queue.Queue:
        "What the handler of `path` (query included) had sent each time a client hung up on it."
        with self.lock: return self.hung.setdefault(path, queue.Queue())
    def handle_error(self, request, address): pass  # clients hanging up mid-body are expected here


def hung_up(server, path:str)->int:
    "What `path`'s handler had sent when the client hung up; fails if the response ran to its end instead."
    try: return server.hangups(path).get(timeout=45)  # the handler notices at its next write; a full drip lasts 30 s
    except queue.Empty: raise AssertionError(f"the client never hung up on {path}") from None


@pytest.fixture(scope='module')
def server():
    srv = Server()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
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
    monkeypatch.setattr(F.socket, 'socket', SpySocket)
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
    report = gather(store, ['pizza'], search, allow_loopback=True, max_bytes=MB, timeout=1, deadline=2, workers=6,
                    retries=1, max_retry_after=0.1)
    return store, report, search


def test_gather_adds_exactly_the_good_images(gathered, server):
    store, report, _ = gathered
    items = store.items()
    assert sorted(items.source_url) == sorted([PAGE] + [server.base + p for p in GOOD[1:]])  # the page, when known
    assert set(items.label) == {'pizza'} and set(items.source) == {'web'} and set(items.licence) == {'unknown'}
    assert report.added == Counter(pizza=3)
    stored = {u: (store.path/f).read_bytes() for u, f in zip(items.source_url, items.file)}
    assert stored[PAGE] == GOOD_JPG and stored[server.base + '/good.png'] == GOOD_PNG
    assert stored[server.base + '/busy-once.jpg'] == LATE_JPG
    ledger = read_lines(G._ledger_path(store))
    assert sorted(e['item_id'] for e in ledger if e['outcome'] == 'added') == sorted(items.id)  # the ids the store reported


def test_gather_counts_every_failure_by_reason(gathered, server):
    _, report, _ = gathered
    expected = Counter(BAD.values()) + Counter(bad_scheme=1)
    assert report.failures == expected
    by_url = {url: reason for _, url, reason, _ in report.failed}
    assert by_url == {**{server.base + p: r for p, r in BAD.items()}, 'ftp://127.0.0.1/x.jpg': 'bad_scheme'}
    assert hung_up(server, '/drip.jpg') < 300  # a 'timeout' with a byte every 0.1 s and 1 s reads: the deadline cut the drip off
    assert 'failed timeout: 1\n    e.g. ' + server.base + '/drip.jpg' in format_report(report)


def test_429_is_retried_then_succeeds(gathered, server):
    assert server.requests['/busy-once.jpg'] == 2
    assert server.requests['/always-busy.jpg'] == 2  # one retry, then given up as http_503


def test_rerun_adds_nothing_and_skips_stored_urls(gathered, server):
    store, _, search = gathered
    before = Counter(server.requests)
    again = gather(store, ['pizza'], search, allow_loopback=True, max_bytes=MB, timeout=1, deadline=1, workers=6,
                   retries=0, progress=False)
    assert sum(again.added.values()) == 0 and again.skipped == Counter(pizza=3)
    assert len(store.items()) == 3
    assert all(server.requests[p] == before[p] for p in GOOD)  # not downloaded again (/good.jpg: known from the ledger)
    assert len(search.calls) == 1  # the search came from the cache


def test_same_content_from_a_new_url_is_a_duplicate(gathered, server):
    store, _, _ = gathered
    search = StaticSearch({'pizza again': [server.base + '/hop']})  # a new query: the cache has the first one
    report = gather(store, ['pizza'], search, query='{} again', allow_loopback=True, timeout=1, deadline=2, progress=False)
    assert report.failures == Counter(duplicate=1) and len(store.items()) == 3


def test_gather_into_the_inbox_leaves_photos_unlabelled_with_their_search_hint(server, tmp_path):
    store = Store.create(tmp_path/'store')
    search = StaticSearch({'pizza food photo': [server.base + '/good.jpg', server.base + '/good.png?inbox', server.base + '/page.jpg'],
                           'pasta food photo': [server.base + '/hop?inbox']})  # /hop redirects to /good.png: pizza's photo
    report = gather(store, ['pizza', 'pasta'], search, inbox=True, allow_loopback=True, timeout=1, deadline=2, progress=False)
    assert sum(report.added.values()) == 2 and report.failures == Counter(duplicate=1, not_image_content_type=1)
    assert len(store.items()) == 0  # nothing labelled
    inbox = store.inbox()
    assert len(inbox) == 2 and set(inbox.label) == {''} and set(inbox.source) == {'web'} and set(inbox.hint_source) == {'search'}
    png = inbox.set_index('source_url').loc[server.base + '/good.png?inbox']
    assert sorted(store.hints([png.id]).hint) == ['pasta', 'pizza']  # found by both searches: stored once, both hints kept
    assert set(store.events().action) == {'inbox'} and set(store.events().actor) == {'import'}
    assert 'into the inbox' in format_report(report)
    ledger = read_lines(G._ledger_path(store))
    assert sorted(e['hint'] for e in ledger) == ['pasta', 'pizza', 'pizza'] and not any('label' in e for e in ledger)

    again = gather(store, ['pizza', 'pasta'], search, inbox=True, allow_loopback=True, timeout=1, deadline=2, progress=False)
    assert sum(again.added.values()) == 0 and again.skipped == Counter(pizza=2, pasta=1)
    assert len(store.inbox()) == 2 and len(store.hints()) == 3  # a rerun adds no photo and no hint
    assert len(search.calls) == 2  # both searches came from the cache


def test_gather_into_the_inbox_never_touches_a_labelled_photo(gathered, server):
    store, _, _ = gathered
    labelled = store.items().set_index('source_url').loc[server.base + '/good.png']
    search = StaticSearch({'sushi food photo': [server.base + '/good.png?labelled']})  # the same bytes, a new URL
    report = gather(store, ['sushi'], search, inbox=True, allow_loopback=True, timeout=1, deadline=2, progress=False)
    assert report.failures == Counter(duplicate=1) and sum(report.added.values()) == 0
    assert len(store.inbox()) == 0 and len(store.hints()) == 0
    assert store.items().set_index('id').loc[labelled.id, 'label'] == 'pizza'


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
    monkeypatch.setattr(F.socket, 'getaddrinfo', fake_getaddrinfo)
    for host in answers: assert fetch_reason(f'http://{host}/x.jpg') == 'not_public_address'
    assert connections == []


def test_connects_to_the_checked_address_with_the_host_header(server, monkeypatch, connections):
    port, calls = server.server_address[1], []
    def rebinding_dns(host, p, *args, **kwargs):  # answers loopback once, then a private address
        calls.append(host)
        address = '127.0.0.1' if len(calls) == 1 else '10.0.0.1'
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, '', (address, p))]
    monkeypatch.setattr(F.socket, 'getaddrinfo', rebinding_dns)
    assert fetch_image(f'http://images.test:{port}/good.jpg', FetchPolicy(**FAST)) == GOOD_JPG
    assert calls == ['images.test'] and connections == [('127.0.0.1', port)]
    assert server.hosts[-1] == f'images.test:{port}'


def test_https_checks_the_certificate_against_the_host_name(server, monkeypatch, connections):
    assert F._tls_context().check_hostname and F._tls_context().verify_mode == ssl.CERT_REQUIRED
    names = []
    class RecordingContext:
        def wrap_socket(self, sock, server_hostname=None):
            names.append(server_hostname); sock.close(); raise ssl.SSLCertVerificationError('hostname mismatch')
    monkeypatch.setattr(F, '_tls_context', lambda: RecordingContext())
    monkeypatch.setattr(F.socket, 'getaddrinfo', lambda h, p, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, '', ('127.0.0.1', p))])
    assert fetch_reason(f'https://images.test:{server.server_address[1]}/good.jpg') == 'tls_error'
    assert names == ['images.test'] and connections == [('127.0.0.1', server.server_address[1])]


def test_real_tls_handshake_with_a_plain_server_fails_cleanly(server):
    assert fetch_reason(f'https://127.0.0.1:{server.server_address[1]}/good.jpg') == 'tls_error'


# A byte (or a header line) every 0.1 s never lets a 5 s read time out: a 'timeout' here can only be the 1 s deadline, and the
# server must see us hang up long before its 30 s drip ends.

def test_slow_drip_is_cut_off_by_the_deadline(server):
    path = '/drip.jpg?test=deadline'
    assert fetch_reason(server.base + path, deadline=1.0, read_timeout=5) == 'timeout'
    assert hung_up(server, path) < 300


def test_slow_headers_are_cut_off_by_the_deadline(server):
    path = '/drip-headers.jpg?test=deadline'
    assert fetch_reason(server.base + path, deadline=1.0, read_timeout=5) == 'timeout'
    assert hung_up(server, path) < 300


@pytest.mark.parametrize('address, public', [
    ('8.8.8.8', True), ('2606:4700:4700::1111', True), ('10.0.0.1', False), ('172.16.5.4', False),
    ('192.168.1.1', False), ('127.0.0.1', False), ('169.254.169.254', False), ('100.64.0.1', False),
    ('224.0.0.1', False), ('0.0.0.0', False), ('255.255.255.255', False), ('::1', False), ('::', False),
    ('fe80::1', False), ('fd00::1', False), ('ff02::1', False), ('::ffff:10.0.0.1', False),
    ('::ffff:127.0.0.1', False), ('::ffff:8.8.8.8', True), ('2002:c0a8:101::1', False), ('64:ff9b::a00:1', False)])
def test_only_public_addresses_are_allowed(address, public):
    assert F.is_public_address(address) is public
    assert F.is_public_address(address, allow_loopback=True) is (public or address in ('127.0.0.1', '::1', '::ffff:127.0.0.1'))


def test_body_cap_is_enforced_while_streaming(server):
    path = '/huge.jpg?test=cap'
    assert fetch_reason(server.base + path, max_bytes=MB) == 'too_large'
    assert hung_up(server, path) < 20 * MB  # the server saw us hang up long before its 50 MB


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


# --- the ledger -------------------------------------------------------------------------------------------------------

def ledger_entries(writer:str, n:int)->list:
    return [dict(image_url=f'http://example.com/{writer}/{i}.jpg', source_url='', label='pizza', item_id=f'{i:016x}',
                 outcome='added') for i in range(n)]


def test_the_ledger_survives_two_writers(tmp_path):
    store = Store.create(tmp_path/'store')
    start = threading.Barrier(2)
    def write(writer):
        start.wait()  # both gathers append at the same time
        for k in range(100): G._append_ledger(store, ledger_entries(f'{writer}{k}', 5))
    writers = [threading.Thread(target=write, args=(w,)) for w in 'ab']
    for t in writers: t.start()
    for t in writers: t.join()
    lines = G._ledger_path(store).read_text().splitlines()
    assert len(lines) == 1000 and all(isinstance(json.loads(line), dict) for line in lines)  # none lost, none interleaved
    assert G.gathered_urls(store) == {e['image_url'] for w in 'ab' for k in range(100) for e in ledger_entries(f'{w}{k}', 5)}


def test_a_torn_ledger_line_loses_nothing_after_it(tmp_path):
    store = Store.create(tmp_path/'store')
    G._append_ledger(store, ledger_entries('before', 2))
    with open(G._ledger_path(store), 'a') as f: f.write('{"image_url": "http://example.com/torn')  # a gather killed mid-write
    G._append_ledger(store, ledger_entries('after', 2))
    assert G.gathered_urls(store) == {f'http://example.com/{w}/{i}.jpg' for w in ('before', 'after') for i in range(2)}
