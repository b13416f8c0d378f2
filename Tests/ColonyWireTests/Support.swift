import ColonyWire
import Foundation
import NIOCore
import Testing

/// The repository root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

func loadJSON(_ relativePath: String) throws -> Any {
    let data = try Data(contentsOf: repositoryRoot.appendingPathComponent(relativePath))
    return try JSONSerialization.jsonObject(with: data)
}

func bytes(hex: String) -> [UInt8] {
    var result: [UInt8] = []
    result.reserveCapacity(hex.count / 2)
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        result.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return result
}

func hex(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

func hex(_ buffer: ByteBuffer) -> String { hex(buffer.readableBytesView) }

/// The vectors' tagged JSON spelling of a value (see Protocol/reference/colony_wire.py).
func wireValue(tagged: Any) throws -> WireValue {
    guard let object = tagged as? [String: Any], object.count == 1, let (tag, body) = object.first else {
        throw VectorError("not a tagged value: \(tagged)")
    }
    switch tag {
    case "nil": return .null
    case "bool": return .bool(body as! Bool)
    case "int": return .int(Int64(body as! String)!)
    case "uint": return .integer(UInt64(body as! String)!)
    case "double": return .double(Double(bitPattern: UInt64(body as! String, radix: 16)!))
    case "str": return .string(body as! String)
    case "bin": return .bytes(bytes(hex: body as! String))
    case "array": return .array(try (body as! [Any]).map(wireValue(tagged:)))
    case "map":
        return .map(try (body as! [[Any]]).map { WirePair(try wireValue(tagged: $0[0]), try wireValue(tagged: $0[1])) })
    case "ref":
        let reference = body as! [String: Any]
        return .objectRef(ObjectRef(type: ObjectType(rawValue: UInt8(reference["type"] as! Int)), id: UInt64(reference["id"] as! Int)))
    default: throw VectorError("unknown tag \(tag)")
    }
}

struct VectorError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Whether the Python reference implementation can run here: python3 with its `msgpack`
/// package. `swift test` needs nothing but Swift, so the cross-checks that need it are skipped
/// (with this reason in the test output) where it is missing; `.ci/run` installs msgpack and
/// sets `COLONY_REQUIRE_PYTHON_REFERENCE=1`, which runs them regardless, so CI fails if any
/// of them cannot run.
enum PythonReference {
    static let required = ProcessInfo.processInfo.environment["COLONY_REQUIRE_PYTHON_REFERENCE"] == "1"

    static let isAvailable: Bool = {
        guard let result = try? runProcess("/usr/bin/env", ["python3", "-c", "import msgpack"]) else { return false }
        return result.status == 0
    }()

    static let missing = "python3 with its msgpack package is missing (pip install msgpack); CI runs this cross-check"

    /// The trait for a test that checks Swift against the Python reference.
    static var crossCheck: ConditionTrait { .enabled(if: required || isAvailable, Comment(rawValue: missing)) }
}

/// Runs the Python reference implementation with `arguments`; returns its status and output.
func runPythonReference(_ arguments: [String], input: Data? = nil) throws -> (status: Int32, output: String) {
    try runProcess(
        "/usr/bin/env", ["python3", repositoryRoot.appendingPathComponent("Protocol/reference/colony_wire.py").path] + arguments,
        input: input)
}

/// Runs a program, writes `input` to its standard input, and returns its status and its
/// standard output followed by its standard error. A program that exits without reading all
/// of its input is an ordinary outcome (its status says what happened), never a SIGPIPE
/// that kills the test process.
func runProcess(_ executable: String, _ arguments: [String], input: Data? = nil) throws -> (status: Int32, output: String) {
    ignoreBrokenPipes
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe(), errors = Pipe(), stdin = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = stdin
    try process.run()
    // Read both outputs while writing, so a program that answers before it has read
    // everything cannot block the writer on a full pipe.
    let collected = ConcurrentOutput(output: output, errors: errors)
    var writeError: (any Error)?
    if let input {
        do { try stdin.fileHandleForWriting.write(contentsOf: input) } catch { writeError = error }
    }
    try? stdin.fileHandleForWriting.close()
    let (data, errorData) = collected.wait()
    process.waitUntilExit()
    var text = String(decoding: data, as: UTF8.self) + String(decoding: errorData, as: UTF8.self)
    if let writeError, process.terminationStatus == 0 {
        text += "\n(the program exited without reading all its input: \(writeError))"
    }
    return (process.terminationStatus, text)
}

/// SIGPIPE ignored once for the test process: a write to a pipe whose reader has gone fails
/// with EPIPE instead.
private let ignoreBrokenPipes: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

/// Standard output and error read on two threads until both close.
private final class ConcurrentOutput: @unchecked Sendable {
    private let group = DispatchGroup()
    private var output = Data()
    private var errors = Data()

    init(output: Pipe, errors: Pipe) {
        group.enter()
        group.enter()
        DispatchQueue.global().async {
            self.output = output.fileHandleForReading.readDataToEndOfFile()
            self.group.leave()
        }
        DispatchQueue.global().async {
            self.errors = errors.fileHandleForReading.readDataToEndOfFile()
            self.group.leave()
        }
    }

    func wait() -> (Data, Data) {
        group.wait()
        return (output, errors)
    }
}

/// A small deterministic random generator for reproducible tests.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random values of the whole value model, for round trips and interop checks.
func randomValue(_ rng: inout SplitMix, depth: Int = 0, allowNonStringKeys: Bool = true) -> WireValue {
    let choice = depth > 3 ? Int.random(in: 0..<8, using: &rng) : Int.random(in: 0..<11, using: &rng)
    switch choice {
    case 0: return .null
    case 1: return .bool(Bool.random(using: &rng))
    case 2:
        let magnitude = [0, 7, 8, 16, 32, 63].randomElement(using: &rng)!
        let value = Int64.random(in: magnitude == 63 ? Int64.min ... Int64.max : -(1 << magnitude) ... (1 << magnitude), using: &rng)
        return .int(value)
    case 3: return .integer(UInt64.random(in: UInt64(Int64.max)...UInt64.max, using: &rng))
    case 4: return .double(Double.random(in: -1e12...1e12, using: &rng))
    case 5:
        let length = [0, 5, 31, 32, 300].randomElement(using: &rng)!
        let scalars = (0..<length).map { _ in ["a", "é", "✓", "🐝", "z"].randomElement(using: &rng)! }
        return .string(scalars.joined())
    case 6: return .bytes((0..<Int.random(in: 0..<300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
    case 7: return .objectRef(ObjectRef(type: .queue, id: UInt64.random(in: 0..<(1 << 56), using: &rng)))
    case 8, 9:
        let count = [0, 3, 15, 16, 40].randomElement(using: &rng)!
        return .array((0..<count).map { _ in randomValue(&rng, depth: depth + 1, allowNonStringKeys: allowNonStringKeys) })
    default:
        let count = [0, 2, 15, 17].randomElement(using: &rng)!
        var seen = Set<WireValue>()
        var pairs: [WirePair] = []
        for index in 0..<count {
            let key: WireValue = allowNonStringKeys && index % 3 == 0 ? .int(Int64(index)) : .string("k\(index)")
            if seen.insert(key).inserted {
                pairs.append(WirePair(key, randomValue(&rng, depth: depth + 1, allowNonStringKeys: allowNonStringKeys)))
            }
        }
        return .map(pairs)
    }
}
