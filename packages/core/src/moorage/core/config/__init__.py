"""Configuration: one settings class per deployable, and the ``inferenceservice-config`` ConfigMap.

Submodules, imported on demand so that ``import moorage.core`` stays cheap:
``configmap`` (the typed ConfigMap), ``server`` (``ServerSettings``), ``storage``
(``StorageSettings``), ``controller`` and ``cache`` (``CacheSettings``). Only this package
reads ``os.environ``.
"""
