"""GenericService: any pipeline task by name; tasks/generic.py does the conversions."""

from __future__ import annotations

import grpc
from pipelined.v1 import generic_pb2, generic_pb2_grpc

from ..errors import InvalidInput
from ..tasks import generic
from .calls import CallInfo, ServerState, rpc


class GenericServicer(generic_pb2_grpc.GenericServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    @rpc("generic")
    async def Run(
        self, request: generic_pb2.RunRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> generic_pb2.RunResponse:
        if not request.task:
            raise InvalidInput("task is required, e.g. 'table-question-answering'")
        call.task = request.task
        instance = self.state.registry.ready(request.model, request.task)
        call.model = instance.name
        return await generic.run(
            instance, request, self.state.config, self.state.decoded_bytes, context.time_remaining()
        )
