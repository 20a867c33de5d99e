"""GenericService: any pipeline task by name, through the shared unary path (unary.py) with the generic
adapter (tasks/generic.py)."""

from __future__ import annotations

import grpc
from pipelined.v1 import generic_pb2, generic_pb2_grpc

from ..tasks import generic
from .calls import CallInfo, rpc
from .unary import Servicer


class GenericServicer(Servicer, generic_pb2_grpc.GenericServiceServicer):
    @rpc("generic")
    async def Run(
        self, request: generic_pb2.RunRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> generic_pb2.RunResponse:
        return await self.unary(generic.ADAPTER, request, context, call)
