"""A stand-in model server for the runner's tests (stdlib only, starts in milliseconds).

Takes KServe's flags (--model_name, --http_port, --grpc_port, --model_dir, --predictor_host)
and answers GET /v2/health/ready, GET /v2/models/<name> (declaring one FP32 input [-1, 3]) and
POST /v2/models/<name>/infer (echoing the model dir, or forwarding to --predictor_host and
tagging the answer). --exit-after S makes it exit with code 3 after S seconds, printing a line.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_name", default="model")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    parser.add_argument("--model_dir", default="")
    parser.add_argument("--predictor_host", default="")
    parser.add_argument("--exit-after", type=float, default=0.0)
    parser.add_argument("--fail-at-start", action="store_true")
    args, _ = parser.parse_known_args()
    print(f"fake server argv: {sys.argv[1:]}", flush=True)
    if args.fail_at_start:
        print("loading model failed: no model file in /nowhere", flush=True)
        sys.exit(2)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: object) -> None:
            pass

        def _send(self, body: dict[str, object], status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v2/health/ready":
                self._send({"ready": True})
            elif self.path == f"/v2/models/{args.model_name}":
                inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
                self._send({"name": args.model_name, "inputs": inputs, "outputs": []})
            else:
                self._send({"error": "not found"}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if args.predictor_host:
                url = f"http://{args.predictor_host}{self.path}"
                request = urllib.request.Request(url, data=body, method="POST")
                with urllib.request.urlopen(request) as response:
                    answer = json.loads(response.read())
                answer["via"] = "transformer"
                self._send(answer)
            else:
                self._send({"model_dir": args.model_dir, "name": args.model_name})

    server = ThreadingHTTPServer(("127.0.0.1", args.http_port), Handler)
    if args.exit_after:

        def bail() -> None:
            time.sleep(args.exit_after)
            print("out of memory (pretend)", flush=True)
            import os

            os._exit(3)

        threading.Thread(target=bail, daemon=True).start()
    print("fake server ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
