"""Train the benchmark model: LogisticRegression on iris, fixed seed, saved with joblib.

Every server in the benchmark loads the very same ``model.joblib`` file.  The output
directory holds:

    model.joblib            the fitted estimator (for moorage-server and KServe)
    model-settings.json     MLServer's model settings, pointing at model.joblib

Run it with a Python that has scikit-learn and joblib (the kserve peer venv does, and so
do the scikit-learn pins in bench/setup-peers.sh, so the pickle loads everywhere)::

    python bench/models/build_iris.py OUT_DIR [--name sklearn-iris]
"""

from __future__ import annotations

import argparse
import json
import pathlib

SEED = 20240917


def build(out_dir: pathlib.Path, *, name: str = "sklearn-iris") -> pathlib.Path:
    """Fit the model and write it and MLServer's settings into ``out_dir``."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=500, random_state=SEED)
    estimator.fit(features, labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.joblib"
    joblib.dump(estimator, model_path)
    settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    (out_dir / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--name", default="sklearn-iris")
    args = parser.parse_args()
    path = build(args.out_dir, name=args.name)
    print(path)


if __name__ == "__main__":
    main()
