#!/usr/bin/env python3
"""Build the example model: LogisticRegression on scikit-learn's bundled iris data.

Writes ``model/model.joblib`` next to this file (or into the directory given as the first
argument), plus ``model/sklearn-version`` naming the scikit-learn that wrote it. A joblib pickle
only loads reliably with the scikit-learn that made it, so the model is built on your machine
rather than shipped: ``./scripts/serve-example.sh`` runs this when the file is missing or was
written by another scikit-learn. Training is deterministic (fixed seed, bundled data) and takes
well under a second.

    python examples/sklearn-iris/train.py [OUT_DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

SEED = 42


def build(out_dir: Path) -> Path:
    """Fit the model and write it atomically into ``out_dir``; returns the model file."""
    import joblib
    import sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000, random_state=SEED)
    model.fit(features, labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.joblib"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".model-", suffix=".joblib")
    os.close(fd)
    joblib.dump(model, tmp)
    os.replace(tmp, target)
    (out_dir / "sklearn-version").write_text(sklearn.__version__ + "\n")
    return target


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "model"
    path = build(out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
