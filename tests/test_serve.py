"""``imgvec serve``: every endpoint through FastAPI's test client, each bad input, the token, the
read/write split; the real command in a subprocess; the folder watcher."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import FAKE_ARGS, make_image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient

from imgvec.serve import security
from imgvec.serve.app import Server, Settings, create_app
from imgvec.serve.run import _add
from imgvec.serve.watch import Watcher, folders_to_add
from imgvec.storage.lock import write_lock

RUNNER = Path(__file__).resolve().parent / "run_imgvec.py"
Client = Callable[..., TestClient]


@pytest.fixture
def added(imgvec, photos: Path, library: Path) -> Path:
    """The library with the six test photos, embedded with the fake model."""
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    return library


@pytest.fixture
def client(added: Path) -> Iterator[Client]:
    """``client(**settings)``: a test client of a server on the library (loopback by default)."""
    made: list[tuple[Server, TestClient]] = []

    def make(**options: object) -> TestClient:
        settings = Settings(library=str(added), **options)  # type: ignore[arg-type]
        server = Server(settings)
        host = settings.host if security.is_loopback(settings.host) else "example.org"
        test_client = TestClient(create_app(settings, server), base_url=f"http://{host}")
        made.append((server, test_client))
        return test_client

    yield make
    for server, test_client in made:
        test_client.close()
        server.close()


def error_of(response) -> str:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"], body
    return body["error"]


@pytest.mark.databases
def test_every_read_endpoint_answers_with_the_cli_json(
    imgvec, client: Client, photos: Path
) -> None:
    api = client()
    status = api.get("/api/status").json()
    cli_status = imgvec("status", "--json").json()
    assert status["images"] == cli_status["images"] == 6 and status["writes"] is False
    assert status["models"] == cli_status["models"]
    assert api.get("/api/models").json() == imgvec("model", "list", "--json").json()
    assert api.get("/api/index").json() == imgvec("index", "status", "--json").json()

    # Search by a library id: the same answer as `imgvec query --json` of its file.
    cli = imgvec("query", photos / "p2.jpg", "-k", "3", "--json").json()[0]
    by_id = api.get("/api/search", params={"id": cli["results"][0]["id"], "k": 3}).json()
    assert by_id == cli and by_id["vector"] == "stored"

    # Search by upload (raw body and multipart): the same file is its own best hit.
    data = (photos / "p1.jpg").read_bytes()
    raw = api.post("/api/search?k=2", content=data, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    assert raw.json()["results"][0]["path"] == str(photos / "p1.jpg")
    assert raw.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    form = api.post("/api/search", files={"image": ("p1.jpg", data, "image/jpeg")})
    assert (
        form.json()["query"] == "p1.jpg" and form.json()["results"][0] == raw.json()["results"][0]
    )
    where = api.get("/api/search", params={"id": 1, "where": "folder LIKE '%sub'"}).json()
    assert {Path(h["path"]).parent.name for h in where["results"]} == {"sub"}
    assert where["filter"]["where"] == "folder LIKE '%sub'"

    # Metadata is the image's row of the photos view, as `imgvec sql --json` gives it.
    image_id = by_id["results"][0]["id"]
    row = imgvec("sql", f"SELECT * FROM photos WHERE id = {image_id}", "--json").json()[0]
    assert api.get(f"/api/images/{image_id}").json() == row
    sql = api.get("/api/sql", params={"q": "SELECT path, width FROM photos ORDER BY path"})
    assert (
        sql.json() == imgvec("sql", "SELECT path, width FROM photos ORDER BY path", "--json").json()
    )

    # Thumbnails: JPEG, longest side the size asked, upright; the full file byte for byte.
    thumb = api.get(f"/api/images/{image_id}/thumbnail", params={"size": 128})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as picture:
        assert max(picture.size) <= 128 and picture.format == "JPEG"
    full = api.get(f"/api/images/{image_id}/file")
    assert full.content == (photos / "p2.jpg").read_bytes()

    # Duplicate groups, as `imgvec dupes --json`.
    assert api.get("/api/dupes").json() == imgvec("dupes", "--json").json()


def test_thumbnails_are_made_once_and_cached_by_content(client: Client, added: Path) -> None:
    api = client()
    first = api.get("/api/images/1/thumbnail")
    cached = list((added / "thumbnails").rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.content
    cached[0].write_bytes(b"marker")  # the second answer comes from the cache, not the file
    assert api.get("/api/images/1/thumbnail").content == b"marker"


def test_a_query_writes_nothing_to_the_library(client: Client, added: Path, photos: Path) -> None:
    def state() -> dict[str, str]:
        """Every file's content; SQLite's shared-memory index (-shm), which any reader makes,
        is not content, and its write-ahead log must stay empty."""
        wal = added / "imgvec.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        return {
            str(p.relative_to(added)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(added.rglob("*"))
            if p.is_file() and p.name not in ("write.lock", "imgvec.db-shm", "imgvec.db-wal")
        }

    before = state()
    api = client()
    upload = (photos / "sub" / "p4.png").read_bytes()
    assert api.post("/api/search", content=upload).status_code == 200
    assert api.get("/api/search", params={"id": 2}).status_code == 200
    assert api.get("/api/dupes").status_code == 200
    assert state() == before


def test_bad_input_gets_a_clear_4xx_with_the_reason(client: Client, photos: Path) -> None:
    api = client(max_upload_bytes=50_000, max_upload_pixels=100_000)
    post = api.post
    assert post("/api/search", content=b"hello, not an image").status_code == 415
    assert "not an image" in error_of(post("/api/search", content=b"hello, not an image"))
    assert post("/api/search", content=b"").status_code == 422
    huge = post("/api/search", content=b"\xff" * 60_000)
    assert huge.status_code == 413 and "limit 50000" in error_of(huge)
    bomb = io.BytesIO()  # 400 x 300 = 120,000 pixels > 100,000: refused from the header
    Image.new("1", (400, 300)).save(bomb, "PNG")
    tall = post("/api/search", content=bomb.getvalue())
    assert tall.status_code == 413 and "400x300 pixels" in error_of(tall)
    truncated = (photos / "p0.jpg").read_bytes()[:300]
    assert post("/api/search", content=truncated).status_code == 422
    no_file = post("/api/search", files={"other": ("x.jpg", b"123", "image/jpeg")})
    assert no_file.status_code == 422 and "image" in error_of(no_file)

    assert api.get("/api/search", params={"id": 1, "where": "nonsense ((("}).status_code == 400
    blank = api.get("/api/search", params={"id": 1, "where": "   "})  # no condition
    assert blank.status_code == 200 and blank.json()["filter"] is None
    k0 = api.get("/api/search", params={"id": 1, "k": 0})
    assert k0.status_code == 422 and error_of(k0).startswith("k: ")
    assert "give an image id (`id`), words (`text`)" in error_of(api.get("/api/search"))
    words = api.get("/api/search", params={"text": "a dog"})  # the test model takes none
    assert words.status_code == 400 and "takes no words" in error_of(words)
    long = api.get("/api/search", params={"text": "x" * 1001})
    assert long.status_code == 400 and "at most 1000 characters" in error_of(long)
    writing_sql = api.get("/api/sql", params={"q": "DELETE FROM images"})
    assert writing_sql.status_code == 400 and "SQL" in error_of(writing_sql)
    for url in (
        "/api/search?id=999",
        "/api/images/999",
        "/api/images/999/file",
        "/api/images/999/thumbnail",
    ):
        assert api.get(url).status_code == 404, url
    for url in (  # larger than any SQL integer: refused before it reaches the database
        "/api/search?id=9223372036854775808",
        "/api/images/99999999999999999999/thumbnail",
        "/api/images/-1",
    ):
        assert api.get(url).status_code == 422, url
        error_of(api.get(url))
    assert api.get("/api/images/1/thumbnail", params={"size": 77}).status_code == 400
    unknown = api.get("/api/nothing-here")
    assert unknown.status_code == 404 and error_of(unknown) == "Not Found"
    raw_name = api.post(
        "/api/search",
        content=(photos / "p0.jpg").read_bytes(),
        headers={"X-Filename": "café.jpg".encode()},  # raw UTF-8, as curl -H sends it
    )
    assert raw_name.json()["query"] == "café.jpg"

    (photos / "p3.jpg").unlink()  # a file gone since it was added
    gone_id = api.get("/api/sql", params={"q": "SELECT id FROM photos WHERE path LIKE '%p3.jpg'"})
    gone = gone_id.json()[0]["id"]
    for url in (f"/api/images/{gone}/file", f"/api/images/{gone}/thumbnail"):
        assert api.get(url).status_code == 404 and "file is gone" in error_of(api.get(url)), url


def test_no_url_reaches_a_path(client: Client) -> None:
    api = client()
    for url in (
        "/page/../../../../etc/passwd",
        "/page/..%2F..%2Fapp.py",
        "/page/%2e%2e%2fapp.py",
        "/page/index.html/../../app.py",
        "/api/images/..%2F..%2Fetc%2Fpasswd/file",
        "/api/images/%2Fetc%2Fpasswd/file",
        "/etc/passwd",
    ):
        response = api.get(url)
        assert response.status_code in (404, 422), url
        assert b"root:" not in response.content and b"import" not in response.content
    assert api.get("/page/app.js").status_code == 200


def test_a_post_needs_a_content_length(client: Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"\xff\xd8"

    response = client().post("/api/search", content=chunks())  # chunked transfer encoding
    assert response.status_code == 411


def test_a_loopback_server_answers_only_to_loopback_host_names(client: Client) -> None:
    api = client()
    assert api.get("/api/status", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    assert api.get("/api/status", headers={"Host": "localhost"}).status_code == 200
    rebound = api.get("/api/status", headers={"Host": "attacker.example:8765"})
    assert rebound.status_code == 400 and "Host" in error_of(rebound)
    # Another site's page asking through the user's browser (an <img src>, a form post).
    crossed = api.get(
        "/api/sql", params={"q": "SELECT 1"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert crossed.status_code == 403 and "cross-site" in error_of(crossed)
    own = api.get("/api/status", headers={"Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200


def test_another_address_demands_the_token_on_every_request(client: Client) -> None:
    token, generated = security.needed_token("0.0.0.0", None)
    assert generated and token and len(token) >= 32
    api = client(host="0.0.0.0", token=token)
    for url in ("/", "/page/app.js", "/docs", "/openapi.json", "/api/status", "/api/images/1"):
        missing = api.get(url)
        assert missing.status_code == 401 and "token is needed" in error_of(missing), url
        wrong = api.get(url, headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401 and error_of(wrong) == "wrong token"
    assert api.post("/api/search", content=b"x").status_code == 401
    bearer = api.get("/api/status", headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 200
    page = api.get("/", params={"token": token})  # opening the printed address...
    assert page.status_code == 200 and security.COOKIE in page.cookies
    assert "httponly" in page.headers["set-cookie"].lower()
    assert api.get("/api/images/1/thumbnail").status_code == 200  # ...the page's requests pass


def test_the_security_rules() -> None:
    for host in ("127.0.0.1", "127.3.4.5", "localhost", "::1", "[::1]"):
        assert security.is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.4", "example.org", "10.0.0.1"):
        assert not security.is_loopback(host), host
    assert security.needed_token("127.0.0.1", None) == (None, False)
    assert security.needed_token("127.0.0.1", "mine") == ("mine", False)
    assert security.needed_token("0.0.0.0", "mine") == ("mine", False)
    assert security.needed_token("0.0.0.0", None)[0] != security.needed_token("0.0.0.0", None)[0]
    assert security.presented("Bearer abc", "c", "q") == "abc"
    assert security.presented(None, "c", "q") == "q"  # the printed link beats an old cookie
    assert security.presented(None, "c", None) == "c"
    assert security.presented("Basic xyz", None, "q") == "q"
    assert security.allowed(None, None) and security.allowed("t", "t")
    assert not security.allowed("t", None) and not security.allowed("t", "tt")


def test_writes_need_allow_writes_and_take_the_library_lock(
    client: Client, added: Path, tmp_path: Path
) -> None:
    more = tmp_path / "more"
    for i in range(3):
        make_image(more / f"m{i}.jpg", seed=100 + i)
    read_only = client()
    refused = read_only.post("/api/add", json={"paths": [str(more)]})
    assert refused.status_code == 403 and "--allow-writes" in error_of(refused)

    api = client(allow_writes=True)
    with write_lock(added / "write.lock"):  # as if `imgvec add` ran in another process
        busy = api.post("/api/add", json={"paths": [str(more)]})
    assert busy.status_code == 409 and "another imgvec process" in error_of(busy)
    done = api.post("/api/add", json={"paths": [str(more)]})
    assert done.status_code == 200 and done.json()["added"] == 3
    # The reading side picks up the new index version on the next request.
    hits = read_only.post("/api/search?k=1", content=(more / "m1.jpg").read_bytes()).json()
    assert hits["results"][0]["path"] == str(more / "m1.jpg")
    removed = api.post("/api/remove", json={"paths": [str(more / "m1.jpg")]})
    assert removed.json()["removed"] == 1
    hits = read_only.post("/api/search?k=9", content=(more / "m1.jpg").read_bytes()).json()
    assert str(more / "m1.jpg") not in {h["path"] for h in hits["results"]}
    assert api.post("/api/add", json={"paths": []}).status_code == 422
    relative = api.post("/api/add", json={"paths": ["photos"]})
    assert relative.status_code == 400 and "absolute" in error_of(relative)


def test_duplicates_move_aside_and_back_over_http(
    client: Client, added: Path, photos: Path
) -> None:
    copy = photos / "copy-of-p0.jpg"
    copy.write_bytes((photos / "p0.jpg").read_bytes())
    api = client(allow_writes=True)
    assert api.post("/api/add", json={"paths": [str(photos)]}).json()["added"] == 1
    groups = api.get("/api/dupes").json()["groups"]
    assert len(groups) == 1 and {Path(m["path"]).name for m in groups[0]["members"]} == {
        "p0.jpg",
        "copy-of-p0.jpg",
    }
    inside = api.post("/api/dupes/move", json={"target": str(added / "dupes")})
    assert inside.status_code == 400 and "library's own folder" in error_of(inside)
    aside = added.parent / "aside"
    moved = api.post("/api/dupes/move", json={"target": str(aside)}).json()
    assert len(moved["moved"]) == 1
    assert api.get("/api/dupes").json()["groups"] == []
    undone = api.post("/api/dupes/undo", json={}).json()
    assert len(undone["moved"]) == 1 and copy.exists() and (photos / "p0.jpg").exists()


def test_a_model_switch_shows_without_a_restart(imgvec, client: Client, photos: Path) -> None:
    api = client()
    assert api.get("/api/search", params={"id": 1}).status_code == 200
    assert imgvec("model", "use", "fake3", "--weights", "none").exit_code == 0
    status = api.get("/api/status").json()
    assert [m["model"]["name"] for m in status["models"] if m["active"]] == ["fake3"]
    upload = api.post("/api/search?k=1", content=(photos / "p3.jpg").read_bytes())
    assert upload.status_code == 200 and upload.json()["results"][0]["path"].endswith("p3.jpg")
    older = api.get("/api/search", params={"id": 1, "model": "fake"})
    assert older.status_code == 200 and older.json()["results"][0]["id"] == 1


def test_the_watcher_keeps_folders_in_the_library(added: Path, photos: Path) -> None:
    server = Server(Settings(library=str(added)))
    batches: list[list[str]] = []
    applied = threading.Condition()

    def apply(folders: list[str]) -> bool:
        done = _add(server, folders)
        with applied:
            batches.append(folders)
            applied.notify_all()
        return done

    def wait_for(count: int) -> None:
        with applied:
            assert applied.wait_for(lambda: len(batches) >= count, timeout=30), batches

    watcher = Watcher([photos], apply, lambda e: pytest.fail(str(e)), quiet_s=0.2)
    watcher.start()
    try:
        wait_for(1)  # the first batch: the folder as it is (nothing new)
        assert batches[0] == [str(photos)]
        make_image(photos / "sub" / "new.jpg", seed=77)
        wait_for(2)
        assert batches[1] == [str(photos / "sub")]
        paths = {r[0] for r in server.reader.sql("SELECT path FROM photos").rows}
        assert str(photos / "sub" / "new.jpg") in paths
        (photos / "p1.jpg").unlink()
        wait_for(3)
        paths = {r[0] for r in server.reader.sql("SELECT path FROM photos").rows}
        assert str(photos / "p1.jpg") not in paths and len(paths) == 6
    finally:
        watcher.stop()
        server.close()


def test_folders_to_add(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    changed = [
        str(root / "a" / "b" / "x.jpg"),
        str(root / "a" / "y.jpg"),  # a/ covers a/b/
        str(root / "gone" / "deeper" / "z.jpg"),  # a vanished folder: its nearest existing one
        str(tmp_path / "elsewhere.jpg"),  # outside the watched roots
    ]
    assert folders_to_add(changed, [root]) == [str(root)]
    assert folders_to_add([str(root / "c" / "q.png"), str(root / "a")], [root]) == [
        str(root / "a"),
        str(root / "c"),
    ]
    gone = tmp_path / "gone-root"  # a watched folder deleted: nothing, least of all its parent
    assert (
        folders_to_add([str(gone), str(gone / "x.jpg"), str(gone / "sub" / "y.jpg")], [gone]) == []
    )


def test_the_real_command_serves_until_interrupted(added: Path) -> None:
    env = {**os.environ, "IMGVEC_LIBRARY": str(added)}
    args = [sys.executable, str(RUNNER), "serve", "--port", "0"]
    process = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith(f"Serving the library at {added} on http://127.0.0.1:"), first
        url = first.split(" on ")[1].split()[0]
        with urllib.request.urlopen(url + "api/status", timeout=30) as response:
            assert json.load(response)["images"] == 6
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"<title>imgvec</title>" in response.read()
        with urllib.request.urlopen(url + "api/search?id=1&k=2", timeout=60) as response:
            assert len(json.load(response)["results"]) == 2  # FAISS loaded: its loader is quiet
        with urllib.request.urlopen(url + "docs", timeout=30) as response:
            docs = response.read().decode()
        assert "cdn" not in docs.lower()  # Swagger UI from the package: works offline
        script = docs.split('src="')[1].split('"')[0]
        with urllib.request.urlopen(url.rstrip("/") + script, timeout=30) as response:
            assert b"SwaggerUIBundle" in response.read()
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, exit code 130 as everywhere
        assert process.wait(timeout=30) == 130
    rest = process.stderr.read()
    assert rest == "", rest  # nothing but imgvec's own lines


def test_the_real_command_prints_a_token_off_loopback(added: Path) -> None:
    env = {**os.environ, "IMGVEC_LIBRARY": str(added)}
    args = [sys.executable, str(RUNNER), "serve", "--host", "0.0.0.0", "--port", "0"]
    process = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        url = process.stderr.readline().split(" on ")[1].split()[0]
        second = process.stderr.readline()
        assert "Every request needs the token (generated for this run)" in second
        token = second.rsplit("?token=", 1)[1].strip()
        port = url.rsplit(":", 1)[1].strip("/")
        status = f"http://127.0.0.1:{port}/api/status"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(status, timeout=30)
        assert refused.value.code == 401
        with urllib.request.urlopen(f"{status}?token={token}", timeout=30) as response:
            assert json.load(response)["images"] == 6
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, exit code 130 as everywhere
        assert process.wait(timeout=30) == 130


def test_serve_needs_a_library_unless_it_watches_a_folder(imgvec, tmp_path: Path) -> None:
    result = imgvec("serve", "--library", tmp_path / "nothing-here")
    assert result.exit_code == 2 and "no library at" in result.stderr
    assert not (tmp_path / "nothing-here" / "imgvec.db").exists()


def test_duplicates_are_listed_apart_from_searches(client: Client) -> None:
    api = client()
    server = api.app.state.server
    with server._review_lock:  # as if a long listing of duplicates were running
        assert api.get("/api/search", params={"id": 1}).status_code == 200
        busy = api.get("/api/dupes")
        assert busy.status_code == 409 and "already" in error_of(busy)
    assert api.get("/api/dupes").status_code == 200


def test_serve_without_the_extra_says_how_to_install_it(imgvec, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    monkeypatch.delitem(sys.modules, "imgvec.serve.run", raising=False)
    result = imgvec("serve")
    assert result.exit_code == 2
    assert "pip install 'imgvec[serve]'" in result.stderr


def test_the_listening_socket_says_tcp_so_answers_are_not_held_by_nagle() -> None:
    import socket

    from imgvec.serve.run import _listen

    listening = _listen("127.0.0.1", 0)
    try:
        assert listening.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only then
    finally:
        listening.close()
