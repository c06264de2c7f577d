#!/usr/bin/env python3
# Writes the binary seed inputs of fuzz/corpus/cri_message, downstream (script mode), upstream
# and hpack. The raw-mode downstream seeds (mode bytes 0x00, 0x02, 0x01) are what the client of a
# script seed sent: SHIM_FUZZ_DUMP=FILE fuzz_downstream_replay SEED, then prefix the mode byte.
# Text seeds (reference, config, configmap) are written by hand.
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, value):
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def image_spec(image, annotations=(), extra=b""):
    out = field(1, image)
    for k, v in annotations:
        out += field(2, field(1, k) + field(2, v))
    return out + extra


# Unknown fields the shim must carry: runtime_handler-like tags beyond its .proto, a sandbox
# config (PullImageRequest field 3), container metadata (ContainerConfig field 1).
UNKNOWN = field(99, "unknown-string") + field(100, 7)
SANDBOX = field(3, field(1, field(1, "pod") + field(2, "uid") + field(3, "ns")))

PULLS = [
    field(1, image_spec("nginx")) + SANDBOX,
    field(1, image_spec("registry.k8s.io/pause:3.9", [("a", "b")], UNKNOWN))
    + field(2, field(1, "user") + field(2, "secret-pass") + field(4, "registry.k8s.io"))
    + SANDBOX
    + UNKNOWN,
    field(1, image_spec("quay.io/org/app@sha256:" + "ab" * 32)),
    field(1, image_spec("mirror.example.com/library/busybox:1.36")),
    field(1, image_spec("backup.example.com:5000/proxy-cache/team/app:v1")),
    field(1, image_spec("docker.io/team/app:1.0")) + field(2, field(3, "dXNlcjpwYXNz")),
    field(1, image_spec("sha256:" + "c" * 64)),
    field(1, image_spec("Invalid//Name")),
]
STATUS = [
    field(1, image_spec("nginx:1.25")) + field(2, 1),
    field(1, image_spec("localhost:5000/app", extra=UNKNOWN)) + UNKNOWN,
]
CREATE = [
    field(1, "sandbox-id")
    + field(2, field(1, field(1, "ctr")) + field(2, image_spec("nginx")) + field(3, "sh"))
    + UNKNOWN,
]
REMOVE = [field(1, image_spec("busybox:latest"))]
STATUS_RESPONSES = [
    field(1, field(1, "sha256:" + "d" * 64) + field(2, "nginx:latest") + field(4, 1234)
          + field(6, "root") + field(7, image_spec("nginx")) + field(8, 1))
    + field(2, field(1, "info") + field(2, "{}")),
]


def frame(message):
    return b"\0" + struct.pack(">I", len(message)) + message


def write(directory, name, data):
    path = os.path.join(HERE, "corpus", directory)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def cri_message_seeds():
    groups = [(0, PULLS), (1, STATUS), (2, CREATE), (3, REMOVE), (4, STATUS_RESPONSES)]
    for method, messages in groups:
        for i, message in enumerate(messages):
            write("cri_message", f"seed-m{method}-{i}", bytes([method, 0]) + message)
            write("cri_message", f"seed-m{method}-{i}-framed-c2",
                  bytes([method, 3]) + frame(message))


PATHS = {"pull": 0, "status": 1, "remove": 2, "list": 3, "create": 4, "pull-v1alpha2": 5,
         "version": 7, "reset": 9, "empty": 11}


def request(path, body, flags=0):
    return bytes([0, PATHS[path], flags]) + struct.pack(">H", len(body)) + body


SETTLE = b"\x03"
CANCEL = b"\x04\x08"  # RST_STREAM CANCEL of the last request


def downstream_seeds():
    # Mode byte: bit 0 runtime absent, bits 1-2 = 2: script.
    scripts = {
        "pull-status-create": request("pull", PULLS[0]) + SETTLE + request("status", STATUS[0])
        + request("create", CREATE[0]) + SETTLE,
        "pull-failover": request("pull", PULLS[1]) + request("pull", PULLS[3]) + SETTLE
        + request("pull", PULLS[4]) + SETTLE,
        "pull-joined-then-cancel": request("pull", PULLS[2]) + request("pull", PULLS[2]) + CANCEL
        + SETTLE,
        "remove-list": request("remove", REMOVE[0]) + request("list", field(1, field(1, image_spec(
            "nginx")))) + request("list", b"") + SETTLE,
        "relayed": request("version", field(1, "v1")) + request("reset", b"") + SETTLE
        + request("empty", b"") + SETTLE,
        "v1alpha2-raw-body": request("pull-v1alpha2", frame(PULLS[0]), flags=1)
        + request("status", b"\x01\x00\x00\x00\x02xx", flags=1) + SETTLE,
        "ping-garbage-disconnect": b"\x05\x10" + request("pull", PULLS[5]) + b"\x06\x04abcd"
        + b"\x07",
        "headers-only": request("status", b"", flags=4) + request("version", b"", flags=4 | 8)
        + SETTLE,
    }
    for name, script in scripts.items():
        write("downstream", f"seed-script-{name}", bytes([4]) + script)
    write("downstream", "seed-script-absent-runtime", bytes([5]) + scripts["pull-status-create"])


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) \
        + payload


def header_block(*fields):
    # Literals without indexing, names and values as they are (lengths under 127).
    out = b""
    for name, value in fields:
        out += b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()
    return out


def pieces(data, size):
    # The upstream target's script: a length byte before each piece.
    out = b""
    for i in range(0, len(data), size):
        chunk = data[i:i + size]
        out += bytes([len(chunk)]) + chunk
    return out


def upstream_seeds():
    # Mode byte bit 0: the runtime's SETTINGS come first. The relay's streams to the runtime are
    # 1 (Version), 3 (the pull's own call) and 5 (ListContainers, request left open).
    ok_headers = header_block((":status", "200"), ("content-type", "application/grpc"))
    ok_trailers = header_block(("grpc-status", "0"))
    answer_1 = h2_frame(1, 4, 1, ok_headers) + h2_frame(0, 0, 1, frame(field(1, "0.1.0"))) \
        + h2_frame(1, 5, 1, ok_trailers)
    pulled = h2_frame(1, 4, 3, ok_headers) + h2_frame(0, 0, 3, frame(field(1, "sha256:" + "a" * 64))) \
        + h2_frame(1, 5, 3, ok_trailers)
    not_found = h2_frame(1, 5, 3, header_block((":status", "200"), ("grpc-status", "5"),
                                               ("grpc-message", "not found")))
    settings_ack = h2_frame(4, 1, 0)
    scripts = {
        "answers": settings_ack + answer_1 + pulled + h2_frame(1, 4, 5, ok_headers)
        + h2_frame(8, 0, 0, struct.pack(">I", 65535)),
        "goaway-midway": settings_ack + answer_1 + h2_frame(7, 0, 0, struct.pack(">II", 1, 0))
        + not_found,
        "resets-and-pings": settings_ack + h2_frame(3, 0, 1, struct.pack(">I", 8))
        + h2_frame(6, 0, 0, b"pingpong") + not_found + h2_frame(3, 0, 5, struct.pack(">I", 2)),
        "continuation-padding": settings_ack + h2_frame(1, 0x08, 1, b"\x02" + ok_headers[:5] + b"pp")
        + h2_frame(9, 4, 1, ok_headers[5:]) + h2_frame(0, 0x08, 1, b"\x01" + frame(b"") + b"p")
        + h2_frame(1, 5, 1, ok_trailers),
    }
    for name, script in scripts.items():
        write("upstream", f"seed-{name}", bytes([1]) + pieces(script, 40))
    write("upstream", "seed-answers-whole", bytes([3]) + pieces(scripts["answers"], 255))


def hpack_seeds():
    # Series of blocks, each after a two-byte length: RFC 7541 C.3 (literals), C.4 (Huffman), a
    # table size change, and a literal naming the entry its own insertion evicts (4.4).
    def series(*blocks):
        return b"".join(struct.pack(">H", len(b)) + b for b in blocks)
    rfc_c3 = series(bytes.fromhex("828684410f7777772e6578616d706c652e636f6d"),
                    bytes.fromhex("828684be58086e6f2d6361636865"),
                    bytes.fromhex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"))
    rfc_c4 = series(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"),
                    bytes.fromhex("828684be5886a8eb10649cbf"))
    evicting = series(b"\x3f\x21\x40\x02aa\x02bb", b"\x7e\x02cc", b"\xbe")
    grpc = series(b"\x83\x86\x44\x22/runtime.v1.RuntimeService/Version"
                  + b"\x5f\x10application/grpc\x40\x02te\x08trailers",
                  b"\x83\x86\xc0\xbf\xbe", b"\x20\x88")
    for name, data in [("rfc-c3", rfc_c3), ("rfc-c4", rfc_c4), ("evicting", evicting),
                       ("grpc-request", grpc)]:
        write("hpack", f"seed-{name}", data)


if __name__ == "__main__":
    cri_message_seeds()
    downstream_seeds()
    upstream_seeds()
    hpack_seeds()
