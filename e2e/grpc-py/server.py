"""The gRPC server of the end-to-end tests: weft.test.Streams (streams.proto)
on the address given, stubs importable from PYTHONPATH. Real grpcio, so the
proxies are tested against what users run."""

import argparse
import time
from concurrent import futures

import grpc

import streams_pb2
import streams_pb2_grpc

MAX_MESSAGE = 64 * 1024 * 1024


class Streams(streams_pb2_grpc.StreamsServicer):
    def __init__(self, name):
        self.name = name

    def Unary(self, request, context):
        return streams_pb2.Msg(data=request.data, count=len(request.data), server=self.name)

    def ServerStream(self, request, context):
        for _ in range(request.count):
            yield streams_pb2.Msg(data=request.data, server=self.name)

    def ClientStream(self, request_iterator, context):
        total = sum(len(m.data) for m in request_iterator)
        return streams_pb2.Msg(count=total, server=self.name)

    def Bidi(self, request_iterator, context):
        for m in request_iterator:
            yield streams_pb2.Msg(data=m.data, server=self.name)

    def Sleep(self, request, context):
        time.sleep(request.sleep_ms / 1000.0)
        return streams_pb2.Msg(server=self.name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--name", default="server")
    args = p.parse_args()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)],
    )
    streams_pb2_grpc.add_StreamsServicer_to_server(Streams(args.name), server)
    server.add_insecure_port(args.listen)
    server.start()
    print(f"serving weft.test.Streams on {args.listen}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
