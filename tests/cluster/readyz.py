#!/usr/bin/env python3
"""Readiness endpoint of the podbridge test cluster (loopback only).

    readyz.py STATE_DIR PORT NODE_NAME

GET /kubernetes-ready  200 "ok" when the apiserver's /readyz says ok and the node is Ready, else 503
GET /kubeconfig        the admin kubeconfig (200), 404 before it exists
"""
import http.server, json, os, ssl, sys, urllib.request

state, port, node = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def api(path):
    ctx = ssl.create_default_context(cafile=os.path.join(state, "pki/ca.crt"))
    with open(os.path.join(state, "admin.token")) as f:
        token = f.read().strip()
    r = urllib.request.Request("https://127.0.0.1:6443" + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(r, context=ctx, timeout=3) as resp:
        return resp.read()

def ready():
    try:
        if api("/readyz").strip() != b"ok":
            return "apiserver not ready"
        conds = json.loads(api("/api/v1/nodes/" + node))["status"].get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            return None
        return "node %s not Ready" % node
    except Exception as e:  # connection refused, 404 node, ...
        return "not ready: %s" % e

class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/kubernetes-ready":
            err = ready()
            self.reply(503 if err else 200, ((err or "ok") + "\n").encode())
        elif self.path == "/kubeconfig":
            try:
                with open(os.path.join(state, "admin.kubeconfig"), "rb") as f:
                    self.reply(200, f.read(), "application/yaml")
            except OSError:
                self.reply(404, b"no kubeconfig yet\n")
        else:
            self.reply(404, b"try /kubernetes-ready or /kubeconfig\n")

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
