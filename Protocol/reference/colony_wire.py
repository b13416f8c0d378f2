"""A second, independent implementation of Colony's wire protocol (Protocol/SPEC.md),
written from the spec with Python's `msgpack` package.

It produces the test vectors in Protocol/vectors/ (`python3 colony_wire.py vectors`) and
checks the Swift implementation's bytes in the interoperability tests
(`python3 colony_wire.py check FILE`). It is also a starting point for Python clients.
"""
import hashlib
import hmac
import json
import struct
import sys

import msgpack

OBJECT_REF_EXT = 1
HEADER = struct.Struct(">IBBHQ")  # length, kind, flags, reserved, request id

KINDS = {
    "hello": 0x01, "challenge": 0x02, "proof": 0x03, "welcome": 0x04,
    "request": 0x10, "response": 0x11, "error": 0x12, "cancel": 0x13,
    "ping": 0x14, "pong": 0x15, "goodbye": 0x16,
    "worker-hello": 0x20, "task-assign": 0x21, "task-result": 0x22,
    "task-failure": 0x23, "heartbeat": 0x24, "drain": 0x25,
}
MORE = 0x01


class ObjectRef:
    """A manager object reference: MessagePack ext type 1, 8 bytes: type code, 56-bit id."""

    def __init__(self, type_code, object_id):
        self.type_code, self.object_id = type_code, object_id

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and (self.type_code, self.object_id) == (other.type_code, other.object_id)

    def __repr__(self):
        return f"ObjectRef({self.type_code}, {self.object_id})"


def _default(value):
    if isinstance(value, ObjectRef):
        return msgpack.ExtType(OBJECT_REF_EXT, struct.pack(">Q", value.type_code << 56 | value.object_id))
    raise TypeError(f"not part of Colony's value model: {value!r}")


def _ext_hook(code, data):
    if code == OBJECT_REF_EXT and len(data) == 8:
        word = struct.unpack(">Q", data)[0]
        return ObjectRef(word >> 56, word & ((1 << 56) - 1))
    raise ValueError(f"extension type {code} is not part of Colony's value model")


def pack(value):
    return msgpack.packb(value, use_bin_type=True, default=_default)


def unpack(data):
    return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)


# Tagged JSON, the vectors' language-neutral spelling of values.
def from_tagged(tagged):
    (tag, body), = tagged.items()
    if tag == "nil":
        return None
    if tag in ("bool", "str"):
        return body
    if tag in ("int", "uint"):
        return int(body)
    if tag == "double":
        return struct.unpack(">d", bytes.fromhex(body))[0]
    if tag == "bin":
        return bytes.fromhex(body)
    if tag == "array":
        return [from_tagged(item) for item in body]
    if tag == "map":
        return {from_tagged(k): from_tagged(v) for k, v in body}
    if tag == "ref":
        return ObjectRef(body["type"], body["id"])
    raise ValueError(tag)


def frame(kind, request_id, body, flags=0):
    return HEADER.pack(len(body), KINDS[kind], flags, 0, request_id) + body


def parse_frames(data):
    frames = []
    while data:
        length, kind, flags, reserved, request_id = HEADER.unpack_from(data)
        assert reserved == 0
        frames.append((kind, flags, request_id, data[HEADER.size:HEADER.size + length]))
        data = data[HEADER.size + length:]
    return frames


# The handshake (SPEC.md, "Handshake").
def transcript(hello_body, challenge_body):
    digest = hashlib.sha256(b"colony/1 transcript")
    for part in (hello_body, challenge_body):
        digest.update(struct.pack(">I", len(part)) + part)
    return digest.digest()


def client_proof(key, hello_body, challenge_body):
    return hmac.new(key, b"colony/1 client proof" + transcript(hello_body, challenge_body), "sha256").digest()


def server_proof(key, hello_body, challenge_body):
    return hmac.new(key, b"colony/1 server proof" + transcript(hello_body, challenge_body), "sha256").digest()


def handshake_vector(key, client_nonce, server_nonce, server_key=None, session=7):
    """The four frames of a handshake with fixed nonces; with `server_key` different from
    `key`, the failing variant that ends in an AuthFailed error frame."""
    server_key = key if server_key is None else server_key
    hello = pack({"protocol": "colony", "versions": [1], "features": [], "nonce": client_nonce,
                  "role": "client", "agent": "colony-test"})
    challenge = pack({"version": 1, "features": [], "nonce": server_nonce})
    proof = pack({"proof": client_proof(key, hello, challenge)})
    frames = {"hello": frame("hello", 0, hello), "challenge": frame("challenge", 0, challenge),
              "proof": frame("proof", 0, proof)}
    if hmac.compare_digest(client_proof(key, hello, challenge), client_proof(server_key, hello, challenge)):
        welcome = pack({"proof": server_proof(server_key, hello, challenge), "session": session,
                        "max_frame": 1 << 20, "max_in_flight": 4096, "agent": "colony-test"})
        frames["welcome"] = frame("welcome", 0, welcome)
    else:
        frames["error"] = frame("error", 0, pack([2, "authentication failed", None]))
    return {name: data.hex() for name, data in frames.items()}


def to_tagged(value):
    if value is None:
        return {"nil": None}
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"uint": str(value)} if value > (1 << 63) - 1 else {"int": str(value)}
    if isinstance(value, float):
        return {"double": struct.pack(">d", value).hex()}
    if isinstance(value, str):
        return {"str": value}
    if isinstance(value, bytes):
        return {"bin": value.hex()}
    if isinstance(value, list):
        return {"array": [to_tagged(item) for item in value]}
    if isinstance(value, dict):
        return {"map": [[to_tagged(k), to_tagged(v)] for k, v in value.items()]}
    if isinstance(value, ObjectRef):
        return {"ref": {"type": value.type_code, "id": value.object_id}}
    raise TypeError(value)


def value_vectors():
    """Canonical values (shortest encodings) of every format family."""
    cases = [
        ("nil", None), ("true", True), ("false", False),
        ("zero", 0), ("fixint-max", 127), ("uint8-min", 128), ("uint8-max", 255), ("uint16-min", 256),
        ("uint16-max", 65535), ("uint32-min", 65536), ("uint32-max", 4294967295), ("uint64-min", 4294967296),
        ("int64-max", (1 << 63) - 1), ("uint64-max", (1 << 64) - 1),
        ("negative-fixint", -1), ("negative-fixint-min", -32), ("int8", -33), ("int8-min", -128),
        ("int16", -129), ("int16-min", -32768), ("int32", -32769), ("int32-min", -2147483648),
        ("int64", -2147483649), ("int64-min", -(1 << 63)),
        ("double-zero", 0.0), ("double", 1.5), ("double-negative", -2.25), ("double-large", 1e300),
        ("str-empty", ""), ("fixstr", "a"), ("fixstr-max", "x" * 31), ("str8", "y" * 32), ("str8-max", "z" * 255),
        ("str16", "w" * 256), ("str-unicode", "h\u00e9llo \u2713 \U0001f41d"),
        ("bin-empty", b""), ("bin8", b"\x00\x01\xff"), ("bin16", bytes(range(256)) * 2),
        ("array-empty", []), ("fixarray", [1, 2, 3]), ("fixarray-max", list(range(15))),
        ("array16", list(range(16))), ("array-nested", [[1], [2, [3, None]], "s"]),
        ("map-empty", {}), ("fixmap", {"a": 1}), ("fixmap-max", {f"k{i}": i for i in range(15)}),
        ("map16", {f"k{i}": i for i in range(16)}), ("map-int-keys", {1: "one", -2: "minus two"}),
        ("map-nested", {"list": [1, {"deep": True}], "bytes": b"\x07", "none": None}),
        ("object-ref", ObjectRef(1, 42)), ("object-ref-max", ObjectRef(17, (1 << 56) - 1)),
        ("object-refs-in-map", {"d": ObjectRef(1, 1), "q": [ObjectRef(6, 2)]}),
    ]
    vectors = [{"name": name, "hex": pack(value).hex(), "value": to_tagged(value)} for name, value in cases]
    # Valid but not shortest: decoders accept them, encoders never write them.
    decode_only = [
        ("uint8-small", "cc05", 5), ("uint64-small", "cf0000000000000007", 7), ("int8-positive", "d005", 5),
        ("int64-positive", "d30000000000000100", 256), ("float32", "ca3fc00000", 1.5),
        ("str8-short", "d90161", "a"), ("array16-short", "dc000101", [1]), ("map32-short", "df00000001a16101", {"a": 1}),
    ]
    for name, hex_, value in decode_only:
        vectors.append({"name": name, "hex": hex_, "value": to_tagged(value), "decode_only": True})
    return vectors


def invalid_value_vectors():
    """Bytes every decoder must reject, with the error class the Swift decoder reports."""
    return [
        {"name": "empty", "hex": "", "error": "truncated"},
        {"name": "truncated-uint16", "hex": "cd01", "error": "truncated"},
        {"name": "truncated-str", "hex": "a3616263"[:6], "error": "truncated"},
        {"name": "reserved-c1", "hex": "c1", "error": "reservedByte"},
        {"name": "invalid-utf8", "hex": "a2c328", "error": "invalidUTF8"},
        {"name": "array32-count-beyond-input", "hex": "ddffffffff01", "error": "truncated"},
        {"name": "map32-count-beyond-input", "hex": "df7fffffff", "error": "truncated"},
        {"name": "bin32-length-beyond-input", "hex": "c6ffffffff00", "error": "truncated"},
        {"name": "unknown-extension", "hex": "d40500", "error": "unsupportedExtension"},
        {"name": "object-ref-wrong-size", "hex": "d50100ff", "error": "unsupportedExtension"},
        {"name": "too-deep", "hex": "91" * 100 + "c0", "error": "tooDeep", "python_rejects": False},
        {"name": "trailing-bytes", "hex": "c0c0", "error": "trailingBytes"},
    ]


def frame_vectors():
    """Frames as they appear on the wire, one vector per byte string."""
    def vector(name, kind, request_id, value=None, flags=0, body=None):
        body = pack(value) if body is None else body
        entry = {"name": name, "hex": frame(kind, request_id, body, flags).hex(), "kind": KINDS[kind],
                 "flags": flags, "request_id": request_id, "body": body.hex()}
        if value is not None or body == b"\xc0":
            entry["value"] = to_tagged(value)
        return entry

    big = bytes(range(256)) * 10
    chunks = [big[i:i + 1000] for i in range(0, len(big), 1000)]
    return {
        "frames": [
            vector("request-new-dict", "request", 1, ["new", "dict", "config", {}]),
            vector("request-call", "request", 2, ["call", 5, "setitem", ["k", 42]]),
            vector("response-nil", "response", 2, None),
            vector("error-key", "error", 3, [8, "KeyError: 'missing'", "missing"]),
            vector("cancel", "cancel", 9, body=b""),
            vector("ping", "ping", 0, body=b""),
            vector("large-request-id", "response", (1 << 64) - 1, True),
            vector("worker-hello", "worker-hello", 0,
                   {"node": "n1", "capacity": 4, "tasks": ["square"], "pid": 4242}),
        ],
        "chunked": {
            "max_body": 1000,
            "body": big.hex(),
            "frames": [frame("response", 77, chunk, MORE if i < len(chunks) - 1 else 0).hex()
                       for i, chunk in enumerate(chunks)],
        },
        "invalid": [
            {"name": "too-large", "hex": HEADER.pack(2 << 20, KINDS["request"], 0, 0, 5).hex(),
             "max_body": 1 << 20, "error": "tooLarge"},
            {"name": "reserved-bits", "hex": HEADER.pack(0, KINDS["ping"], 0, 1, 0).hex(),
             "max_body": 1 << 20, "error": "malformedHeader"},
            {"name": "undefined-flag", "hex": HEADER.pack(0, KINDS["ping"], 0x80, 0, 0).hex(),
             "max_body": 1 << 20, "error": "malformedHeader"},
        ],
    }


def main(argv):
    if len(argv) == 2 and argv[1] == "repack":
        # Reads a JSON list of hex-encoded values on stdin; prints each unpacked and repacked.
        print(json.dumps([pack(unpack(bytes.fromhex(item))).hex() for item in json.load(sys.stdin)]))
        return 0
    if len(argv) == 2 and argv[1] == "frame-vectors":
        print(json.dumps(frame_vectors(), indent=1))
        return 0
    if len(argv) == 2 and argv[1] == "value-vectors":
        print(json.dumps(value_vectors(), indent=1))
        return 0
    if len(argv) == 2 and argv[1] == "invalid-value-vectors":
        print(json.dumps(invalid_value_vectors(), indent=1))
        return 0
    if len(argv) == 3 and argv[1] == "check-values":
        # Repack every value vector with msgpack and compare with the file's bytes.
        vectors = json.load(open(argv[2]))
        failures = 0
        for vector in vectors:
            if not vector.get("python", True):
                continue
            expected = bytes.fromhex(vector["hex"])
            value = from_tagged(vector["value"])
            packed = pack(value)
            decoded = unpack(expected)
            if (packed != expected and not vector.get("decode_only")) or decoded != value:
                failures += 1
                print(f"MISMATCH {vector['name']}: packed {packed.hex()} decoded {decoded!r}")
        for vector in json.load(open(argv[2].replace("values.json", "invalid-values.json"))):
            try:
                unpack(bytes.fromhex(vector["hex"]))
                if vector.get("python_rejects", True):
                    failures += 1
                    print(f"ACCEPTED invalid {vector['name']}")
            except Exception:
                pass
        print(f"{len(vectors)} value vectors checked, {failures} failed")
        return 1 if failures else 0
    if len(argv) == 3 and argv[1] == "check-handshake":
        vectors = json.load(open(argv[2]))
        failures = 0
        for vector in vectors:
            server_key = bytes.fromhex(vector.get("server_key", vector["key"]))
            produced = handshake_vector(bytes.fromhex(vector["key"]), bytes.fromhex(vector["client_nonce"]),
                                        bytes.fromhex(vector["server_nonce"]), server_key)
            if produced != vector["frames"]:
                failures += 1
                print(f"MISMATCH {vector['name']}")
        print(f"{len(vectors)} handshake vectors checked, {failures} failed")
        return 1 if failures else 0
    if len(argv) == 2 and argv[1] == "handshake-vectors":
        key = bytes(range(32))
        client_nonce = bytes([0xC1] * 32)
        server_nonce = bytes([0x5E] * 32)
        vectors = [
            {"name": "success", "key": key.hex(), "client_nonce": client_nonce.hex(),
             "server_nonce": server_nonce.hex(), "frames": handshake_vector(key, client_nonce, server_nonce)},
            {"name": "wrong-key", "key": key.hex(), "server_key": bytes(range(1, 33)).hex(),
             "client_nonce": client_nonce.hex(), "server_nonce": server_nonce.hex(),
             "frames": handshake_vector(key, client_nonce, server_nonce, bytes(range(1, 33)))},
        ]
        print(json.dumps(vectors, indent=1))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
