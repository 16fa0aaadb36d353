"""Requests whose bytes are not the message they claim to be: INVALID_ARGUMENT, parsed by us, not by gRPC.

Left to itself, gRPC Python answers undecodable request bytes with INTERNAL, logs a traceback for each (a
log flood on demand), and — for a bidirectional stream such as InferStream — sends a second status after
the handler ends; that call then never completes and the agent's graceful shutdown waits for it forever
(found by tests/test_fuzz_agent.py). This interceptor wraps every method's request parser so a parse
failure becomes a marker the handler turns into INVALID_ARGUMENT naming the message type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from rkfarm_agent.grpc_types import Handler, Interceptor
from rkfarm_proto.errors import InputError

log = logging.getLogger(__name__)


AGENT_PREFIX = "/rkfarm.v1.Agent/"


class MalformedRequestError(InputError):
    """Request bytes that do not decode as the method's request message."""


class _Malformed:
    """What the tolerant parser returns instead of raising."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _tolerant(parse: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def tolerant_parse(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or anything a parser raises on hostile bytes
            return _Malformed(f"{method}: the request is not a valid message ({len(data)} bytes; {exc})")

    return tolerant_parse


class MalformedRequestInterceptor(Interceptor):
    """Parse requests ourselves; undecodable ones become INVALID_ARGUMENT with a one-line log at most.

    The wrapped handler of each method is built once and reused: this runs on every call, and building
    handlers per call cost a measurable share of a small call's latency.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, Handler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: not cached, so the table holds registered methods only
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, handler: Handler, method: str) -> Handler:
        if handler.request_deserializer is None:
            return handler
        behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        parse = _tolerant(handler.request_deserializer, method.rsplit("/", 1)[-1])
        if handler.response_streaming and getattr(behavior, "experimental_non_blocking", False):
            return _wrap_non_blocking(handler, behavior, parse, method)
        ours = method.startswith(AGENT_PREFIX)  # our servicer maps InputError to INVALID_ARGUMENT itself

        def refuse(context: grpc.ServicerContext, bad: _Malformed) -> None:
            if ours:
                raise MalformedRequestError(bad.message)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad.message)

        def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            for request in requests:
                if isinstance(request, _Malformed):
                    refuse(context, request)
                yield request

        if handler.request_streaming:
            inner_stream = handler.stream_stream if handler.response_streaming else handler.stream_unary
            assert inner_stream is not None

            def stream_behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return inner_stream(checked(requests, context), context)

            make = (
                grpc.stream_stream_rpc_method_handler
                if handler.response_streaming
                else grpc.stream_unary_rpc_method_handler
            )
            return make(stream_behavior, parse, handler.response_serializer)

        inner_unary = handler.unary_stream if handler.response_streaming else handler.unary_unary
        assert inner_unary is not None

        def unary_behavior(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                log.info("%s -> INVALID_ARGUMENT: %s", method, request.message)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return inner_unary(request, context)

        make_unary = (
            grpc.unary_stream_rpc_method_handler if handler.response_streaming else grpc.unary_unary_rpc_method_handler
        )
        return make_unary(unary_behavior, parse, handler.response_serializer)


def _wrap_non_blocking(handler: Handler, behavior: Any, parse: Callable[[bytes], Any], method: str) -> Handler:
    """A callback-style streaming handler (health Watch: it holds no thread), kept callback-style.

    gRPC Python calls it as ``behavior(request, context, send_response_callback)`` when the function carries
    ``experimental_non_blocking``, so the wrapper carries the same attributes.
    """

    def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        for request in requests:
            if isinstance(request, _Malformed):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            yield request

    def non_blocking(request: Any, context: grpc.ServicerContext, send_response_callback: Any) -> Any:
        if handler.request_streaming:
            return behavior(checked(request, context), context, send_response_callback)
        if isinstance(request, _Malformed):
            log.info("%s -> INVALID_ARGUMENT: %s", method, request.message)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return behavior(request, context, send_response_callback)

    for name in ("experimental_non_blocking", "experimental_thread_pool"):
        setattr(non_blocking, name, getattr(behavior, name, None))
    make = grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
    return make(non_blocking, parse, handler.response_serializer)
