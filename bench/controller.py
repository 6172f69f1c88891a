"""Render throughput of the controller's pure reconcile: N InferenceServices (mixed runtimes,
transformers, explainers, loggers, storage kinds) from YAML text to Kubernetes objects.

The timed part is what the operator does per InferenceService: parse, default, validate,
select the runtime, render (``load_workload`` + ``desired_objects``). The bar (issue 12):
1,000 in under 2 s. Run: ``.venv/bin/python bench/controller.py [--count 1000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import yaml

PREDICTORS = [
    {"sklearn": {"storageUri": "gs://b/sklearn"}},
    {"model": {"modelFormat": {"name": "xgboost"}, "storageUri": "s3://b/xgb"}},
    {"model": {"modelFormat": {"name": "lightgbm"}, "storageUri": "https://h/m.tar.gz"}},
    {"tensorflow": {"storageUri": "pvc://models/tf"}},
    {"pytorch": {"storageUri": "gs://b/torch", "resources": {"limits": {"nvidia.com/gpu": "1"}}}},
    {"onnx": {"storageUri": "gs://b/onnx"}},
    {"model": {"modelFormat": {"name": "huggingface"}, "storageUri": "hf://org/model"}},
    {"model": {"modelFormat": {"name": "sklearn"}, "protocolVersion": "v2",
               "storageUri": "oci://registry/model:1"}},
]  # fmt: skip
TRANSFORMER = {"containers": [{"name": "kserve-container", "image": "me/transformer:1"}]}
EXPLAINER = {"art": {"type": "SquareAttack"}}
LOGGER = {"url": "http://sink", "mode": "all"}


def _document(i: int) -> dict:
    predictor = {**PREDICTORS[i % len(PREDICTORS)], "minReplicas": 1 + i % 3, "maxReplicas": 5}
    if i % 5 == 0:
        predictor["logger"] = LOGGER
    spec: dict = {"predictor": predictor}
    if i % 4 == 0:
        spec["transformer"] = TRANSFORMER
    if i % 7 == 0:
        spec["explainer"] = EXPLAINER
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": f"isvc-{i}", "namespace": "bench"},
        "spec": spec,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from moorage.controller.reconcile import desired_objects
    from moorage.controller.workload import load_workload

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.count):
            path = Path(tmp) / f"isvc-{i}.yaml"
            path.write_text(yaml.safe_dump(_document(i)))
            paths.append(path)
        load_workload([paths[0]])  # imports and pydantic validators built outside the timing
        times = []
        objects = 0
        for _ in range(args.repeat):
            gc.collect()
            started = time.perf_counter()
            objects = sum(len(desired_objects(load_workload([p]))) for p in paths)
            times.append(time.perf_counter() - started)
    best, median = min(times), statistics.median(times)
    print(
        f"rendered {args.count} InferenceServices ({objects} objects): best {best:.2f} s, "
        f"median {median:.2f} s over {args.repeat} runs ({args.count / best:.0f}/s); "
        f"bar: {args.count} in < 2 s -> {'PASS' if best < 2.0 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
