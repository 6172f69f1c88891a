"""Synchronous twins of the async clients, for scripts and notebooks.

Each twin owns one private :class:`asyncio.Runner` whose loop runs in a daemon thread; a call
submits the async client's coroutine to that loop and waits. So the twins work from plain
scripts, from threads, and inside notebooks (whose own loop is already running), keep one
connection pool / channel for their whole life, and never call ``asyncio.run()`` per call.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

import httpx

from moorage.client._config import USE_CLIENT_DEFAULT, RESTConfig
from moorage.client._grpc import InferenceGRPCClient
from moorage.client._rest import InferenceRESTClient
from moorage.core.errors import ConnectionFailed
from moorage.core.protocol import InferRequest, InferResponse
from moorage.core.protocol.schema import ModelMetadataResponse, ServerMetadataResponse

__all__ = ["SyncInferenceGRPCClient", "SyncInferenceRESTClient"]

T = TypeVar("T")
Headers = Mapping[str, str]
URLArg = str | httpx.URL
Default: Any = USE_CLIENT_DEFAULT


class _LoopThread:
    """One asyncio.Runner, its loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        with asyncio.Runner() as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()

    def submit(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None or not self._thread.is_alive():
            coro.close()
            raise ConnectionFailed("the client is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt in the caller: do not leave the call running
            raise

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout=10)
        self._loop = None


class _SyncBase:
    _async: Any

    def __init__(self, factory: Callable[[], Awaitable[Any]], name: str) -> None:
        self._thread = _LoopThread(name)
        try:
            self._async = self._thread.submit(_await(factory))
        except BaseException:
            self._thread.stop()
            raise
        self._finalizer = weakref.finalize(self, _shutdown, self._thread, self._async)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._thread.submit(coro)

    def close(self) -> None:
        """Close the async client and stop the private event loop."""
        self._finalizer()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _await(factory: Callable[[], Awaitable[Any]]) -> Any:
    return await factory()


def _shutdown(thread: _LoopThread, client: Any) -> None:
    try:
        thread.submit(client.close())
    except Exception:  # closing must not raise
        pass
    finally:
        thread.stop()


class SyncInferenceRESTClient(_SyncBase):
    """Blocking twin of :class:`InferenceRESTClient`: same methods, same arguments, same errors."""

    _async: InferenceRESTClient

    def __init__(self, config: RESTConfig | None = None) -> None:
        async def make() -> InferenceRESTClient:
            return InferenceRESTClient(config)

        super().__init__(make, "moorage-rest-client")

    @property
    def config(self) -> RESTConfig:
        return self._async.config

    def __enter__(self) -> SyncInferenceRESTClient:
        return self

    def infer(
        self,
        base_url: URLArg,
        data: InferRequest | Mapping[str, Any] | bytes,
        model_name: str | None = None,
        headers: Headers | None = None,
        response_headers: MutableMapping[str, str] | None = None,
        is_graph_endpoint: bool = False,
        timeout: Any = Default,
    ) -> InferResponse | dict[str, Any]:
        return self._run(
            self._async.infer(
                base_url, data, model_name, headers, response_headers, is_graph_endpoint, timeout
            )
        )

    def explain(
        self,
        base_url: URLArg,
        model_name: str,
        data: Mapping[str, Any],
        headers: Headers | None = None,
        timeout: Any = Default,
    ) -> dict[str, Any]:
        return self._run(self._async.explain(base_url, model_name, data, headers, timeout))

    def is_server_live(
        self,
        base_url: URLArg,
        headers: Headers | None = None,
        timeout: Any = Default,
    ) -> bool:
        return self._run(self._async.is_server_live(base_url, headers, timeout))

    def is_server_ready(
        self,
        base_url: URLArg,
        headers: Headers | None = None,
        timeout: Any = Default,
    ) -> bool:
        return self._run(self._async.is_server_ready(base_url, headers, timeout))

    def is_model_ready(
        self,
        base_url: URLArg,
        model_name: str,
        headers: Headers | None = None,
        timeout: Any = Default,
    ) -> bool:
        return self._run(self._async.is_model_ready(base_url, model_name, headers, timeout))

    def get_server_metadata(
        self,
        base_url: URLArg,
        headers: Headers | None = None,
        timeout: Any = Default,
    ) -> ServerMetadataResponse:
        return self._run(self._async.get_server_metadata(base_url, headers, timeout))

    def get_model_metadata(
        self,
        base_url: URLArg,
        model_name: str,
        model_version: str | None = None,
        headers: Headers | None = None,
        timeout: Any = Default,
    ) -> ModelMetadataResponse:
        return self._run(
            self._async.get_model_metadata(base_url, model_name, model_version, headers, timeout)
        )

    def load_model(
        self,
        base_url: URLArg,
        model_name: str,
        headers: Headers | None = None,
        timeout: Any = Default,
    ) -> bool:
        return self._run(self._async.load_model(base_url, model_name, headers, timeout))

    def unload_model(
        self,
        base_url: URLArg,
        model_name: str,
        headers: Headers | None = None,
        timeout: Any = Default,
    ) -> bool:
        return self._run(self._async.unload_model(base_url, model_name, headers, timeout))


class SyncInferenceGRPCClient(_SyncBase):
    """Blocking twin of :class:`InferenceGRPCClient`: same arguments, methods and errors."""

    _async: InferenceGRPCClient

    def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:
        async def make() -> InferenceGRPCClient:
            return InferenceGRPCClient(url, *args, **kwargs)

        super().__init__(make, "moorage-grpc-client")

    @property
    def url(self) -> str:
        return self._async.url

    def __enter__(self) -> SyncInferenceGRPCClient:
        return self

    def infer(
        self,
        infer_request: InferRequest,
        timeout: Any = Default,
        headers: Headers | None = None,
    ) -> InferResponse:
        return self._run(self._async.infer(infer_request, timeout, headers))

    def is_server_live(self, timeout: Any = Default, headers: Headers | None = None) -> bool:
        return self._run(self._async.is_server_live(timeout, headers))

    def is_server_ready(self, timeout: Any = Default, headers: Headers | None = None) -> bool:
        return self._run(self._async.is_server_ready(timeout, headers))

    def is_model_ready(
        self,
        model_name: str,
        timeout: Any = Default,
        headers: Headers | None = None,
        model_version: str | None = None,
    ) -> bool:
        return self._run(self._async.is_model_ready(model_name, timeout, headers, model_version))

    def get_server_metadata(
        self, timeout: Any = Default, headers: Headers | None = None
    ) -> ServerMetadataResponse:
        return self._run(self._async.get_server_metadata(timeout, headers))

    def get_model_metadata(
        self,
        model_name: str,
        model_version: str | None = None,
        timeout: Any = Default,
        headers: Headers | None = None,
    ) -> ModelMetadataResponse:
        return self._run(
            self._async.get_model_metadata(model_name, model_version, timeout, headers)
        )

    def load_model(
        self, model_name: str, timeout: Any = Default, headers: Headers | None = None
    ) -> bool:
        return self._run(self._async.load_model(model_name, timeout, headers))

    def unload_model(
        self, model_name: str, timeout: Any = Default, headers: Headers | None = None
    ) -> bool:
        return self._run(self._async.unload_model(model_name, timeout, headers))
