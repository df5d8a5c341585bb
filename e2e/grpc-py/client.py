"""The gRPC client of the end-to-end tests: makes one call of each kind to
weft.test.Streams through a proxy and prints one JSON object with the
outcome of each (status code name and what came back). Real grpcio, cleartext
HTTP/2 with prior knowledge; --authority sets the :authority a gateway routes
by."""

import argparse
import json

import grpc

import streams_pb2
import streams_pb2_grpc

MAX_MESSAGE = 64 * 1024 * 1024


def outcome(fn):
    try:
        return {"code": "OK", **fn()}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--authority")
    p.add_argument("--large", type=int, default=3 * 1024 * 1024)
    args = p.parse_args()
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    with grpc.insecure_channel(args.target, options=options) as channel:
        stub = streams_pb2_grpc.StreamsStub(channel)
        unrouted = streams_pb2_grpc.UnroutedStub(channel)
        big = bytes(range(256)) * (args.large // 256)
        results = {
            "unary": outcome(lambda: {"server": stub.Unary(streams_pb2.Msg(data=b"hello"), timeout=10).server}),
            "large": outcome(lambda: {"bytes": len(stub.Unary(streams_pb2.Msg(data=big), timeout=20).data)}),
            "server_stream": outcome(
                lambda: {"messages": sum(1 for _ in stub.ServerStream(streams_pb2.Msg(data=b"x" * 1000, count=50), timeout=10))}
            ),
            "client_stream": outcome(
                lambda: {"count": stub.ClientStream(iter([streams_pb2.Msg(data=b"y" * 1000)] * 40), timeout=10).count}
            ),
            "bidi": outcome(
                lambda: {
                    "messages": sum(
                        len(m.data) == 100_000
                        for m in stub.Bidi(iter([streams_pb2.Msg(data=b"z" * 100_000)] * 20), timeout=10)
                    )
                }
            ),
            "deadline": outcome(lambda: {"server": stub.Sleep(streams_pb2.Msg(sleep_ms=3000), timeout=0.5).server}),
            "unmatched": outcome(lambda: {"server": unrouted.Nothing(streams_pb2.Msg(), timeout=10).server}),
        }
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
