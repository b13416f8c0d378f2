import ArgumentParser
import CMemoryMapShim
import Colony
import NIOCore

/// `colony-bench wire`: MessagePack encoding and decoding of a mixed document, against
/// Python's `msgpack` C extension in the same run.
struct Wire: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "MessagePack encode/decode throughput, compared with Python's msgpack.")

    @Option(help: "Seconds to run each direction.")
    var seconds: Double = 1.0

    @Option(help: "Records in the document.")
    var records: Int = 1_000

    @Flag(help: "Skip the Python reference run.")
    var noCompare = false

    func validate() throws {
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
        guard records > 0, records <= 1_000_000 else { throw ValidationError("--records must be in 1...1000000") }
    }

    /// The same document the Python script builds: records of small maps, strings, integers.
    static func document(records: Int) -> WireValue {
        .array((0..<records).map { index in
            [
                "id": .integer(index),
                "name": .string("record-\(index)"),
                "active": .bool(index % 2 == 0),
                "count": .integer(index * 37 % 1000),
                "balance": .integer(-index * 1_000_003),
                "tags": ["alpha", "beta", .string("t\(index % 7)")],
                "owner": ["user": .string("u\(index % 50)"), "level": .integer(index % 5)],
            ]
        })
    }

    static func countValues(_ value: WireValue) -> Int {
        switch value {
        case .array(let elements): 1 + elements.reduce(0) { $0 + countValues($1) }
        case .map(let pairs): 1 + pairs.reduce(0) { $0 + countValues($1.key) + countValues($1.value) }
        default: 1
        }
    }

    func run() throws {
        let document = Wire.document(records: records)
        let encoded = document.encoded()
        let size = encoded.readableBytes
        let values = Wire.countValues(document)

        var output = ByteBuffer()
        output.reserveCapacity(size)
        let encodesPerSecond = opsPerSecond(seconds: seconds, batch: 1) {
            output.clear()
            output.writeWireValue(document)
        }
        let decodesPerSecond = try opsPerSecond(seconds: seconds, batch: 1) {
            var input = encoded
            _ = try input.readWireValue()
        }
        let swift: [String: Double] = [
            "encode_mb_per_s": encodesPerSecond * Double(size) / 1e6,
            "decode_mb_per_s": decodesPerSecond * Double(size) / 1e6,
            "values_per_s": decodesPerSecond * Double(values),
        ]
        var report: [String: Any] = [
            "benchmark": "wire",
            "parameters": ["seconds": seconds, "records": records, "document_bytes": size, "values_per_document": values],
        ]
        for (key, value) in swift { report[key] = value }
        if !noCompare {
            switch runPythonReference(script: wirePythonScript, arguments: [String(seconds), String(records)]) {
            case .success(let python):
                report["python_msgpack"] = python
                if let pythonSize = python["document_bytes"], Int(pythonSize) != size {
                    report["warning"] = "Python's document is \(Int(pythonSize)) bytes, Swift's \(size): the documents differ"
                }
                var ratios: [String: Double] = [:]
                for (key, value) in swift {
                    if let reference = python[key], reference > 0 { ratios[key] = value / reference }
                }
                report["ratio"] = ratios
            case .failure(let unavailable):
                report["python_msgpack"] = ["unavailable": unavailable.reason + "; pip install msgpack"]
            }
        }
        print(jsonLine(report))
    }
}

/// The Python side of `colony-bench wire`: the same document, timed the same way.
let wirePythonScript = #"""
import json, sys, time
try:
    import msgpack
except ImportError:
    sys.exit("the msgpack package is not installed: pip install msgpack")
if not msgpack.version or getattr(msgpack, "Packer").__module__.endswith("fallback"):
    sys.exit("msgpack's C extension is not available")

seconds, records = float(sys.argv[1]), int(sys.argv[2])
doc = [{"id": i, "name": f"record-{i}", "active": i % 2 == 0, "count": i * 37 % 1000,
        "balance": -i * 1_000_003, "tags": ["alpha", "beta", f"t{i % 7}"],
        "owner": {"user": f"u{i % 50}", "level": i % 5}} for i in range(records)]

def count(value):
    if isinstance(value, list):
        return 1 + sum(count(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(count(k) + count(v) for k, v in value.items())
    return 1

def per_second(body):
    body()
    start = time.perf_counter(); n = 0
    while True:
        body(); n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed

packed = msgpack.packb(doc, use_bin_type=True)
packer = msgpack.Packer(use_bin_type=True)
encodes = per_second(lambda: packer.pack(doc))
decodes = per_second(lambda: msgpack.unpackb(packed, raw=False))
print(json.dumps({"encode_mb_per_s": encodes * len(packed) / 1e6, "decode_mb_per_s": decodes * len(packed) / 1e6,
                  "values_per_s": decodes * count(doc), "document_bytes": len(packed)}))
"""#
