"""The list-then-watch loop of the harness's watch-driven helpers (svc-dns.py, local-path.py)."""
import json
import time


def follow(get, path, on_list, on_event, log):
    """LIST `path` and hand its items to on_list(items), then WATCH from that resourceVersion and
    hand each event to on_event(type, object) (bookmarks skipped); re-list after any error,
    410 Gone included. get(path, timeout) returns an open HTTP response."""
    while True:
        try:
            with get(path, 10) as resp:
                listing = json.load(resp)
            on_list(listing["items"])
            version = listing["metadata"]["resourceVersion"]
            while True:
                url = "%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=%s" % (path, version)
                with get(url, 330) as resp:
                    for line in resp:
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            raise RuntimeError(obj.get("message", "watch error"))
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            on_event(event["type"], obj)
        except Exception as e:
            log("%s: %s; re-listing" % (path, e))
            time.sleep(0.5)
