"""``moorage run -f`` on a ``modelFormat: huggingface`` InferenceService with a local model
directory: KServe's kserve-huggingfaceserver runtime is selected and run by moorage-server,
which serves the model's OpenAI routes and OIP v1."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from .test_moorage_run import _post, moorage_run

pytest.importorskip("transformers")
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.integration

ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: tiny-llm
spec:
  predictor:
    model:
      modelFormat:
        name: huggingface
      storageUri: ./tiny
"""


def _hf_models() -> Any:
    """moorage-server's test models module (packages/server/tests/hf_models.py)."""
    path = Path(__file__).resolve().parents[1] / "packages/server/tests/hf_models.py"
    spec = importlib.util.spec_from_file_location("moorage_server_hf_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_huggingface_isvc_from_a_local_directory(tmp_path: Path) -> None:
    _hf_models().make_tiny_llm(tmp_path / "tiny")
    (tmp_path / "isvc.yaml").write_text(ISVC)
    args = ["-f", str(tmp_path / "isvc.yaml"), "--cache-dir", str(tmp_path / "cache")]
    with moorage_run(args) as run:
        assert "runtime kserve-huggingfaceserver" in run.output
        rest = f"http://127.0.0.1:{run.http_port}"
        client = openai.OpenAI(base_url=f"{rest}/openai/v1", api_key="none", max_retries=0)
        chat = client.chat.completions.create(
            model="tiny-llm", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
        assert chat.usage is not None and 0 < chat.usage.completion_tokens <= 4
        v1 = _post(f"{rest}/v1/models/tiny-llm:predict",
                   {"instances": ["Hello"], "parameters": {"max_tokens": 3}})  # fmt: skip
        assert len(v1["predictions"]) == 1 and isinstance(v1["predictions"][0], str)
