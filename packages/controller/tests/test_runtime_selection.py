"""Runtime selection follows KServe v0.14's GetSupportingRuntimes and explicit lookup."""

from __future__ import annotations

import pytest

from moorage.controller.runtime_selection import predictor_model, select_runtime
from moorage.core.errors import ValidationError
from moorage.core.resources import builtin_runtimes, default

SK = {"name": "sklearn", "version": "1", "autoSelect": True}


def sklearn_model(**extra):
    return {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/m", **extra}}


def test_builtin_runtime_serves_sklearn(make_isvc) -> None:
    chosen = select_runtime(make_isvc(sklearn_model()), builtin_runtimes())
    assert (chosen.kind, chosen.name, chosen.explicit) == (
        "ClusterServingRuntime",
        "kserve-sklearnserver",
        False,
    )


@pytest.mark.parametrize(
    ("predictor", "expected"),
    [
        ({"sklearn": {}}, "kserve-sklearnserver"),
        ({"sklearn": {"protocolVersion": "v2"}}, "kserve-mlserver"),  # priority 2 beats 1
        ({"xgboost": {}}, "kserve-xgbserver"),
        ({"lightgbm": {}}, "kserve-lgbserver"),
        ({"model": {"modelFormat": {"name": "lightgbm", "version": "4"}, "protocolVersion": "v2"}},
         "kserve-mlserver"),
        ({"model": {"modelFormat": {"name": "mlflow"}, "protocolVersion": "v2"}},
         "kserve-mlserver"),
        ({"tensorflow": {}}, "kserve-tensorflow-serving"),
        ({"tensorflow": {"protocolVersion": "v2"}}, "kserve-tritonserver"),
        ({"pytorch": {}}, "kserve-torchserve"),
        ({"pytorch": {"protocolVersion": "grpc-v2"}}, "kserve-torchserve"),  # triton: no autoSelect
        ({"onnx": {}}, "kserve-tritonserver"),  # onnx defaults to v2
        ({"triton": {}}, "kserve-tritonserver"),
        ({"model": {"modelFormat": {"name": "tensorrt"}, "protocolVersion": "v2"}},
         "kserve-tritonserver"),
        ({"pmml": {}}, "kserve-pmmlserver"),
        ({"paddle": {}}, "kserve-paddleserver"),
        ({"huggingface": {}}, "kserve-huggingfaceserver"),
        ({"model": {"modelFormat": {"name": "pytorch"}, "runtime": "kserve-tritonserver",
                    "protocolVersion": "v2"}}, "kserve-tritonserver"),
        ({"model": {"modelFormat": {"name": "sklearn"}, "runtime": "kserve-sklearnserver"}},
         "kserve-sklearnserver"),
        ({"model": {"modelFormat": {"name": "sklearn"}, "runtime": "moorage-sklearn"}},
         "moorage-sklearn"),
        ({"model": {"modelFormat": {"name": "xgboost", "version": "2"},
                    "runtime": "moorage-xgboost"}}, "moorage-xgboost"),
    ],
)  # fmt: skip
def test_builtin_selection_as_on_kserve(make_isvc, predictor, expected) -> None:
    for spec in predictor.values():
        spec.setdefault("storageUri", "s3://b/m")
    service = default(make_isvc(predictor))
    assert select_runtime(service, builtin_runtimes()).name == expected


@pytest.mark.parametrize(
    ("predictor", "reason"),
    [
        ({"model": {"modelFormat": {"name": "xgboost", "version": "2"}}}, "NoSupportingRuntime"),
        ({"model": {"modelFormat": {"name": "mlflow"}}}, "NoSupportingRuntime"),  # v2 only
        ({"pmml": {"protocolVersion": "grpc-v2"}}, "NoSupportingRuntime"),
        ({"model": {"modelFormat": {"name": "sklearn"}, "runtime": "kserve-tensorflow-serving"}},
         "NoSupportingRuntime"),
        ({"model": {"modelFormat": {"name": "sklearn"}, "runtime": "kserve-sklearnserver",
                    "protocolVersion": "grpc-v2"}}, "NoSupportingRuntime"),
        ({"model": {"modelFormat": {"name": "sklearn"}, "runtime": "sklearn-server"}},
         "RuntimeNotRecognized"),
    ],
)  # fmt: skip
def test_builtin_refusals_as_on_kserve(make_isvc, predictor, reason) -> None:
    for spec in predictor.values():
        spec.setdefault("storageUri", "s3://b/m")
    with pytest.raises(ValidationError) as info:
        select_runtime(default(make_isvc(predictor)), builtin_runtimes())
    assert info.value.details["reason"] == reason


def test_framework_shorthand_maps_to_model_format(make_isvc, make_runtime) -> None:
    service = make_isvc({"sklearn": {"storageUri": "s3://b/m"}})
    model = predictor_model(service)
    assert model is not None and model.model_format.name == "sklearn"
    assert model.field == "spec.predictor.sklearn"
    assert select_runtime(service, [make_runtime("sk", [SK])]).name == "sk"
    # the defaulted form selects the same runtime
    assert select_runtime(default(service), [make_runtime("sk", [SK])]).name == "sk"


def test_namespace_runtimes_come_before_cluster_runtimes(make_isvc, make_runtime) -> None:
    cluster = make_runtime("a-cluster", [{**SK, "priority": 9}])
    local = make_runtime("z-local", [SK], kind="ServingRuntime")
    assert select_runtime(make_isvc(sklearn_model()), [cluster, local]).name == "z-local"


def test_namespaced_runtime_of_another_namespace_is_ignored(make_isvc, make_runtime) -> None:
    other = make_runtime("other", [SK], kind="ServingRuntime", metadata={"namespace": "team-b"})
    cluster = make_runtime("cluster", [SK])
    service = make_isvc(sklearn_model(), metadata={"namespace": "team-a"})
    assert select_runtime(service, [other, cluster]).name == "cluster"


def test_priority_wins_then_protocol_then_name(make_isvc, make_runtime) -> None:
    low = make_runtime("a", [{**SK, "priority": 1}])
    high = make_runtime("b", [{**SK, "priority": 5}])
    unset = make_runtime("0", [SK])
    assert select_runtime(make_isvc(sklearn_model()), [low, unset, high]).name == "b"
    # equal priority: lower protocol first, then name ascending
    v2_only = make_runtime("a-v2", [SK], protocols=["v1", "v2"])
    v1 = make_runtime("b-v1", [SK], protocols=["v1"])
    assert select_runtime(make_isvc(sklearn_model()), [v2_only, v1]).name == "a-v2"
    grpc = make_runtime("a-grpc", [SK], protocols=["grpc-v2", "v1"])
    assert select_runtime(make_isvc(sklearn_model()), [grpc, v2_only]).name == "a-grpc"
    assert (
        select_runtime(
            make_isvc(sklearn_model()), [make_runtime("y", [SK]), make_runtime("x", [SK])]
        ).name
        == "x"
    )


def test_newest_runtime_first_at_equal_rank(make_isvc, make_runtime) -> None:
    old = make_runtime("a", [SK], metadata={"creationTimestamp": "2024-01-01T00:00:00Z"})
    new = make_runtime("b", [SK], metadata={"creationTimestamp": "2024-06-01T00:00:00Z"})
    assert select_runtime(make_isvc(sklearn_model()), [old, new]).name == "b"


def test_disabled_multimodel_and_protocol_mismatch_are_skipped(make_isvc, make_runtime) -> None:
    disabled = make_runtime("a", [SK], disabled=True)
    mms = make_runtime("b", [SK], multiModel=True)
    v2 = make_runtime("c", [SK], protocols=["v2"])
    good = make_runtime("d", [SK], protocols=["v1"])
    assert select_runtime(make_isvc(sklearn_model()), [disabled, mms, v2, good]).name == "d"
    assert (
        select_runtime(make_isvc(sklearn_model(protocolVersion="v2")), [disabled, v2, good]).name
        == "c"
    )


def test_versioned_format_needs_the_version(make_isvc, make_runtime) -> None:
    v0 = make_runtime("v0", [{"name": "sklearn", "version": "0", "autoSelect": True}])
    v1 = make_runtime("v1", [{"name": "sklearn", "version": "1", "autoSelect": True}])
    service = make_isvc({"model": {"modelFormat": {"name": "sklearn", "version": "1"}}})
    assert select_runtime(service, [v0, v1]).name == "v1"


def test_auto_select_false_only_by_name(make_isvc, make_runtime) -> None:
    manual = make_runtime("manual", [{"name": "sklearn"}])
    with pytest.raises(ValidationError) as info:
        select_runtime(make_isvc(sklearn_model()), [manual])
    assert info.value.field == "spec.predictor.model.modelFormat"
    assert "sklearn" in info.value.reason and "does not auto-select" in info.value.reason
    assert info.value.details["reason"] == "NoSupportingRuntime"
    chosen = select_runtime(make_isvc(sklearn_model(runtime="manual")), [manual])
    assert chosen.explicit and chosen.name == "manual"


def test_nothing_matches_names_the_format(make_isvc) -> None:
    service = make_isvc({"model": {"modelFormat": {"name": "caffe"}}})
    with pytest.raises(ValidationError) as info:
        select_runtime(service, builtin_runtimes())
    message = str(info.value)
    assert message.startswith("spec.predictor.model.modelFormat: no runtime found")
    assert "caffe" in message and "sklearn" in message  # what the runtimes do serve
    service = make_isvc({"model": {"modelFormat": {"name": "onnx"}}})  # v1: not triton's
    with pytest.raises(ValidationError, match="kserve-tritonserver speaks v2, grpc-v2"):
        select_runtime(service, builtin_runtimes())


def test_explicit_runtime_errors(make_isvc, make_runtime) -> None:
    off = make_runtime("off", [SK], disabled=True)
    v1 = make_runtime("v1only", [SK], protocols=["v1"])
    xgb = make_runtime("xgb", [{"name": "xgboost", "autoSelect": True}])
    cases = {
        "missing": "No ServingRuntimes or ClusterServingRuntimes with the name: missing",
        "off": "specified runtime off is disabled",
        "xgb": "specified runtime xgb does not support specified framework/version sklearn",
    }
    for name, message in cases.items():
        with pytest.raises(ValidationError) as info:
            select_runtime(make_isvc(sklearn_model(runtime=name)), [off, v1, xgb])
        assert info.value.field == "spec.predictor.model.runtime"
        assert message in info.value.reason
    with pytest.raises(ValidationError, match="does not support specified protocol version v2"):
        select_runtime(make_isvc(sklearn_model(runtime="v1only", protocolVersion="v2")), [v1])


def test_worker_spec_needs_multinode_runtime(make_isvc, make_runtime) -> None:
    single = make_runtime("single", [SK])
    multi = make_runtime(
        "multi", [SK], workerSpec={"containers": [{"name": "worker", "image": "w"}]}
    )
    service = make_isvc({**sklearn_model(), "workerSpec": {"size": 2}})
    assert select_runtime(service, [single, multi]).name == "multi"
    assert select_runtime(make_isvc(sklearn_model()), [multi, single]).name == "single"


def test_custom_container_predictor_has_no_runtime(make_isvc) -> None:
    service = make_isvc({"containers": [{"name": "kserve-container", "image": "me/model"}]})
    assert predictor_model(service) is None
    with pytest.raises(ValidationError, match="custom containers"):
        select_runtime(service, builtin_runtimes())
