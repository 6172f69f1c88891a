"""Generated code; do not edit. ``k8s``: Kubernetes core types (scripts/gen-k8s-models.py)."""
