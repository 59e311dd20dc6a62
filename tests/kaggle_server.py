"""A stand-in for Kaggle's API on 127.0.0.1, spoken to by the real `kaggle` client.

With KAGGLE_API_ENVIRONMENT=LOCALHOST the client calls http://localhost/api/v1/<Service>/<Method>
(a JSON POST each); HTTP_PROXY sends those requests here, in absolute form. `replies` maps a
method name to (status, JSON body, headers), or to a function of the request's JSON giving them;
PUTs (uploads) are kept byte for byte and answered `put_status`; GETs serve `files` (downloads).
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


class StandIn:
    def __init__(self):
        self.calls, self.uploads, self.files = [], {}, {}
        self.put_status = 200  # what an upload's PUT answers
        self.replies = {
            "StartSubmissionUpload": (200, {"token": "blob-token-1", "createUrl": "http://localhost/upload/1"}, {}),
            "CreateSubmission": (200, {"message": "Successfully submitted to the competition", "ref": 4242}, {}),
            "GetSubmissionLimits": (200, {"numAllowedNow": 4}, {}),
            "SaveKernel": lambda body: (200, {"ref": "/code/" + body["slug"], "versionNumber": 1,
                                              "url": "https://www.kaggle.com/code/" + body["slug"]}, {}),
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self):
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status, payload=b"", headers=None, kind="application/json"):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                method = urlparse(self.path).path.rsplit("/", 1)[-1]
                body = json.loads(self._body() or b"{}")
                server.calls.append((method, body, dict(self.headers)))
                reply = server.replies.get(method, (404, {"code": 404, "message": "no such method"}, {}))
                status, payload, headers = reply(body) if callable(reply) else reply
                self._send(status, payload, headers)

            def do_PUT(self):
                path = urlparse(self.path).path
                server.uploads[path] = self._body()
                server.calls.append(("PUT " + path, None, dict(self.headers)))
                self._send(server.put_status, {})

            def do_GET(self):
                path = urlparse(self.path).path
                server.calls.append(("GET " + path, None, dict(self.headers)))
                if path in server.files:
                    self._send(200, server.files[path], kind="application/zip")
                else:
                    self._send(404, {"code": 404, "message": "not found"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def methods(self):
        return [c[0] for c in self.calls]


def serve(tmp_path, monkeypatch):
    """The stand-in server (yielded), in an environment where the client finds only a dummy
    token; shut down afterwards (the `kaggle_server` fixture of conftest.py)."""
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    token = home / ".kaggle" / "kaggle.json"
    token.write_text(json.dumps({"username": "tester", "key": "0123456789abcdef0123456789abcdef"}))
    token.chmod(0o600)
    server = StandIn()
    server.thread.start()
    for key in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(key, raising=False)
    env = {"HOME": str(home), "KAGGLE_CONFIG_DIR": str(home / ".kaggle"), "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
           "HTTP_PROXY": f"http://127.0.0.1:{server.port}", "http_proxy": f"http://127.0.0.1:{server.port}",
           "NO_PROXY": "", "no_proxy": ""}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from kaggle.api.kaggle_api_extended import KaggleApi  # reads KAGGLE_CONFIG_DIR once, at import

    monkeypatch.setattr(KaggleApi, "config_dir", str(home / ".kaggle"))
    monkeypatch.setattr(KaggleApi, "config", str(token))
    server.env = env
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
