#!/usr/bin/python3
"""An independent, C-core gRPC reader of a job's output for the streaming bench (bench/streaming.ts).

Uses Debian's python3-grpcio, no generated stubs: GetJobsStream through channel.unary_stream with
raw-bytes (de)serializers, the request and the DataChunk fields encoded and parsed by hand.

    /usr/bin/python3 bench/grpc_client.py ADDRESS CERT_DIR JOB_ID [IDENTITY]

Prints one JSON line: payload bytes received, messages, seconds from the first message to the
last, and seconds from the call's start to the last.
"""
import json
import sys
import time

import grpc


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data, at):
    shift = 0
    value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def payload_length(message):
    """The length of DataChunk.payload (field 1, bytes) in one serialized message."""
    at = 0
    while at < len(message):
        key, at = read_varint(message, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, at = read_varint(message, at)
        elif wire == 2:
            length, at = read_varint(message, at)
            if field == 1:
                return length
            at += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return 0


def main():
    address, cert_dir, job_id = sys.argv[1:4]
    identity = sys.argv[4] if len(sys.argv) > 4 else "admin"

    def read(name):
        with open(f"{cert_dir}/{name}", "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("ca-cert.pem"),
        private_key=read(f"{identity}-client-key.pem"),
        certificate_chain=read(f"{identity}-client-cert.pem"),
    )
    channel = grpc.secure_channel(
        address,
        credentials,
        options=[
            ("grpc.ssl_target_name_override", "localhost"),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ],
    )
    call = channel.unary_stream(
        "/jobworker.JobService/GetJobsStream",
        request_serializer=None,
        response_deserializer=None,
    )
    encoded_id = job_id.encode()
    request = b"\x0a" + varint(len(encoded_id)) + encoded_id
    total = 0
    messages = 0
    start = time.monotonic()
    first = None
    for message in call(request, timeout=600):
        if first is None:
            first = time.monotonic()
        total += payload_length(message)
        messages += 1
    end = time.monotonic()
    channel.close()
    print(json.dumps({
        "bytes": total,
        "messages": messages,
        "seconds": end - (first if first is not None else start),
        "totalSeconds": end - start,
    }))


if __name__ == "__main__":
    main()
